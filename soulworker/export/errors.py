"""The ways an uploaded export can be unreadable, as user-facing permanent job errors.

Every class here is a ``PermanentJobError``: retrying cannot repair the file, the person has to
upload another one. Each has a stable ``code`` (the job's error history groups by it) and builds
its own message so every raise site produces the same wording. Messages name the file inside an
archive and a byte offset where one helps, and never contain conversation text: offsets are
computed by the reader, never copied from a parser's error (ijson's messages quote the input).

Byte offsets are positions in the uncompressed JSON stream of the named file, counted from 0,
and are printed with thousands separators ("byte 1,234,567").
"""

from __future__ import annotations

from soulworker.errors import PermanentJobError

DOWNLOAD_AGAIN = "please download the export from ChatGPT again and upload the new file"
"""The advice for every damaged file: a fresh export is the only repair a user can make."""


def _where(offset: int | None, member: str | None) -> str:
    """' at byte N of NAME' / ' at byte N' / ' in NAME' / ''."""
    parts = []
    if offset is not None:
        parts.append(f" at byte {offset:,}")
    if member:
        parts.append(f" of {member}" if offset is not None else f" in {member}")
    return "".join(parts)


class ExportError(PermanentJobError):
    """Base of every "this file cannot be imported" failure.

    ``offset`` and ``member`` are kept as attributes for logs and tests (they are not personal
    data): the byte offset in the uncompressed stream and the archive member it refers to.
    """

    default_code = "export_unreadable"

    def __init__(
        self, message: str, *, offset: int | None = None, member: str | None = None
    ) -> None:
        super().__init__(message)
        self.offset = offset
        self.member = member


class NotAnExport(ExportError):
    """The file is something else: a PDF, a web page, an image, JSON of another shape."""

    default_code = "not_an_export"

    def __init__(self, looks_like: str | None = None, *, member: str | None = None) -> None:
        what = f" (it looks like {looks_like})" if looks_like else ""
        where = f" {member} is" if member else " This file is"
        super().__init__(
            f"{where.strip()} not a ChatGPT export{what}. Please upload the ZIP file from "
            "ChatGPT's data export (Settings > Data controls > Export data).",
            member=member,
        )


class InvalidJson(ExportError):
    """The JSON is damaged in the middle: a syntax error somewhere after the start."""

    default_code = "invalid_json"

    def __init__(
        self, offset: int | None, *, member: str | None = None, near: bool = False
    ) -> None:
        where = _where(offset, member)
        if near and offset is not None:
            where = where.replace(" at byte", " near byte", 1)
        super().__init__(
            f"The export is damaged: it stops being valid JSON{where}; {DOWNLOAD_AGAIN}.",
            offset=offset,
            member=member,
        )


class ExportTruncated(ExportError):
    """The JSON ends before its last conversation does: an interrupted download or copy."""

    default_code = "export_truncated"

    def __init__(self, offset: int, *, member: str | None = None) -> None:
        super().__init__(
            f"The export file is cut off{_where(offset, member)}; {DOWNLOAD_AGAIN}.",
            offset=offset,
            member=member,
        )


class InvalidUtf8(ExportError):
    """The bytes are not UTF-8 text (ChatGPT writes UTF-8; another program re-encoded it)."""

    default_code = "invalid_utf8"

    def __init__(
        self, offset: int | None, *, member: str | None = None, encoding: str | None = None
    ) -> None:
        detail = (
            f"it is encoded as {encoding}, not UTF-8" if encoding else "it is not valid UTF-8 text"
        )
        super().__init__(
            f"The export cannot be read: {detail}{_where(offset, member)}. Please upload the "
            "original file from ChatGPT without opening and saving it in another program.",
            offset=offset,
            member=member,
        )


class NoConversationsFile(ExportError):
    """A ZIP without ``conversations.json`` or ``conversations-NNN.json`` where exports keep it."""

    default_code = "no_conversations_file"

    def __init__(self, hint: str | None = None) -> None:
        extra = f" ({hint})" if hint else ""
        super().__init__(
            f"No conversations.json in the ZIP{extra}. Please upload the ZIP file exactly as "
            "ChatGPT's data export delivered it."
        )


