"""AWS Signature Version 4 for one Bedrock request, and the credentials it is made with.

Why our own signer and not boto3 or botocore (docs/embeddings.md, "Why httpx2 and a signer"):
Bedrock's InvokeModel is one JSON POST, which httpx2 already sends for the rest of soulworker;
boto3 would add ~37 MB to the image and ~0.2 s to start-up, and its client is synchronous, so
each request would hold a thread. Signing is the only hard part, and it is this page of code,
checked against botocore's own signature in tests/unit/test_embeddings_sigv4.py.

Credentials come the standard AWS way *through the environment* (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN``), which is what Render and containers
give a process. Shared config files, SSO and instance metadata are not read.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
BEDROCK_SIGNING_NAME = "bedrock"
"""Bedrock Runtime signs as service ``bedrock`` (its endpoint is ``bedrock-runtime``)."""


@dataclass(frozen=True)
class AwsCredentials:
    """An access key pair, with a session token for temporary credentials. Never printed."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AwsCredentials | None:
        """The standard variables, or ``None`` when the key pair is not set."""
        key_id = environ.get("AWS_ACCESS_KEY_ID", "").strip()
        secret = environ.get("AWS_SECRET_ACCESS_KEY", "").strip()
        if not key_id or not secret:
            return None
        token = environ.get("AWS_SESSION_TOKEN", "").strip() or None
        return cls(key_id, secret, token)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def canonical_path(path: str) -> str:
    """The path as SigV4 wants it for every service but S3: each segment URI-encoded again, so
    an already percent-encoded model id (``%3A``) is signed as ``%253A``."""
    return quote(path or "/", safe="/~")


def sign_request(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: AwsCredentials,
    region: str,
    service: str = BEDROCK_SIGNING_NAME,
    now: datetime.datetime | None = None,
) -> dict[str, str]:
    """The headers to add to a request so AWS accepts it: ``Authorization``, ``X-Amz-Date``
    and, for temporary credentials, ``X-Amz-Security-Token`` (the payload hash is signed but,
    outside S3, not sent).

    ``url`` is the request's URL as sent (its path already percent-encoded); ``headers`` are
    the other headers sent, all of which are signed, with ``host`` taken from ``url``.
    """
    moment = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    parts = urlsplit(url)
    payload_hash = hashlib.sha256(body).hexdigest()
    added = {"x-amz-date": amz_date}
    if credentials.session_token:
        added["x-amz-security-token"] = credentials.session_token
    signed: dict[str, str] = {
        name.lower(): " ".join(value.split()) for name, value in headers.items()
    }
    signed.update(added)
    signed["host"] = parts.netloc
    names = sorted(signed)
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in names)
    signed_headers = ";".join(names)
    query = "&".join(
        sorted(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, _, v in (pair.partition("=") for pair in parts.query.split("&") if pair)
        )
    )
    canonical_request = "\n".join(
        [
            method.upper(),
            canonical_path(parts.path),
            query,
            canonical_headers,
            signed_headers,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + credentials.secret_access_key).encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return {"Authorization": authorization, **added}
