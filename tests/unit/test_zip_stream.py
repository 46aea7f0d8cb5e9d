"""A ZIP export read from its local headers while it downloads (``soulworker/export/zip_stream.py``
and ``ExportReader._read_arriving_zip``): the layouts that stream give exactly what the whole
file gives, before the download ends; every other layout, and every archive whose central
directory disagrees with what was read, says ``NeedsWholeFile`` (the parse then reads the whole
file as before), and hostile archives cost no more than they did."""

from __future__ import annotations

import contextlib
import io
import queue
import random
import struct
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from soulworker.export.errors import CorruptArchive, ExportError, TooManyZipEntries, ZipBomb
from soulworker.export.reader import ExportLimits, ExportReader
from soulworker.export.zip_stream import NeedsWholeFile
from soulworker.testing.export_generator import ExportForm, GeneratorConfig, write_export
from tests.unit.test_growing_file import DONE, WAIT, Downloading, complete_read

CONVERSATION = {
    "title": "t",
    "create_time": 1.0,
    "update_time": 2.0,
    "mapping": {},
}


class _NonSeekable:
    """What zipfile writes to when it cannot go back: every member gets a data descriptor."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.buffer.write(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def generated(tmp_path: Path, form: ExportForm) -> bytes:
    path = tmp_path / f"source-{form.value}"
    # Several shards, so that their order is exercised.
    config = GeneratorConfig(seed=5, target_bytes=900_000, form=form, shard_bytes=150_000)
    write_export(path, config)
    return path.read_bytes()


def with_descriptors(
    data: bytes, method: int = zipfile.ZIP_DEFLATED, *, zip64: bool = False
) -> bytes:
    """The same archive written to a stream zipfile cannot seek: flag bit 3 on every member,
    sizes and CRC-32 in a data descriptor after each member's data."""
    out = _NonSeekable()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", method) as target,
    ):
        for info in source.infolist():
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy.compress_type = method
            with target.open(copy, "w", force_zip64=zip64) as member:
                member.write(source.read(info))
    return out.buffer.getvalue()


PADDING = ("media/first.bin", random.Random(1).randbytes(256 * 1024))
"""Media first, as real exports have them: the reader has sniffed the archive long before its
end has arrived, so these small archives are read as they arrive."""


