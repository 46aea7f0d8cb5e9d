"""What an error answer of Supabase Storage means: one reading, for the download and for doctor.

Storage's error handler answers every error below 500 with HTTP 400 and puts the real status, as
a *string*, in a JSON body beside Storage's own error code (docs/platform.md): a missing object
is ``400 {"statusCode": "404", "code": "NoSuchKey", "error": "not_found", …}``, a missing bucket
has ``code: NoSuchBucket``, a wrong JWT ``InvalidJWT``, an overloaded database ``429 SlowDown``.
The API gateway in front of it answers a wrong key with a plain ``401 {"message": "Invalid API
key"}``. So an answer is read by ``statusCode`` and ``code`` in the body, never by the status line
alone: :meth:`StorageAnswer.parse` reads it once and :attr:`StorageAnswer.reason` says what it
means. ``storage.download`` turns a reason into a job error; ``soulworker doctor`` into a finding
for the operator (``storage.buckets``). When Supabase changes how it phrases an error, this is
the one place to change.

Values from the body are kept only when short and plain: they end up in messages and logs.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass

import httpx2

ERROR_BODY_MAX_BYTES = 64 * 1024
"""An error body is a small JSON object; never read more than this of one."""

TRANSIENT_STORAGE_CODES = frozenset(
    {"SlowDown", "DatabaseTimeout", "DatabaseConnectionLimit", "LockTimeout", "ResourceLocked"}
)
"""Storage's codes for "busy now": its database or a lock, not the request."""

STORAGE_AUTH_CODES = frozenset(
    {
        "InvalidJWT",
        "Unauthorized",
        "AccessDenied",
        "InvalidSignature",
        "ExpiredToken",
        "SignatureDoesNotMatch",
    }
)
"""Storage's codes for a key it does not accept (older versions say ``Unauthorized``)."""

BUCKET_NOT_FOUND_CODES = frozenset({"NoSuchBucket", "Bucket not found"})
"""``code`` or ``error`` of a missing bucket."""

NOT_FOUND_STORAGE_CODES = frozenset({"NoSuchKey", "not_found", "Not found"})
"""``code`` or ``error`` of a missing object (``Not found`` is S3's 404 relayed mid-render)."""

TRANSIENT_STATUSES = frozenset({408, 423, 429})
"""Statuses below 500 that mean "busy now, ask again later"."""

GATEWAY_INVALID_KEY = "invalid api key"
"""What the API gateway's 401 says, in any case, when it does not know the key."""

_SAFE_CODE_RE = re.compile(r"[A-Za-z0-9_. -]{1,64}")
_STATUS_RE = re.compile(r"[0-9]{3}")


class AnswerReason(enum.StrEnum):
    """What an error answer means, whoever asked."""

    RATE_LIMITED = "rate_limited"
    """429 or ``SlowDown``: wait (``Retry-After``) and ask again."""
    UNAVAILABLE = "unavailable"
    """A 5xx, 408 or 423, or Storage's database busy: ask again later."""
    BUCKET_NOT_FOUND = "bucket_not_found"
    """The bucket does not exist (``NoSuchBucket``)."""
    NOT_FOUND = "not_found"
    """Storage says what was asked for does not exist (``NoSuchKey``, status 404 in the body)."""
    NO_SUCH_ROUTE = "no_such_route"
    """A 404 on the status line that is not Storage's own (its errors come as 400): nothing at
    this URL path answers like Storage, so the base URL is probably wrong."""
    KEY_REFUSED = "key_refused"
    """The service key was refused (401/403, ``InvalidJWT``, the gateway's "Invalid API key")."""
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    """416 or ``InvalidRange``: the range starts at or past the end of the object."""
    TOO_LARGE = "too_large"
    """413 or ``EntityTooLarge``."""
    REDIRECT = "redirect"
    """A 3xx: never followed, because the key would travel with it."""
    REFUSED = "refused"
    """Any other refusal: asking the same again will not help."""

    @property
    def transient(self) -> bool:
        """Asking again later may get another answer."""
        return self in (AnswerReason.RATE_LIMITED, AnswerReason.UNAVAILABLE)


