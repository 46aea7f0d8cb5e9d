"""Tells what kind of file an upload is from its first bytes, never from its name.

The web app's ``file_type`` hint and the object name are ignored: people rename files, and the
predecessor's name-based routing sent ZIPs down the JSON path. Three kinds are readable (ZIP,
gzip, JSON); for anything else ``describe`` names what it looks like when that is cheap to
tell, so the error can say "it looks like a PDF document".
"""

from __future__ import annotations

import enum

SNIFF_BYTES = 512
"""Enough for every signature below (tar's sits at offset 257)."""

UTF8_BOM = b"\xef\xbb\xbf"
JSON_WHITESPACE = b" \t\r\n"


class ExportKind(enum.Enum):
    """The container formats the reader understands."""

    ZIP = "zip"
    GZIP = "gzip"
    JSON = "json"


_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
"""A local file header, an empty archive's end record, a spanned-archive marker."""

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Microsoft Office document"),
    (b"{\\rtf", "an RTF document"),
)


def sniff(head: bytes) -> ExportKind | None:
    """The readable kind ``head`` (the file's first bytes) belongs to, or ``None``.

    JSON is recognised by its first significant byte (``[`` or ``{`` after an optional UTF-8
    BOM and whitespace); a JSON scalar is not an export, so it is ``None`` too.
    """
    if head.startswith(_ZIP_SIGNATURES):
        return ExportKind.ZIP
    if head.startswith(b"\x1f\x8b"):
        return ExportKind.GZIP
    if first_json_byte(head) in (b"[", b"{"):
        return ExportKind.JSON
    return None


def first_json_byte(head: bytes) -> bytes:
    """The first byte after an optional BOM and JSON whitespace (``b""`` if there is none)."""
    body = head[len(UTF8_BOM) :] if head.startswith(UTF8_BOM) else head
    return body.lstrip(JSON_WHITESPACE)[:1]


def describe(head: bytes) -> str | None:
    """What a non-export file looks like, for the error message; ``None`` when unknown."""
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    if len(head) > 262 and head[257:262] == b"ustar":
        return "a tar archive"
    if head[4:8] == b"ftyp":
        return "a video or audio file"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text"
    text = head[len(UTF8_BOM) :] if head.startswith(UTF8_BOM) else head
    lowered = text.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "a web page (HTML)"
    if lowered.startswith(b"<?xml") or lowered.startswith(b"<"):
        return "an XML or HTML document"
    first = first_json_byte(head)
    if first in (b'"', b"-") or first.isdigit() or lowered.startswith((b"true", b"false", b"null")):
        return "a single JSON value, not a list of conversations"
    if not lowered:
        return None
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(text) - 4:  # not just a character cut at the end of the sample
            return "a binary file"
    return "plain text"
