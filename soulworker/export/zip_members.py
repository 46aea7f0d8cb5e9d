"""Finds the conversation files in an export ZIP and checks the archive before reading it.

Layout rules (DESIGN §4, §12 "Duplicates and ZIP layout"; research/export-format.md §1):

- A conversation file is ``conversations.json`` or a shard ``conversations-NNN.json``
  (``^conversations-(\\d+)\\.json$``), at the root or inside exactly one folder
  (``export/conversations.json``). Names are matched exactly: ``shared_conversations.json``,
  ``conversations.json.index``, ``chat.html`` and media never match. ``__MACOSX/`` copies are
  skipped. Backslash separators (some Windows tools) count as folders.
- Every matching file is read, even when both ``conversations.json`` and shards, or copies at
  the root and in a folder, are present: duplicates are resolved downstream.
- Order: root before folders (folders by name); in a folder ``conversations.json`` first, then
  shards by their number as an integer (``-2`` before ``-10``).

Checks made on the central directory before anything is decompressed: encryption, compression
method, the declared total size against the export limit and each member's declared expansion
ratio. The declared sizes can lie; ``zipfile`` stops a member's output at its declared size and
then fails its CRC check, and the reader counts what is actually produced, so a lie surfaces as
a corrupt archive without costing more than the declared bytes.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass

from soulworker.export.errors import (
    EncryptedArchive,
    ExportTooLarge,
    NoConversationsFile,
    UnsupportedArchive,
    ZipBomb,
)

_SHARD = re.compile(r"^conversations-(\d+)\.json$")
_PLAIN = "conversations.json"
_MACOS_METADATA = "__MACOSX"

_SUPPORTED_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
_METHOD_NAMES = {9: "Deflate64", 93: "Zstandard", 98: "PPMd", 99: "AES encryption"}

RATIO_GRACE_BYTES = 1 << 20
"""Members expanding to under 1 MiB are never called bombs: tiny files compress absurdly well."""


@dataclass(frozen=True)
class ConversationMember:
    """One conversation file in the archive, in reading order."""

    info: zipfile.ZipInfo
    name: str  # the normalised path, for messages (it names a file of the export, not a person)


def find_conversation_members(archive: zipfile.ZipFile) -> list[ConversationMember]:
    """The conversation files of ``archive`` in reading order; raises ``NoConversationsFile``."""
    found: list[tuple[tuple[int, str, int, int, str], ConversationMember]] = []
    for info in archive.infolist():
        if info.is_dir():
            continue
        name = info.filename.replace("\\", "/")
        parts = [part for part in name.split("/") if part]
        if not parts or len(parts) > 2 or parts[0] == _MACOS_METADATA:
            continue
        base = parts[-1]
        folder = parts[0] if len(parts) == 2 else ""
        if base == _PLAIN:
            key = (1 if folder else 0, folder, 0, 0, name)
        else:
            match = _SHARD.match(base)
            if match is None:
                continue
            key = (1 if folder else 0, folder, 1, int(match.group(1)), name)
        found.append((key, ConversationMember(info, "/".join(parts))))
    if not found:
        raise NoConversationsFile(_layout_hint(archive))
    found.sort(key=lambda pair: pair[0])
    return [member for _, member in found]


def check_members(members: list[ConversationMember], *, max_bytes: int, max_ratio: float) -> None:
    """Refuses what the central directory already shows: encryption, unknown compression, a
    declared total over ``max_bytes``, a member declaring an expansion over ``max_ratio``."""
    total = 0
    for member in members:
        info = member.info
        if info.flag_bits & 0x1:
            raise EncryptedArchive(member=member.name)
        if info.compress_type not in _SUPPORTED_METHODS:
            method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
            raise UnsupportedArchive(method, member=member.name)
        total += info.file_size
        if total > max_bytes:
            raise ExportTooLarge(max_bytes)
        if exceeds_ratio(info.file_size, info.compress_size, max_ratio):
            raise ZipBomb(member=member.name)


def exceeds_ratio(expanded: int, compressed: int, max_ratio: float) -> bool:
    """Whether ``expanded`` bytes from ``compressed`` input is more than real data expands."""
    return expanded > RATIO_GRACE_BYTES and expanded > max_ratio * compressed


def _layout_hint(archive: zipfile.ZipFile) -> str | None:
    """A short, name-free description of what the archive holds instead (file names inside
    an upload can be personal, so only well-known export names are ever mentioned)."""
    names = [info.filename.replace("\\", "/") for info in archive.infolist() if not info.is_dir()]
    if not names:
        return "the archive is empty"
    bases = {name.rsplit("/", 1)[-1].lower() for name in names}
    if any(name.lower().endswith(".zip") for name in names):
        return "it contains another ZIP file; please upload that inner ZIP instead"
    if _PLAIN in bases or any(_SHARD.match(base) for base in bases):
        return "the conversation files are nested more than one folder deep"
    if "[content_types].xml" in bases:
        return "it looks like an Office document"
    if "chat.html" in bases:
        return "it has chat.html but no conversation files"
    return f"it holds {len(names):,} other file{'s' if len(names) != 1 else ''}"
