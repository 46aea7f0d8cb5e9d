"""Finds the conversation files in an export ZIP and checks the archive before reading it.

Layout rules (docs/export-format.md):

- A conversation file is ``conversations.json`` or a shard ``conversations-NNN.json``
  (``^conversations-(\\d+)\\.json$``), at the root or inside exactly one folder
  (``export/conversations.json``). Names are matched exactly: ``shared_conversations.json``,
  ``conversations.json.index``, ``chat.html`` and media never match. ``__MACOSX/`` copies are
  skipped. Backslash separators (some Windows tools) count as folders.
- Every matching file is read, even when both ``conversations.json`` and shards, or copies at
  the root and in a folder, are present: duplicates are resolved downstream.
- Order: root before folders (folders by name); in a folder ``conversations.json`` first, then
  shards by their number as an integer (``-2`` before ``-10``).

The number of entries is capped (``check_central_directory``) before ``zipfile`` reads the
central directory: it builds an object of ~600 bytes for every entry (a 25 MB upload of 300k
tiny files cost 176 MB and 3 s of CPU), and reads the whole directory into memory first. The
cap is checked on the entry count the archive declares, on the directory's size, and on the
entries actually present (counted by their signature, at C speed). Once the conversation files
are found, the other entries are forgotten (``keep_only``), so a large media folder costs
nothing for the rest of the parse.

Checks made on the central directory before anything is decompressed: encryption, compression
method, the declared total size against the export limit and each member's declared expansion
ratio. The declared sizes can lie; ``zipfile`` stops a member's output at its declared size and
then fails its CRC check, and the reader counts what is actually produced, so a lie surfaces as
a corrupt archive without costing more than the declared bytes.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from soulworker.export.errors import (
    CorruptArchive,
    EncryptedArchive,
    ExportTooLarge,
    NoConversationsFile,
    TooManyZipEntries,
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

DEFAULT_MAX_ZIP_ENTRIES = 50_000
"""``SOULWORKER_MAX_ZIP_ENTRIES``: a real export holds its JSON files plus one file per uploaded
image, generated image and voice recording: a few thousand for heavy users. 50,000 leaves a
tenfold margin and costs at most ~30 MB while the directory is read."""

CENTRAL_DIRECTORY_BYTES_PER_ENTRY = 512
"""Average directory bytes allowed per permitted entry: a real entry takes 46 bytes plus its
name (under 200) and extra fields (under 40). Bounds what ``zipfile`` reads into memory at once
(25 MB at the default cap) whatever the names hold."""

_CENTRAL_ENTRY_SIGNATURE = b"PK\x01\x02"
_COUNT_READ_BYTES = 1024 * 1024

# zipfile's own reader of the end-of-directory records (its layout has been stable since
# Python 2.6): using it guarantees the cap is checked on exactly the directory zipfile reads.
_end_record: Any = getattr(zipfile, "_EndRecData")  # noqa: B009 - private, looked up once
_ECD_SIGNATURE, _ECD_ENTRIES_TOTAL, _ECD_SIZE, _ECD_OFFSET, _ECD_LOCATION = 0, 4, 5, 6, 9
_ZIP64_RECORDS_BYTES = 56 + 20  # the zip64 end record and its locator

RATIO_GRACE_BYTES = 1 << 20
"""Members expanding to under 1 MiB are never called bombs: tiny files compress absurdly well."""


@dataclass(frozen=True)
class ConversationMember:
    """One conversation file in the archive, in reading order."""

    info: zipfile.ZipInfo
    name: str  # the normalised path, for messages (it names a file of the export, not a person)


def check_central_directory(raw: IO[bytes], *, max_entries: int) -> None:
    """Refuses an archive with more than ``max_entries`` entries before ``zipfile`` reads it.

    Damage is left for ``zipfile`` to report (as a corrupt archive); the position of ``raw``
    is left anywhere.
    """
    try:
        end = _end_record(raw)
    except OSError as error:
        raise CorruptArchive() from error
    if not end:
        return  # not readable as a ZIP: zipfile says so
    size = end[_ECD_SIZE]
    max_size = max_entries * CENTRAL_DIRECTORY_BYTES_PER_ENTRY
    if end[_ECD_ENTRIES_TOTAL] > max_entries or size > max_size:
        raise TooManyZipEntries(max_entries)
    start = end[_ECD_LOCATION] - size
    if end[_ECD_SIGNATURE] == zipfile.stringEndArchive64:  # type: ignore[attr-defined]
        start -= _ZIP64_RECORDS_BYTES
    if start < 0:
        return
    # Declared counts can lie: zipfile reads entries until the directory's size is used up.
    # Every entry starts with the signature, so counting it can only overestimate.
    raw.seek(start)
    entries = 0
    tail = b""
    remaining = size
    while remaining > 0:
        data = raw.read(min(_COUNT_READ_BYTES, remaining))
        if not data:
            break
        remaining -= len(data)
        window = tail + data
        entries += window.count(_CENTRAL_ENTRY_SIGNATURE)
        if entries > max_entries:
            raise TooManyZipEntries(max_entries)
        # Keep the last 3 bytes, which may begin a signature, minus any signature already
        # counted in them (a signature is 4 bytes, so none fits in 3).
        tail = window[-3:]


def keep_only(archive: zipfile.ZipFile, members: Sequence[ConversationMember]) -> None:
    """Forget every entry but ``members``: members are opened by their ``ZipInfo``, and the
    rest (a media folder) would otherwise stay in memory for the whole parse."""
    infos = [member.info for member in members]
    archive.filelist = infos
    archive.NameToInfo = {info.filename: info for info in infos}


MemberKey = tuple[int, str, int, int, str]
"""Sorts conversation files into reading order (see the module docstring)."""


def member_key(filename: str) -> tuple[MemberKey, str] | None:
    """The reading-order key and normalised path of a conversation file named ``filename`` (as
    ``zipfile`` decodes it), or ``None`` for any other entry (directories excepted by the
    caller)."""
    name = filename.replace("\\", "/")
    parts = [part for part in name.split("/") if part]
    if not parts or len(parts) > 2 or parts[0] == _MACOS_METADATA:
        return None
    base = parts[-1]
    folder = parts[0] if len(parts) == 2 else ""
    if base == _PLAIN:
        return (1 if folder else 0, folder, 0, 0, name), "/".join(parts)
    match = _SHARD.match(base)
    if match is None:
        return None
    return (1 if folder else 0, folder, 1, int(match.group(1)), name), "/".join(parts)


def find_conversation_members(archive: zipfile.ZipFile) -> list[ConversationMember]:
    """The conversation files of ``archive`` in reading order; raises ``NoConversationsFile``."""
    found: list[tuple[MemberKey, ConversationMember]] = []
    for info in archive.infolist():
        if info.is_dir():
            continue
        placed = member_key(info.filename)
        if placed is not None:
            key, name = placed
            found.append((key, ConversationMember(info, name)))
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
