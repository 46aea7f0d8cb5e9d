"""Reads a ZIP export's members from their local headers while the file still downloads.

A ZIP's central directory is at its end, but every member is also preceded by a *local header*
naming it, and the members come one after the other. So a ZIP whose layout allows it can be read
front to back as its bytes arrive (docs/pipeline.md, "Parsing while the export downloads", says
which layouts do and what is verified at the end):

- sizes in the local header (general-purpose flag bit 3 clear; Python's ``zipfile`` and our
  generator write them so): a member's data is exactly ``compressed size`` bytes, and members
  not read are skipped without reading them;
- a deflated member written with a *data descriptor* (bit 3 set, sizes written after the data):
  deflate marks its own end, so the member ends where the inflater says, and the descriptor
  (with or without its optional signature, ZIP64 sizes when the local header has a ZIP64 extra
  field) is read and checked against what was actually inflated;
- anything else (a stored member with a descriptor: its end cannot be found; a compression
  method other than stored or deflate; encryption; bytes that are not a local header; more
  entries than the cap; a member that does not end where it says) raises ``NeedsWholeFile``:
  the archive is then read after the download, through its central directory, as before.

Nothing here is trusted by itself: the reader compares every member it read this way with the
central directory once the download is done, and any difference also means ``NeedsWholeFile``.
State per entry is a counter only; members not read are skipped (or, for a descriptor member,
inflated and discarded within ``SKIP_INFLATE_*`` bounds, so a bomb among the media costs little).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Protocol

LOCAL_SIGNATURE = b"PK\x03\x04"
DESCRIPTOR_SIGNATURE = b"PK\x07\x08"
END_SIGNATURES = (b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06")
"""What may follow the last member: the central directory, or (an archive without any entry in
its directory) the end records."""

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # the 30 fixed bytes of a local header
_EXTRA = struct.Struct("<HH")
_ZIP64_EXTRA_ID = 0x0001
_MAX32 = 0xFFFFFFFF
_STORED, _DEFLATED = 0, 8
_ENCRYPTED = 0x1
_DESCRIPTOR = 0x8
_UTF8_NAME = 0x800
_UNSUPPORTED_FLAGS = 0x1 | 0x20 | 0x40  # encrypted, patched data, strong encryption

INPUT_READ_BYTES = 64 * 1024
"""Compressed bytes handed to the inflater at a time."""

SKIP_INFLATE_RATIO = 2.0
SKIP_INFLATE_GRACE_BYTES = 64 * 1024 * 1024
"""A member not read whose end is only known by inflating it (deflate with a descriptor) is
inflated and discarded: media barely compress, so all such members together may produce at most
twice their compressed bytes plus 64 MiB; more (a bomb hidden among the media) and the archive is
read the usual way once whole, which never inflates those members."""


class NeedsWholeFile(Exception):
    """This archive cannot be read (or trusted) from its local headers: read it through its
    central directory once the download is done. ``reason`` is a short, name-free label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Raw(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


@dataclass
class LocalEntry:
    """One entry as its local header describes it; ``crc``/sizes are the verified ones once its
    data was read to its end (``MemberData.finished``)."""

    offset: int
    name: str
    flags: int
    method: int
    crc: int
    compress_size: int
    file_size: int
    zip64: bool
    data_offset: int

    @property
    def sizes_known(self) -> bool:
        return not self.flags & _DESCRIPTOR

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")

    @property
    def readable(self) -> bool:
        """Whether its data can be read as it arrives."""
        if self.flags & _UNSUPPORTED_FLAGS:
            return False
        if self.method == _DEFLATED:
            return True
        return self.method == _STORED and self.sizes_known


class _Input:
    """A forward reader over the archive file that can give bytes back (the inflater reads past
    a member's end when its size is not known)."""

    def __init__(self, raw: _Raw) -> None:
        self.raw = raw
        self.position = 0  # offset in the archive of the next byte returned
        self._buffer = b""

    def read(self, size: int) -> bytes:
        if self._buffer:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        else:
            data = self.raw.read(size)
        self.position += len(data)
        return data

    def read_exactly(self, size: int) -> bytes:
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            data = self.read(wanted)
            if not data:
                raise NeedsWholeFile("ends inside a header")
            parts.append(data)
            wanted -= len(data)
        return b"".join(parts)

    def tell(self) -> int:
        return self.position

    def unread(self, data: bytes) -> None:
        if data:
            self._buffer = data + self._buffer
            self.position -= len(data)

    def skip(self, size: int) -> None:
        if size <= len(self._buffer):
            self._buffer = self._buffer[size:]
        else:
            self._buffer = b""
            self.raw.seek(self.position + size)  # a growing file waits at the next read
        self.position += size


class LocalHeaderWalker:
    """Walks the entries of an archive front to back; see the module docstring."""

    def __init__(self, raw: _Raw, *, max_entries: int) -> None:
        self.input = _Input(raw)
        self.max_entries = max_entries
        self.entries = 0
        self.skip_consumed = 0
        self.skip_produced = 0

    def next_entry(self) -> LocalEntry | None:
        """The next entry's header, or ``None`` at the central directory."""
        offset = self.input.position
        signature = self.input.read_exactly(4)
        if signature in END_SIGNATURES:
            return None
        if signature != LOCAL_SIGNATURE:
            raise NeedsWholeFile("not a local header")
        self.entries += 1
        if self.entries > self.max_entries:
            raise NeedsWholeFile("too many entries")
        fixed = signature + self.input.read_exactly(_LOCAL.size - 4)
        (_, _, flags, method, _, _, crc, compressed, size, name_length, extra_length) = (
            _LOCAL.unpack(fixed)
        )
        raw_name = self.input.read_exactly(name_length)
        extra = self.input.read_exactly(extra_length)  # at most 64 KiB by the format
        try:
            name = raw_name.decode("utf-8" if flags & _UTF8_NAME else "cp437")
        except UnicodeDecodeError:
            raise NeedsWholeFile("undecodable name") from None
        if "\0" in name:
            raise NeedsWholeFile("name with a NUL")  # zipfile truncates it: not comparable
        zip64 = False
        if _MAX32 in (compressed, size):
            sizes = _zip64_sizes(extra, size, compressed)
            if sizes is None:
                raise NeedsWholeFile("ZIP64 sizes missing")
            size, compressed = sizes
            zip64 = True
        elif _has_extra(extra, _ZIP64_EXTRA_ID):
            zip64 = True
        return LocalEntry(
            offset, name, flags, method, crc, compressed, size, zip64, self.input.position
        )

    def open(self, entry: LocalEntry) -> MemberData:
        """The data of ``entry`` (which must be ``readable``), read as it arrives."""
        if not entry.readable:
            raise NeedsWholeFile("member cannot be read before the directory")
        return MemberData(self.input, entry)

    def skip(self, entry: LocalEntry) -> None:
        """Passes over the data of an entry that is not read."""
        if entry.sizes_known:
            self.input.skip(entry.compress_size)
            return
        if entry.method != _DEFLATED or entry.flags & _UNSUPPORTED_FLAGS:
            raise NeedsWholeFile("member end unknown")
        data = MemberData(self.input, entry)
        while True:
            produced = len(data.read(INPUT_READ_BYTES * 4))
            if not produced:
                break
            self.skip_produced += produced
            allowed = SKIP_INFLATE_RATIO * (self.skip_consumed + data.consumed)
            if self.skip_produced > allowed + SKIP_INFLATE_GRACE_BYTES:
                raise NeedsWholeFile("skipped member expands too much")
        self.skip_consumed += data.consumed


class MemberData:
    """One member's uncompressed bytes, read from the archive as they arrive; at its end, its
    size and CRC-32 are checked (against the local header, or the data descriptor read then)
    and written back into the entry. Every mismatch raises ``NeedsWholeFile``."""

    def __init__(self, source: _Input, entry: LocalEntry) -> None:
        self._input = source
        self.entry = entry
        self._inflater = zlib.decompressobj(-15) if entry.method == _DEFLATED else None
        self._remaining: int | None = entry.compress_size if entry.sizes_known else None
        self.consumed = 0  # compressed bytes of this member read so far
        self.produced = 0
        self._crc = 0
        self.finished = False

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            size = INPUT_READ_BYTES
        while not self.finished:
            data = self._inflate(size) if self._inflater is not None else self._copy(size)
            if data:
                self.produced += len(data)
                if self.entry.sizes_known and self.produced > self.entry.file_size:
                    raise NeedsWholeFile("member longer than declared")
                self._crc = zlib.crc32(data, self._crc)
                return data
        return b""

    def compressed_read(self) -> int:
        """Compressed bytes of this member read so far (for the expansion check)."""
        return self.consumed

    def close(self) -> None:
        """Nothing to release: the archive file belongs to the walker."""

    def _next_input(self) -> bytes:
        wanted = INPUT_READ_BYTES
        if self._remaining is not None:
            wanted = min(wanted, self._remaining)
            if wanted == 0:
                return b""
        data = self._input.read(wanted)
        self.consumed += len(data)
        if self._remaining is not None:
            self._remaining -= len(data)
        return data

    def _copy(self, size: int) -> bytes:
        assert self._remaining is not None
        if self._remaining == 0:
            self._finish()
            return b""
        data = self._input.read(min(size, self._remaining))
        if not data:
            raise NeedsWholeFile("member cut short")
        self.consumed += len(data)
        self._remaining -= len(data)
        return data

    def _inflate(self, size: int) -> bytes:
        inflater = self._inflater
        assert inflater is not None
        if inflater.eof:
            self._finish()
            return b""
        tail = inflater.unconsumed_tail
        if not tail:
            tail = self._next_input()
            if not tail:
                raise NeedsWholeFile("member cut short")
        try:
            data = inflater.decompress(tail, size)
        except zlib.error:
            raise NeedsWholeFile("broken deflate data") from None
        if _ended(inflater):
            # Everything after deflate's end (``unconsumed_tail`` may still hold a stale copy
            # of it: zlib leaves it set when the end is met under ``max_length``).
            unused = inflater.unused_data
            self._input.unread(unused)
            self.consumed -= len(unused)
            if self._remaining is not None:
                self._remaining += len(unused)
        return data

    def _finish(self) -> None:
        entry = self.entry
        crc = self._crc & _MAX32
        if entry.sizes_known:
            if (self._remaining or 0) != 0 or self.consumed != entry.compress_size:
                raise NeedsWholeFile("member does not end at its size")
        else:
            self._read_descriptor(crc)
        if self.produced != entry.file_size or crc != entry.crc:
            raise NeedsWholeFile("member size or CRC-32 differs")
        self.finished = True

    def _read_descriptor(self, crc: int) -> None:
        entry = self.entry
        first = self._input.read_exactly(4)
        if first == DESCRIPTOR_SIGNATURE and crc != struct.unpack("<I", first)[0]:
            first = self._input.read_exactly(4)
        (found_crc,) = struct.unpack("<I", first)
        if entry.zip64:
            compressed, size = struct.unpack("<QQ", self._input.read_exactly(16))
        else:
            compressed, size = struct.unpack("<II", self._input.read_exactly(8))
        if compressed != self.consumed or found_crc != crc:
            raise NeedsWholeFile("data descriptor differs")
        entry.crc, entry.compress_size, entry.file_size = found_crc, compressed, size


def _ended(inflater: zlib._Decompress) -> bool:
    """Whether deflate's end was met (its own function: mypy narrows the attribute)."""
    return inflater.eof


def _has_extra(extra: bytes, wanted: int) -> bool:
    return _find_extra(extra, wanted) is not None


def _find_extra(extra: bytes, wanted: int) -> bytes | None:
    index = 0
    while index + _EXTRA.size <= len(extra):
        kind, length = _EXTRA.unpack_from(extra, index)
        start = index + _EXTRA.size
        if kind == wanted:
            return extra[start : start + length]
        index = start + length
    return None


def _zip64_sizes(extra: bytes, size: int, compressed: int) -> tuple[int, int] | None:
    """The sizes from a ZIP64 extra field: the uncompressed size first, each only when the
    header's own field is 0xFFFFFFFF."""
    field = _find_extra(extra, _ZIP64_EXTRA_ID)
    if field is None:
        return None
    index = 0
    values = []
    for value in (size, compressed):
        if value == _MAX32:
            if index + 8 > len(field):
                return None
            values.append(struct.unpack_from("<Q", field, index)[0])
            index += 8
        else:
            values.append(value)
    return values[0], values[1]