class EmptyExport(ExportError):
    """The export parses but holds no conversation at all."""

    default_code = "empty_export"

    def __init__(self, detail: str | None = None) -> None:
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"The export contains no conversations{why}. If you do have chats in ChatGPT, "
            "please request a new export and upload it."
        )


class ExportTooLarge(ExportError):
    """More uncompressed data than the configured limit (``SOULWORKER_MAX_EXPORT_BYTES``)."""

    default_code = "export_too_large"

    def __init__(self, limit: int, *, member: str | None = None) -> None:
        super().__init__(
            f"The export is larger than the {_size(limit)} this service can import"
            f"{_where(None, member)}. Please contact support.",
            member=member,
        )


class ConversationTooLarge(ExportError):
    """One conversation is bigger than can be held in memory at once."""

    default_code = "conversation_too_large"

    def __init__(self, limit: int, offset: int, *, member: str | None = None) -> None:
        where = _where(offset, member).replace(" at byte", " near byte", 1)
        super().__init__(
            f"One conversation in the export{where} is larger than {_size(limit)}, more than "
            "this service can import at once. Please contact support.",
            offset=offset,
            member=member,
        )


class ZipBomb(ExportError):
    """An archive that expands far beyond what real exports do: refused before expanding."""

    default_code = "zip_bomb"

    def __init__(self, *, member: str | None = None) -> None:
        what = member or "The archive"
        super().__init__(
            f"{what} expands to far more data than a ChatGPT export does, so the upload was "
            "refused. Please upload the ZIP file exactly as ChatGPT delivered it.",
            member=member,
        )


class CorruptArchive(ExportError):
    """The ZIP or gzip container is damaged (bad CRC, broken deflate data, missing directory)."""

    default_code = "corrupt_archive"

    def __init__(
        self, *, member: str | None = None, offset: int | None = None, kind: str = "ZIP"
    ) -> None:
        super().__init__(
            f"The {kind} file is damaged or incomplete{_where(offset, member)} (it may not have "
            f"finished downloading); {DOWNLOAD_AGAIN}.",
            offset=offset,
            member=member,
        )


class TooManyZipEntries(ExportError):
    """A ZIP with more files than any ChatGPT export (``SOULWORKER_MAX_ZIP_ENTRIES``)."""

    default_code = "zip_too_many_entries"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The ZIP file holds more than {limit:,} files, far more than a ChatGPT export does. "
            "Please upload the ZIP exactly as ChatGPT delivered it, or only its "
            "conversations.json."
        )


class EncryptedArchive(ExportError):
    """Password-protected ZIP members: ChatGPT never encrypts exports."""

    default_code = "encrypted_archive"

    def __init__(self, *, member: str | None = None) -> None:
        super().__init__(
            f"The ZIP file is password-protected{_where(None, member)}. Please upload the ZIP "
            "exactly as ChatGPT delivered it, without adding a password.",
            member=member,
        )


class UnsupportedArchive(ExportError):
    """A ZIP compression method Python cannot read (e.g. Deflate64 from Windows Explorer)."""

    default_code = "unsupported_archive"

    def __init__(self, method: str, *, member: str | None = None) -> None:
        super().__init__(
            f"The ZIP file uses a compression method this service cannot read ({method})"
            f"{_where(None, member)}. Please upload the ZIP exactly as ChatGPT delivered it "
            "instead of re-compressing it.",
            member=member,
        )


class NestingTooDeep(ExportError):
    """JSON nested deeper than any real export, or with object keys longer than any real one.

    Both are refused before the parser sees them: its memory grows with the square of the
    nesting (see ``export.guard``). ``near`` says the offset is approximate (long keys).
    """

    default_code = "nesting_too_deep"

    def __init__(
        self,
        offset: int,
        *,
        member: str | None = None,
        reason: str = "nested too deeply",
        near: bool = False,
    ) -> None:
        where = _where(offset, member)
        if near:
            where = where.replace(" at byte", " near byte", 1)
        super().__init__(
            f"The export is not a normal ChatGPT export: its JSON is {reason}{where}. "
            "Please upload the file exactly as ChatGPT delivered it.",
            offset=offset,
            member=member,
        )


def _size(limit: int) -> str:
    """A byte count for people: "8 GiB", "512 MiB", "1,000 bytes"."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= scale and limit % scale == 0:
            return f"{limit // scale:,} {unit}"
    return f"{limit:,} bytes"
