"""Parse and validate a job's ``storage_path`` before anything is fetched (docs/contract.md).

``storage_path`` comes from a row the web app inserted, so it is untrusted input. It must be
``bucket/object`` where the bucket matches ``[a-z0-9_-]+`` and is one the worker may read,
and the object is one or more ``/``-separated segments of ``[A-Za-z0-9._-]``, none empty,
none ``.`` or ``..``. By default the object must also live in the job's own ``<user_id>/``
folder, the same rule the bucket's row level security applies to uploads.

Everything else (a leading slash, ``//``, ``%``, a backslash, whitespace, control or
non-ASCII characters, a URL) is refused with ``InvalidStoragePath`` before any request is
made. The allowed character set is so small that percent-encoding is a no-op on it; the URL
is still built by quoting each validated segment, so a future widening of the character set
cannot turn into a path escape.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import quote

from soulworker.storage.errors import InvalidStoragePath

DEFAULT_ALLOWED_BUCKETS: frozenset[str] = frozenset({"imports"})
"""The bucket the web app uploads exports to (``SOULWORKER_STORAGE_BUCKETS``)."""

MAX_BUCKET_CHARS = 63
"""Bucket ids are short names; anything longer is garbage, and S3 caps bucket names at 63."""

MAX_OBJECT_CHARS = 1024
"""S3, which backs Supabase Storage, caps object keys at 1024 bytes (ASCII here, so chars)."""

OBJECT_URL_PREFIX = "/storage/v1/object/"
"""Where Storage serves authenticated downloads: ``GET /storage/v1/object/{bucket}/{name}``."""

_BUCKET_RE = re.compile(r"[a-z0-9_-]+")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_ALLOWED_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")
_DOT_SEGMENTS = frozenset({".", ".."})


@dataclass(frozen=True, slots=True)
class StoragePath:
    """A validated ``bucket/object`` pair.

    Constructing one directly validates the syntax again (bucket and segment character sets,
    no dot segments, lengths), so an instance can never hold parts that would escape the
    bucket in a URL. Policy checks (allowed buckets, the user's folder) need the job's
    context and live in ``parse_storage_path``.
    """

    bucket: str
    object_name: str

    def __post_init__(self) -> None:
        problem = _syntax_problem(self.bucket, self.object_name)
        if problem is not None:
            raise InvalidStoragePath(problem)

    @property
    def segments(self) -> tuple[str, ...]:
        """The object name's ``/``-separated segments."""
        return tuple(self.object_name.split("/"))

    def url_path(self) -> str:
        """The request path, ``/storage/v1/object/{bucket}/{segment}/…``, each part quoted.

        Built only from the validated parts, never from the raw ``storage_path`` text.
        """
        quoted = "/".join(quote(segment, safe="") for segment in self.segments)
        return f"{OBJECT_URL_PREFIX}{quote(self.bucket, safe='')}/{quoted}"

    def __str__(self) -> str:
        return f"{self.bucket}/{self.object_name}"


def parse_storage_path(
    raw: object,
    *,
    user_id: uuid.UUID | str,
    allowed_buckets: Collection[str] = DEFAULT_ALLOWED_BUCKETS,
    require_user_folder: bool = True,
) -> StoragePath:
    """Validate ``raw`` (a job's ``storage_path``) and split it into bucket and object name.

    ``user_id`` is the job's user; with ``require_user_folder`` the object's first segment
    must equal its canonical lowercase uuid text (``str(uuid.UUID(...))``), the form
    Supabase's ``auth.uid()::text`` produces. A ``user_id`` that is not a uuid is a
    programming error and raises ``ValueError``.

    Raises ``InvalidStoragePath`` (permanent, code ``invalid_storage_path``) for anything
    else; its message names the problem, never the offending text.
    """
    canonical_user = str(uuid.UUID(str(user_id)))
    if not isinstance(raw, str):
        raise InvalidStoragePath("it is missing")
    if raw == "" or raw.isspace():
        raise InvalidStoragePath("it is empty")
    limit = MAX_BUCKET_CHARS + 1 + MAX_OBJECT_CHARS
    if len(raw) > limit:
        raise InvalidStoragePath(f"it is too long ({len(raw)} characters, at most {limit})")
    problem = _character_problem(raw)
    if problem is not None:
        raise InvalidStoragePath(problem)
    bucket, slash, object_name = raw.partition("/")
    if not slash or not object_name:
        raise InvalidStoragePath("it must be 'bucket/object'")
    path = StoragePath(bucket, object_name)
    if bucket not in allowed_buckets:
        allowed = ", ".join(sorted(allowed_buckets)) or "none"
        # The bucket passed the [a-z0-9_-]{1,63} check above, so echoing it is safe and short.
        raise InvalidStoragePath(
            f"the bucket '{bucket}' is not one this worker may read (allowed: {allowed})"
        )
    segments = path.segments
    if require_user_folder and (len(segments) < 2 or segments[0] != canonical_user):
        # Never echo the folder: it may be another user's id.
        raise InvalidStoragePath("the export must be inside the user's own '<user id>/' folder")
    return path


def _character_problem(raw: str) -> str | None:
    """Name the first character-level problem in ``raw``, most specific explanation first."""
    if "://" in raw or raw.lower().startswith(("http:", "https:")):
        return "it must be 'bucket/object', not a URL"
    if raw.startswith("/"):
        return "it must not start with '/'"
    for position, char in enumerate(raw, start=1):
        if char in _ALLOWED_CHARS:
            continue
        if char == "\\":
            return f"it contains a backslash (character {position})"
        if char == "%":
            return f"it contains '%' (character {position}); percent-encoding is not allowed"
        if char.isspace():
            return f"it contains whitespace (character {position})"
        if ord(char) < 32 or ord(char) == 127:
            return f"it contains a control character (character {position})"
        if not char.isascii():
            return f"it contains a non-ASCII character (character {position})"
        # Printable ASCII: echoing the one character is safe and tells the reader what to fix.
        return f"it contains the character {char!r} (character {position}), which is not allowed"
    return None


def _syntax_problem(bucket: object, object_name: object) -> str | None:
    """Why ``bucket``/``object_name`` cannot form a safe object URL, or ``None`` if they can."""
    if not isinstance(bucket, str) or not isinstance(object_name, str):
        return "it is missing"
    if not bucket:
        return "the bucket name is empty"
    if len(bucket) > MAX_BUCKET_CHARS:
        return f"the bucket name is too long (at most {MAX_BUCKET_CHARS} characters)"
    if not _BUCKET_RE.fullmatch(bucket):
        return "the bucket name may contain only a-z, 0-9, '_' and '-'"
    if not object_name:
        return "the object name is empty"
    if len(object_name) > MAX_OBJECT_CHARS:
        return f"the object name is too long (at most {MAX_OBJECT_CHARS} characters)"
    for segment in object_name.split("/"):
        if not segment:
            return "it contains an empty path segment ('//' or a trailing '/')"
        if segment in _DOT_SEGMENTS:
            return "it contains a '.' or '..' segment"
        if not _SEGMENT_RE.fullmatch(segment):
            return "the object name may contain only A-Z, a-z, 0-9, '.', '_', '-' and '/'"
    return None
