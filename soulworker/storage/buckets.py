"""A bucket as Storage describes it: the authenticated ``GET /storage/v1/bucket/{id}``.

A download never needs it. ``soulworker doctor`` does: one such request per allowed bucket
proves, without touching anyone's export, that the service key works for this project and that
the bucket exists and is private. What the answer means is read by ``storage.answers``, like a
download's answers, so the two never disagree about what Storage said.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

import httpx2

from soulworker.storage.answers import AnswerReason, StorageAnswer, read_limited
from soulworker.storage.download import StorageConfig

BucketVerdict = Literal["found", "missing", "key_refused", "other"]


@dataclass(frozen=True)
class BucketProbe:
    """What Storage said about one bucket. ``public`` is only ever true for a found bucket;
    ``answer`` is Storage's answer, for describing an ``other`` verdict."""

    bucket: str
    verdict: BucketVerdict
    public: bool
    answer: StorageAnswer


def bucket_url(config: StorageConfig, bucket: str) -> str:
    """The bucket's details endpoint (the name is quoted whole: it is one path segment)."""
    return f"{config.base_url}/storage/v1/bucket/{quote(bucket, safe='')}"


async def probe_bucket(
    client: httpx2.AsyncClient, config: StorageConfig, bucket: str
) -> BucketProbe:
    """Ask Storage about ``bucket`` with the service key.

    ``client`` must not follow redirects (the key's headers would go wherever they point).
    Transport errors (``httpx2.HTTPError``, timeouts) are the caller's to describe.
    """
    # auth_headers() carries soulworker's User-Agent: a browser-like one gets sb_secret_ keys
    # refused.
    url, headers = bucket_url(config, bucket), config.auth_headers()
    async with client.stream("GET", url, headers=headers) as response:
        status, body = response.status_code, await read_limited(response)
    verdict = classify_bucket_response(status, body)
    return BucketProbe(
        bucket=bucket,
        verdict=verdict,
        public=verdict == "found" and is_public_bucket(body),
        answer=StorageAnswer.parse(status, body),
    )


def classify_bucket_response(status: int, body: bytes) -> BucketVerdict:
    """``found``, ``missing``, ``key_refused`` or ``other`` for a bucket endpoint answer.

    Storage answers a missing bucket with HTTP 400 and ``{"statusCode": "404", "code":
    "NoSuchBucket", "error": "Bucket not found"}``; on this endpoint a plain "not found" from
    Storage means the bucket too. A 404 on the status line is not Storage's own answer
    (``AnswerReason.NO_SUCH_ROUTE``): there is no Storage API at that URL, which is ``other``.
    """
    if status == 200:
        return "found"
    reason = StorageAnswer.parse(status, body).reason
    if reason in (AnswerReason.BUCKET_NOT_FOUND, AnswerReason.NOT_FOUND):
        return "missing"
    if reason is AnswerReason.KEY_REFUSED:
        return "key_refused"
    return "other"


def is_public_bucket(body: bytes) -> bool:
    """Whether a found bucket's details say ``"public": true`` (anything else is private)."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(parsed, dict) and parsed.get("public") is True