def zip_of(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in [PADDING, *entries]:
            archive.writestr(name, content)
    return buffer.getvalue()


def follow_half(tmp_path: Path, data: bytes, **options: Any) -> tuple[Downloading, list[Any]]:
    """A reader following a download of which the first half has arrived; what it yielded."""
    follow = Downloading(tmp_path / "export", **options)
    follow.growing.total_known(len(data))
    follow.write(data[: len(data) // 2])
    follow.thread.start()
    early: list[Any] = []
    with contextlib.suppress(queue.Empty):
        early.append(follow.items.get(timeout=2.0))
    return follow, early


def finish(follow: Downloading, data: bytes) -> list[Any]:
    follow.write(data[follow.written :])
    follow.growing.finish(len(data))
    return follow.rest()


def arrive_all_but_the_end(tmp_path: Path, data: bytes) -> Downloading:
    """A reader that has read the members as they arrived, then is given the rest."""
    follow = Downloading(tmp_path / "export")
    follow.write(data[:-30])
    follow.thread.start()
    deadline = time.monotonic() + WAIT
    while not follow.reader.members and time.monotonic() < deadline:
        time.sleep(0.01)
    assert follow.reader.members, "a member was being read before the download ended"
    follow.write(data[-30:])
    follow.growing.finish(len(data))
    return follow


def outcome(follow: Downloading) -> Any:
    """The reader's error, or DONE."""
    while True:
        item = follow.items.get(timeout=WAIT)
        if item is DONE or isinstance(item, BaseException):
            return item


def whole_file_outcome(tmp_path: Path, data: bytes, **limits: Any) -> Any:
    path = tmp_path / "whole"
    path.write_bytes(data)
    try:
        with ExportReader(path, limits=ExportLimits(**limits)) as reader:
            return list(reader)
    except ExportError as error:
        return error


LAYOUTS = {
    "zip-root": lambda tmp_path: generated(tmp_path, ExportForm.ZIP),
    "zip-shards": lambda tmp_path: generated(tmp_path, ExportForm.ZIP_SHARDS),
    "zip-folder": lambda tmp_path: generated(tmp_path, ExportForm.ZIP_FOLDER),
    "deflate-descriptors": lambda tmp_path: with_descriptors(
        generated(tmp_path, ExportForm.ZIP_SHARDS)
    ),
    # ZIP64: the local headers carry a ZIP64 field, the descriptors 8-byte sizes.
    "deflate-descriptors-zip64": lambda tmp_path: with_descriptors(
        generated(tmp_path, ExportForm.ZIP_SHARDS), zip64=True
    ),
}


@pytest.mark.parametrize("helper", [False, True], ids=["guard-in-process", "scan-helper"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_streamable_zip_yields_before_the_download_ends_exactly_the_whole_file(
    tmp_path: Path, layout: str, helper: bool
) -> None:
    data = LAYOUTS[layout](tmp_path)
    expected = complete_read(tmp_path, data)
    follow, early = follow_half(tmp_path, data, helper=helper)
    assert early, "conversations come while half of the archive is still to arrive"
    assert not follow.growing.finished
    # The helper follows the download: it guards every member, and relays those whose size
    # is in the local header (a descriptor member is inflated here).
    assert (follow.reader._scan is not None) is helper
    assert 0 < follow.reader.progress < 0.6
    assert early + finish(follow, data) == expected
    assert follow.reader.progress == 1.0


def test_a_descriptor_archive_is_written_with_flag_bit_3(tmp_path: Path) -> None:
    data = with_descriptors(generated(tmp_path, ExportForm.ZIP_SHARDS))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert all(info.flag_bits & 0x8 for info in archive.infolist())


def test_stored_members_with_a_descriptor_need_the_whole_file(tmp_path: Path) -> None:
    data = with_descriptors(generated(tmp_path, ExportForm.ZIP_SHARDS), zipfile.ZIP_STORED)
    expected = complete_read(tmp_path, data)
    follow, early = follow_half(tmp_path, data)
    error = early[0] if early else outcome(follow)
    assert isinstance(error, NeedsWholeFile)
    assert not follow.growing.finished, "known as soon as such a member's header arrives"
    # What the parse then does: read the archive once it is whole, as without streaming.
    again = Downloading(tmp_path / "export", stream_zip=False)
    again.thread.start()
    assert finish(again, data) == expected


def _patch_directory(data: bytes, old: bytes, new: bytes) -> bytes:
    """Replaces ``old`` by ``new`` in the central directory only (the local headers keep it)."""
    start = data.index(b"PK\x01\x02")
    return data[:start] + data[start:].replace(old, new)


def test_a_member_renamed_in_the_directory_fails_as_the_whole_file_does(tmp_path: Path) -> None:
    entries = [("conversations.json", b'[{"title":"a","mapping":{}}]')]
    data = _patch_directory(zip_of(entries), b"conversations.json", b"conversationX.json")
    error = outcome(arrive_all_but_the_end(tmp_path, data))
    # The directory names no conversation file: the whole-file path's own error, at once.
    assert isinstance(error, ExportError)
    assert type(error) is type(whole_file_outcome(tmp_path, data))


def test_a_shard_renamed_in_the_directory_falls_back_and_the_whole_file_decides(
    tmp_path: Path,
) -> None:
    shard = b'[{"title":"a","mapping":{}}]'
    source = zip_of([("conversations-001.json", shard), ("conversations-003.json", shard)])
    data = _patch_directory(source, b"conversations-003.json", b"conversations-002.json")
    follow = arrive_all_but_the_end(tmp_path, data)
    assert isinstance(outcome(follow), NeedsWholeFile)
    assert isinstance(whole_file_outcome(tmp_path, data), CorruptArchive)


def test_a_directory_crc_that_differs_falls_back_and_the_whole_file_decides(
    tmp_path: Path,
) -> None:
    content = b"[" + b'{"title":"a","mapping":{}},' * 40 + b'{"mapping":{}}]'
    data = zip_of([("conversations.json", content)])
    crc = struct.pack("<I", zlib.crc32(content))
    wrong = struct.pack("<I", zlib.crc32(content) ^ 1)
    directory = data.index(b"PK\x01\x02")
    patched = data[:directory] + data[directory:].replace(crc, wrong, 1)
    assert patched != data
    follow = arrive_all_but_the_end(tmp_path, patched)
    assert isinstance(outcome(follow), NeedsWholeFile)
    assert isinstance(whole_file_outcome(tmp_path, patched), CorruptArchive)


@pytest.mark.parametrize("helper", [False, True], ids=["guard-in-process", "scan-helper"])
def test_a_local_crc_that_differs_falls_back(tmp_path: Path, helper: bool) -> None:
    content = b"[" + b'{"title":"a","mapping":{}},' * 40 + b'{"mapping":{}}]'
    data = zip_of([("conversations.json", content)])
    crc = struct.pack("<I", zlib.crc32(content))
    wrong = struct.pack("<I", zlib.crc32(content) ^ 1)
    directory = data.index(b"PK\x01\x02")
    patched = data[:directory].replace(crc, wrong, 1) + data[directory:]
    follow = Downloading(tmp_path / "export", helper=helper)
    follow.growing.total_known(len(patched))  # with ``helper``, large enough for it
    follow.write(patched)
    follow.thread.start()
    assert isinstance(outcome(follow), NeedsWholeFile)


def test_shards_out_of_order_need_the_whole_file(tmp_path: Path) -> None:
    shard = b'[{"title":"a","mapping":{}}]'
    data = zip_of([("conversations-002.json", shard), ("conversations-001.json", shard)])
    follow = Downloading(tmp_path / "export")
    follow.write(data)
    follow.thread.start()
    assert isinstance(outcome(follow), NeedsWholeFile)


def test_a_name_given_twice_needs_the_whole_file(tmp_path: Path) -> None:
    shard = b'[{"title":"a","mapping":{}}]'
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = zip_of([("conversations.json", shard), ("conversations.json", shard)])
    follow = Downloading(tmp_path / "export")
    follow.write(data)
    follow.thread.start()
    assert isinstance(outcome(follow), NeedsWholeFile)


def test_too_many_entries_stop_the_walk_at_the_cap_before_the_download_ends(
    tmp_path: Path,
) -> None:
    entries = [(f"media/{index}.bin", b"x") for index in range(400)]
    data = zip_of([*entries, ("conversations.json", b'[{"mapping":{}}]')])
    follow = Downloading(tmp_path / "export")
    follow.reader.limits = ExportLimits(scan_process_min_bytes=None, max_zip_entries=100)
    follow.write(data[:-100])
    follow.thread.start()
    error = outcome(follow)
    assert isinstance(error, NeedsWholeFile)
    assert error.reason == "too many entries"
    assert not follow.growing.finished
    assert isinstance(whole_file_outcome(tmp_path, data, max_zip_entries=100), TooManyZipEntries)


@pytest.mark.parametrize("helper", [False, True], ids=["guard-in-process", "scan-helper"])
def test_a_bomb_in_a_conversation_member_stops_early_and_the_whole_file_refuses_it(
    tmp_path: Path, helper: bool
) -> None:
    bomb = b"[" + b" " * 50_000_000 + b"]"
    data = zip_of([("conversations.json", bomb)])
    follow = Downloading(tmp_path / "export", helper=helper)
    follow.growing.total_known(len(data))  # with ``helper``, large enough for it
    follow.write(data)
    follow.thread.start()
    assert isinstance(outcome(follow), NeedsWholeFile)
    assert isinstance(whole_file_outcome(tmp_path, data), ZipBomb)


def test_a_bomb_among_skipped_descriptor_members_is_not_inflated(tmp_path: Path) -> None:
    bomb = b"\0" * 200_000_000
    source = zip_of([("media/a.bin", bomb), ("conversations.json", b'[{"mapping":{}}]')])
    data = with_descriptors(source)
    follow = Downloading(tmp_path / "export")
    follow.write(data)
    follow.thread.start()
    error = outcome(follow)
    assert isinstance(error, NeedsWholeFile)
    assert error.reason == "skipped member expands too much"


def test_huge_extra_fields_in_local_headers_stream(tmp_path: Path) -> None:
    content = b'[{"title":"a","mapping":{}}]'
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(5):
            info = zipfile.ZipInfo(f"media/{index}.bin")
            info.extra = struct.pack("<HH", 0xCAFE, 65_531) + b"\0" * 65_531
            archive.writestr(info, b"x")
        archive.writestr("conversations.json", content)
    data = buffer.getvalue()
    follow = arrive_all_but_the_end(tmp_path, data)
    assert follow.rest() == complete_read(tmp_path, data)


def test_an_encrypted_conversation_member_needs_the_whole_file(tmp_path: Path) -> None:
    data = bytearray(zip_of([("conversations.json", b'[{"mapping":{}}]')]))
    header = data.rindex(b"PK\x03\x04", 0, data.index(b"conversations.json"))
    data[header + 6] |= 0x1  # the local header's flags: encrypted
    follow = Downloading(tmp_path / "export")
    follow.write(bytes(data))
    follow.thread.start()
    assert isinstance(outcome(follow), NeedsWholeFile)
