"""The storage check: one authenticated bucket request per allowed bucket (``storage.buckets``)
proves the key works for this project and that each bucket exists and is private. What Storage's
answer means is the Storage client's own reading (``storage.answers``), the one the download
uses."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx2

from soulworker.doctor.core import (
    HTTP_CONNECT_TIMEOUT_SECONDS,
    HTTP_READ_TIMEOUT_SECONDS,
    Check,
    DoctorContext,
    Outcome,
    fail,
    ok,
    skip,
    warn,
)
from soulworker.storage.answers import AnswerReason, StorageAnswer, describe_transport_failure
from soulworker.storage.buckets import probe_bucket
from soulworker.storage.download import KEY_KIND_NAMES, StorageConfig, StorageConfigError

REACH_HINT = "check SUPABASE_URL and that this machine can reach it (outbound HTTPS)"


async def check_storage(context: DoctorContext) -> Outcome:
    """An authenticated ``GET /storage/v1/bucket/{id}`` per allowed bucket: proves the key
    works for this project and that each bucket exists (and is private)."""
    settings = context.settings
    if settings is None:
        return skip("skipped: the settings could not be read (see configuration)")
    if not settings.supabase_url or not settings.supabase_service_key:
        return skip("skipped: SUPABASE_URL or SUPABASE_SERVICE_KEY is not set (see configuration)")
    try:
        config = StorageConfig.from_settings(settings)
    except StorageConfigError:
        return skip("skipped: SUPABASE_URL or SUPABASE_SERVICE_KEY is invalid (see configuration)")
    host = urlsplit(config.base_url).netloc
    key_name = KEY_KIND_NAMES[config.key_kind]
    timeout = httpx2.Timeout(HTTP_READ_TIMEOUT_SECONDS, connect=HTTP_CONNECT_TIMEOUT_SECONDS)
    found: list[str] = []
    public: list[str] = []
    missing: list[str] = []
    # Redirects are never followed: the client would carry the key's headers to wherever
    # they point.
    async with httpx2.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        for bucket in settings.storage_buckets:
            try:
                probe = await probe_bucket(client, config, bucket)
            except httpx2.TimeoutException:
                return fail(
                    f"Supabase Storage at {host} did not answer in time (connect "
                    f"{HTTP_CONNECT_TIMEOUT_SECONDS:g} s, read {HTTP_READ_TIMEOUT_SECONDS:g} s)",
                    REACH_HINT,
                    host=host,
                )
            except httpx2.HTTPError as exc:
                return fail(
                    f"cannot reach Supabase Storage at {host} "
                    f"({describe_transport_failure(type(exc).__name__)})",
                    "check SUPABASE_URL (https://<project ref>.supabase.co) and outbound network "
                    "access",
                    host=host,
                )
            if probe.verdict == "found":
                found.append(bucket)
                if probe.public:
                    public.append(bucket)
            elif probe.verdict == "missing":
                missing.append(bucket)
            elif probe.verdict == "key_refused":
                return fail(
                    f"Supabase Storage at {host} refused SUPABASE_SERVICE_KEY ({key_name})",
                    "use the service_role key (legacy) or a secret key (sb_secret_…) of the same "
                    "project as SUPABASE_URL",
                    host=host,
                    http_status=probe.answer.http_status,
                )
            else:
                return fail(
                    f"unexpected answer from {host}: {probe.answer.describe()}",
                    unexpected_answer_hint(probe.answer),
                    host=host,
                    http_status=probe.answer.http_status,
                )
    details = {
        "host": host,
        "key_kind": config.key_kind,
        "found": found,
        "missing": missing,
        "public": public,
    }
    if missing:
        verb = "does" if len(missing) == 1 else "do"
        return fail(
            f"key accepted, but {_buckets(missing)} {verb} not exist",
            "create it as a private bucket in Supabase Storage, or fix SOULWORKER_STORAGE_BUCKETS",
            **details,
        )
    if public:
        verb = "is" if len(public) == 1 else "are"
        return warn(
            f"key accepted; {_buckets(public)} {verb} public: anyone with a link can download "
            "exports",
            "make the bucket private in Supabase Storage (the worker reads it with its key)",
            **details,
        )
    verb = "exists and is" if len(found) == 1 else "exist and are"
    return ok(f"key accepted ({key_name}); {_buckets(found)} {verb} private", **details)


def unexpected_answer_hint(answer: StorageAnswer) -> str:
    """What to do about an answer that is neither a bucket, a missing bucket nor a refused key."""
    reason = answer.reason
    if reason is AnswerReason.REDIRECT:
        return "SUPABASE_URL redirects: use the project's final https URL (no path)"
    if reason.transient:
        return "Storage is unavailable right now; try again in a minute (status.supabase.com)"
    if reason is AnswerReason.NO_SUCH_ROUTE:
        return (
            "there is no Storage API at SUPABASE_URL: it must be the project URL, "
            "https://<project ref>.supabase.co, without a path"
        )
    return "check SUPABASE_URL and SUPABASE_SERVICE_KEY"


def _buckets(names: Sequence[str]) -> str:
    """``bucket 'a'`` or ``buckets 'a', 'b'``."""
    noun = "bucket" if len(names) == 1 else "buckets"
    return f"{noun} {', '.join(repr(name) for name in names)}"


STORAGE = Check("storage", check_storage, timeout_hint=REACH_HINT)