@dataclass(frozen=True)
class StorageAnswer:
    """An answer of Storage (or of the gateway in front of it), as far as it can be told apart.

    ``http_status`` is the status line's code; ``storage_status`` the ``statusCode`` of the JSON
    body (``None`` when absent or not a number); ``code`` and ``error`` the body's fields of
    those names when short and plain; ``says_invalid_api_key`` whether the body's ``message`` is
    the gateway's "Invalid API key" (the message itself is never kept).
    """

    http_status: int
    storage_status: int | None = None
    code: str | None = None
    error: str | None = None
    says_invalid_api_key: bool = False

    @classmethod
    def parse(cls, http_status: int, body: bytes) -> StorageAnswer:
        """Read ``body`` (JSON or not, possibly hostile) of an answer with ``http_status``."""
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return cls(http_status)
        if not isinstance(parsed, dict):
            return cls(http_status)
        raw_status = parsed.get("statusCode")
        storage_status = None
        if isinstance(raw_status, str | int) and not isinstance(raw_status, bool):
            # Three ASCII digits only: "²".isdigit() is true and int() refuses it, and int()
            # refuses a string of thousands of digits; either would crash the reader.
            digits = str(raw_status).strip()
            storage_status = int(digits) if _STATUS_RE.fullmatch(digits) else None
        message = parsed.get("message")
        return cls(
            http_status,
            storage_status=storage_status,
            code=_safe_code(parsed.get("code")),
            error=_safe_code(parsed.get("error")),
            says_invalid_api_key=isinstance(message, str)
            and GATEWAY_INVALID_KEY in message.lower(),
        )

    @property
    def effective_status(self) -> int:
        """The status Storage meant: the body's when it gave one, else the status line's."""
        return self.storage_status if self.storage_status is not None else self.http_status

    @property
    def codes(self) -> frozenset[str]:
        """``code`` and ``error`` together: Storage versions put the same fact in either."""
        return frozenset(c for c in (self.code, self.error) if c is not None)

    @property
    def reason(self) -> AnswerReason:
        """What this answer means. The order matters: a redirect is never Storage's error
        handler (so its body is not read), and "busy" wins over anything else the body says,
        because a busy Storage may answer with any code."""
        status, effective, codes = self.http_status, self.effective_status, self.codes
        if 300 <= status < 400:
            return AnswerReason.REDIRECT
        if status == 429 or effective == 429 or "SlowDown" in codes:
            return AnswerReason.RATE_LIMITED
        if (
            status >= 500
            or effective >= 500
            or effective in TRANSIENT_STATUSES
            or codes & TRANSIENT_STORAGE_CODES
        ):
            return AnswerReason.UNAVAILABLE
        if codes & BUCKET_NOT_FOUND_CODES:
            return AnswerReason.BUCKET_NOT_FOUND
        if effective == 404 or codes & NOT_FOUND_STORAGE_CODES:
            if status == 404 and not codes & NOT_FOUND_STORAGE_CODES:
                return AnswerReason.NO_SUCH_ROUTE
            return AnswerReason.NOT_FOUND
        if effective in (401, 403) or codes & STORAGE_AUTH_CODES:
            return AnswerReason.KEY_REFUSED
        if effective == 416 or "InvalidRange" in codes:
            return AnswerReason.RANGE_NOT_SATISFIABLE
        if effective == 413 or "EntityTooLarge" in codes:
            return AnswerReason.TOO_LARGE
        if self.says_invalid_api_key:
            return AnswerReason.KEY_REFUSED
        return AnswerReason.REFUSED

    def describe(self) -> str:
        """The answer in a few safe words for an operator: ``HTTP 400 (status 404 in the
        body), NoSuchBucket``."""
        shown = f"HTTP {self.http_status}"
        if self.storage_status is not None and self.storage_status != self.http_status:
            shown += f" (status {self.storage_status} in the body)"
        if self.codes:
            shown += f", {'/'.join(sorted(self.codes))}"
        return shown


async def read_limited(response: httpx2.Response, limit: int = ERROR_BODY_MAX_BYTES) -> bytes:
    """At most ``limit`` bytes of ``response``'s body; the rest is never read."""
    data = bytearray()
    async for chunk in response.aiter_raw():
        data += chunk[: limit - len(data)]
        if len(data) >= limit:
            break
    return bytes(data)


def describe_transport_failure(reason: str) -> str:
    """A failed request in a few words: ``reason`` is ``http_<status>`` or the name of the
    transport error (``ReadTimeout``, ``ConnectError``…)."""
    if reason.startswith("http_"):
        return f"HTTP {reason[5:]}"
    return {
        "premature_end": "the connection ended early",
        "ReadTimeout": "a read timed out",
        "ConnectTimeout": "connecting timed out",
        "ConnectError": "could not connect",
        "RemoteProtocolError": "the connection dropped",
        "ReadError": "the connection dropped",
    }.get(reason, reason)


def _safe_code(value: object) -> str | None:
    if isinstance(value, str) and _SAFE_CODE_RE.fullmatch(value):
        return value
    return None
