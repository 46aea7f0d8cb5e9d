"""One reading of Supabase Storage's answers (soulworker.storage.answers), shared by the download
and ``soulworker doctor``: what each real answer means, that hostile bodies are read safely, and
that the two callers never disagree about what Storage said."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from soulworker.storage.answers import (
    ERROR_BODY_MAX_BYTES,
    AnswerReason,
    StorageAnswer,
    describe_transport_failure,
    read_limited,
)
from soulworker.storage.buckets import classify_bucket_response, is_public_bucket
from soulworker.storage.download import _classify
from soulworker.storage.errors import (
    ExportNotFound,
    ExportTooLarge,
    StorageAuthFailed,
    StorageBucketNotFound,
    StorageError,
)


def answer(status: int, body: Any) -> StorageAnswer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return StorageAnswer.parse(status, raw)


# What Storage and its gateway really send (docs/platform.md), and what each means.
REAL_ANSWERS = [
    (400, {"statusCode": "404", "code": "NoSuchKey", "error": "not_found"}, "not_found"),
    (400, {"error": "Not found", "statusCode": "404", "code": "NoSuchKey"}, "not_found"),
    (400, {"statusCode": "404", "code": "NoSuchBucket", "error": "Bucket not found"}, "bucket"),
    (400, {"statusCode": "404", "error": "Bucket not found", "message": "x"}, "bucket"),
    (400, {"statusCode": "400", "code": "InvalidJWT", "error": "InvalidJWT"}, "key"),
    (400, {"statusCode": "403", "error": "Unauthorized", "message": "x"}, "key"),
    (401, {"message": "Invalid API key"}, "key"),
    (429, {"statusCode": "429", "code": "SlowDown", "error": "SlowDown"}, "rate"),
    (503, {"statusCode": "503", "code": "InternalError", "error": "internal"}, "unavailable"),
    (400, {"statusCode": "400", "code": "DatabaseTimeout"}, "unavailable"),
    (400, {"statusCode": "416", "code": "InvalidRange", "error": "x"}, "range"),
    (416, b"", "range"),
    (400, {"statusCode": "413", "code": "EntityTooLarge", "error": "x"}, "large"),
    (404, {"statusCode": "404", "error": "Not Found", "message": "Route GET:/x"}, "route"),
    (404, b"<html>Not Found</html>", "route"),
    (302, {"statusCode": "404", "code": "NoSuchKey"}, "redirect"),
    (400, {"statusCode": "400", "code": "InvalidRequest", "error": "x"}, "refused"),
    (409, b"", "refused"),
]
SHORT_NAMES = {
    "not_found": AnswerReason.NOT_FOUND,
    "bucket": AnswerReason.BUCKET_NOT_FOUND,
    "key": AnswerReason.KEY_REFUSED,
    "rate": AnswerReason.RATE_LIMITED,
    "unavailable": AnswerReason.UNAVAILABLE,
    "range": AnswerReason.RANGE_NOT_SATISFIABLE,
    "large": AnswerReason.TOO_LARGE,
    "route": AnswerReason.NO_SUCH_ROUTE,
    "redirect": AnswerReason.REDIRECT,
    "refused": AnswerReason.REFUSED,
}


@pytest.mark.parametrize(("status", "body", "meaning"), REAL_ANSWERS)
def test_each_real_answer_means_what_storage_meant(status: int, body: Any, meaning: str) -> None:
    assert answer(status, body).reason is SHORT_NAMES[meaning]


def test_the_description_names_the_status_in_the_body_and_the_codes() -> None:
    described = answer(400, {"statusCode": "404", "code": "NoSuchBucket", "error": "x"}).describe()
    assert described == "HTTP 400 (status 404 in the body), NoSuchBucket/x"
    assert answer(503, b"").describe() == "HTTP 503"
    assert answer(404, {"statusCode": "404", "error": "Not Found"}).describe() == (
        "HTTP 404, Not Found"
    )


@pytest.mark.parametrize(
    "raw_status",
    [
        "²",  # str.isdigit() says yes, int() says no: it crashed the reader before
        "9" * 5000,  # over int()'s digit limit: it crashed the reader before
        "４０４",  # full-width digits
        "40 4",
        "-404",
        "404.0",
        True,
        None,
        [404],
        {"a": 404},
        4040,
    ],
)
def test_a_hostile_status_in_the_body_is_ignored_never_fatal(raw_status: object) -> None:
    parsed = answer(400, {"statusCode": raw_status, "code": "NoSuchKey"})
    assert parsed.storage_status is None
    assert parsed.reason is AnswerReason.NOT_FOUND  # the code still says what it is


def test_a_status_with_spaces_around_it_is_read() -> None:
    assert answer(400, {"statusCode": " 404 "}).storage_status == 404


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'"NoSuchBucket"',
        b"null",
        b"{" * 10_000,
        b'{"code": "NoSuchBucket"',  # cut short
    ],
)
def test_a_body_that_is_not_a_json_object_leaves_only_the_status_line(body: bytes) -> None:
    parsed = StorageAnswer.parse(400, body)
    assert parsed == StorageAnswer(400)
    assert parsed.reason is AnswerReason.REFUSED


def test_codes_that_are_long_or_not_plain_are_never_kept() -> None:
    parsed = answer(
        400,
        {
            "statusCode": "400",
            "code": "<script>alert(1)</script>",
            "error": "x" * 65,
            "message": "sb_secret_abcdefghijklmnop invalid api key",
        },
    )
    assert parsed.code is None
    assert parsed.error is None
    assert parsed.says_invalid_api_key  # recognised, but the message itself is not kept
    assert "sb_secret" not in repr(parsed)
    assert parsed.describe() == "HTTP 400"


@given(status=st.integers(100, 599), body=st.binary(max_size=512))
def test_any_bytes_are_read_without_an_error(status: int, body: bytes) -> None:
    parsed = StorageAnswer.parse(status, body)
    assert isinstance(parsed.reason, AnswerReason)
    assert re.fullmatch(r"[A-Za-z0-9_. ()/,-]*", parsed.describe())


JSON_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.from_regex(r"\s*[0-9²٤]{1,4}\s*", fullmatch=True)
    | st.text(max_size=80)
    | st.lists(st.integers(0, 999), max_size=3)
)


@given(
    status=st.integers(100, 599),
    fields=st.dictionaries(
        st.sampled_from(["statusCode", "code", "error", "message", "public"]), JSON_VALUES
    ),
)
def test_any_json_object_is_read_without_an_error(status: int, fields: dict[str, Any]) -> None:
    parsed = answer(status, fields)
    assert isinstance(parsed.reason, AnswerReason)
    assert parsed.storage_status is None or 100 <= parsed.storage_status <= 999
    assert re.fullmatch(r"[A-Za-z0-9_. ()/,-]*", parsed.describe())


# --- the download and doctor read the same answer the same way ---------------------------

STATUSES = [300, 302, 400, 401, 403, 404, 408, 409, 413, 416, 423, 429, 500, 503]
BODIES: list[Any] = [
    b"",
    b"<html>Not Found</html>",
    {"message": "Invalid API key"},
    {"statusCode": "404", "code": "NoSuchBucket", "error": "Bucket not found"},
    {"statusCode": "404", "code": "NoSuchKey", "error": "not_found"},
    {"statusCode": "404", "error": "Not Found"},
    {"statusCode": "400", "code": "InvalidJWT"},
    {"statusCode": "403", "error": "Unauthorized"},
    {"statusCode": "429", "code": "SlowDown"},
    {"statusCode": "503", "code": "InternalError"},
    {"statusCode": "413", "code": "EntityTooLarge"},
    {"statusCode": "416", "code": "InvalidRange"},
    {"statusCode": "400", "code": "InvalidRequest"},
]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("body", BODIES, ids=lambda b: str(b)[:40])
def test_the_download_and_the_bucket_check_agree(status: int, body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reason = StorageAnswer.parse(status, raw).reason
    outcome = _classify(status, raw, httpx2.Headers())
    verdict = classify_bucket_response(status, raw)

    if reason is AnswerReason.KEY_REFUSED:
        assert isinstance(outcome, StorageAuthFailed)
        assert verdict == "key_refused"
    elif reason is AnswerReason.BUCKET_NOT_FOUND:
        assert isinstance(outcome, StorageBucketNotFound)
        assert verdict == "missing"
    elif reason is AnswerReason.NOT_FOUND:
        assert isinstance(outcome, ExportNotFound)
        assert verdict == "missing"
    elif reason is AnswerReason.NO_SUCH_ROUTE:
        # The download has only the export to blame; doctor says SUPABASE_URL is wrong.
        assert isinstance(outcome, ExportNotFound)
        assert verdict == "other"
    elif reason.transient:
        assert not isinstance(outcome, StorageError)  # retried, never a job failure
        assert verdict == "other"
    else:
        assert verdict == "other"
        if reason is AnswerReason.TOO_LARGE:
            assert isinstance(outcome, ExportTooLarge)
        elif reason is not AnswerReason.RANGE_NOT_SATISFIABLE:
            assert type(outcome) is StorageError


def test_only_an_explicit_true_makes_a_bucket_public() -> None:
    assert is_public_bucket(b'{"id": "imports", "public": true}')
    for body in (b'{"public": "true"}', b'{"public": 1}', b"[true]", b"", b"\xff"):
        assert not is_public_bucket(body)


# --- reading a body, describing a transport failure -------------------------------------------


async def test_an_error_body_is_read_up_to_the_limit_and_no_further() -> None:
    sent = b"x" * (ERROR_BODY_MAX_BYTES * 3)
    response = httpx2.Response(400, stream=httpx2.ByteStream(sent))
    body = await read_limited(response)
    assert body == sent[:ERROR_BODY_MAX_BYTES]


@pytest.mark.parametrize(
    ("reason", "described"),
    [
        ("http_503", "HTTP 503"),
        ("ConnectError", "could not connect"),
        ("ReadError", "the connection dropped"),
        ("premature_end", "the connection ended early"),
        ("SomethingNew", "SomethingNew"),
    ],
)
def test_transport_failures_are_described_in_a_few_words(reason: str, described: str) -> None:
    assert describe_transport_failure(reason) == described
