"""The export reader against hostile uploads: a stalled helper, a stop request in the middle of a
long run of non-conversations, archives with too many entries, numbers no C parser can hold.

Each rule is tested with the worst input it must still accept and the worst it must refuse."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import signal
import struct
import time
import zipfile
from pathlib import Path
from typing import Any

import ijson
import pytest

from soulworker.errors import TransientJobError
from soulworker.export.errors import ExportError
from soulworker.export.numbers import MAX_NUMBER_CHARS, NumberQuoter
from soulworker.export.reader import (
    MAX_NON_OBJECT_ITEMS,
    READ_SIZE,
    ExportLimits,
    ExportReader,
)

IN_PROCESS = ExportLimits(scan_process_min_bytes=None)
HELPER = ExportLimits(scan_process_min_bytes=0)


class Stop(Exception):
    """What the test's interrupt raises."""


def conv(ident: str, **extra: Any) -> dict[str, Any]:
    return {"id": ident, "title": f"t {ident}", "mapping": {}, **extra}


def put(tmp_path: Path, data: bytes, name: str = "upload.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def make_zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def wordy_array(count: int) -> bytes:
    return json.dumps([conv(f"c{i}", text=f"{i} " * 200) for i in range(count)]).encode()


# -- a stalled helper ----------------------------------------------------------------------------


def test_a_stalled_helper_fails_the_read_as_transient_after_its_limit(tmp_path: Path) -> None:
    path = put(tmp_path, make_zip([("conversations.json", wordy_array(20_000))]))
    limits = ExportLimits(scan_process_min_bytes=0, helper_stall_seconds=1)
    reader = ExportReader(path, limits=limits)
    conversations = iter(reader)
    next(conversations)
    assert reader._scan is not None
    helper = reader._scan._process
    os.kill(helper.pid, signal.SIGSTOP)  # alive, silent: the pipe empties and nothing follows
    started = time.monotonic()
    try:
        with pytest.raises(TransientJobError) as caught:
            for _ in conversations:
                pass
    finally:
        if helper.poll() is None:
            os.kill(helper.pid, signal.SIGCONT)
    assert caught.value.code == "export_scan_stalled"
    assert time.monotonic() - started < 30
    helper.wait(timeout=10)  # killed, and reaped by the reader's close


def test_a_stop_request_ends_a_wait_for_a_stalled_helper(tmp_path: Path) -> None:
    path = put(tmp_path, make_zip([("conversations.json", wordy_array(20_000))]))
    stop = False

    def interrupt() -> None:
        if stop:
            raise Stop()

    reader = ExportReader(path, limits=HELPER, interrupt=interrupt)
    conversations = iter(reader)
    next(conversations)
    assert reader._scan is not None
    helper = reader._scan._process
    os.kill(helper.pid, signal.SIGSTOP)
    stop = True
    try:
        with pytest.raises(Stop):
            for _ in conversations:
                pass
    finally:
        if helper.poll() is None:
            os.kill(helper.pid, signal.SIGCONT)
    assert helper.wait(timeout=10) is not None  # the reader closed it on the way out


# -- a stop request inside one long step of the parser ------------------------------------------


@pytest.mark.parametrize("limits", [IN_PROCESS, HELPER], ids=["in-process", "helper"])
def test_one_huge_item_is_interrupted_within_a_few_reads(
    tmp_path: Path, limits: ExportLimits
) -> None:
    # One 8 MB object is one step of the parser: only the per-read interrupt can stop it early.
    data = b'[{"id": "a", "x": [' + b"0," * 4_000_000 + b"0]}]"
    path = put(tmp_path, data, "huge.json")
    reads = 0

    def interrupt() -> None:
        nonlocal reads
        reads += 1
        if reads == 3:
            raise Stop()

    reader = ExportReader(path, limits=limits, interrupt=interrupt)
    with pytest.raises(Stop):
        list(reader)
    assert reader.uncompressed_bytes_read <= 3 * READ_SIZE


# -- entries that are not objects ----------------------------------------------------------------


def test_up_to_the_limit_of_non_objects_the_export_is_read(tmp_path: Path) -> None:
    items = b"0," * MAX_NON_OBJECT_ITEMS
    path = put(tmp_path, b"[" + items + json.dumps(conv("a")).encode() + b"]", "zeros.json")
    reader = ExportReader(path, limits=IN_PROCESS)
    assert [item["id"] for item in reader] == ["a"]
    assert reader.skipped_items == MAX_NON_OBJECT_ITEMS


@pytest.mark.parametrize(
    "lead", [b"", json.dumps(conv("a")).encode() + b","], ids=["alone", "after-a-conversation"]
)
def test_more_non_objects_than_the_limit_are_refused_early(tmp_path: Path, lead: bytes) -> None:
    # 4 million zeros (8 MB): refused at the limit, long before the end.
    path = put(tmp_path, b"[" + lead + b"0," * 4_000_000 + b"0]", "zeros.json")
    reader = ExportReader(path, limits=IN_PROCESS)
    with pytest.raises(ExportError) as caught:
        list(reader)
    assert caught.value.code == "not_an_export"
    assert f"more than {MAX_NON_OBJECT_ITEMS:,} entries" in caught.value.message
    assert reader.uncompressed_bytes_read < 1024 * 1024


# -- ZIP entries ---------------------------------------------------------------------------------


def media_zip(files: int, *, name_bytes: int = 20) -> bytes:
    """A valid export ZIP: conversations.json plus ``files`` one-byte media files."""
    entries = [("conversations.json", json.dumps([conv("a")]).encode())]
    entries += [(f"media/{n:0{name_bytes - 6}d}", b"x") for n in range(files)]
    return make_zip(entries, zipfile.ZIP_STORED)


def entries_limit(count: int) -> ExportLimits:
    return ExportLimits(scan_process_min_bytes=None, max_zip_entries=count)


def test_a_zip_with_exactly_the_allowed_entries_is_read(tmp_path: Path) -> None:
    path = put(tmp_path, media_zip(999), "export.zip")  # 1,000 entries in all
    reader = ExportReader(path, limits=entries_limit(1000))
    assert [item["id"] for item in reader] == ["a"]


def test_a_zip_with_one_entry_too_many_is_refused_before_its_directory_is_read(
    tmp_path: Path,
) -> None:
    path = put(tmp_path, media_zip(1000), "export.zip")
    with pytest.raises(ExportError) as caught:
        list(ExportReader(path, limits=entries_limit(1000)))
    assert caught.value.code == "zip_too_many_entries"
    assert "more than 1,000 files" in caught.value.message


def _declare_entries(data: bytes, count: int) -> bytes:
    """The same ZIP with its end record claiming ``count`` entries."""
    at = data.rindex(b"PK\x05\x06")
    return data[: at + 8] + struct.pack("<HH", count, count) + data[at + 12 :]


def test_a_zip_lying_about_its_entry_count_is_counted_by_its_directory(tmp_path: Path) -> None:
    data = _declare_entries(media_zip(1500), 2)
    path = put(tmp_path, data, "export.zip")
    with zipfile.ZipFile(path) as archive:  # what zipfile itself would build
        assert len(archive.infolist()) == 1501
    with pytest.raises(ExportError) as caught:
        list(ExportReader(path, limits=entries_limit(1000)))
    assert caught.value.code == "zip_too_many_entries"


def test_a_zip_whose_directory_is_too_large_for_its_entries_is_refused(tmp_path: Path) -> None:
    # 100 entries with 60 KB names: a 6 MB directory, far over 512 bytes an entry.
    entries = [("conversations.json", json.dumps([conv("a")]).encode())]
    entries += [(f"media/{n:060000d}", b"x") for n in range(100)]
    path = put(tmp_path, make_zip(entries, zipfile.ZIP_STORED), "export.zip")
    with pytest.raises(ExportError) as caught:
        list(ExportReader(path, limits=entries_limit(1000)))
    assert caught.value.code == "zip_too_many_entries"


def test_a_zip64_directory_is_capped_and_read_within_the_cap(tmp_path: Path) -> None:
    # Over 65,535 entries, zipfile writes zip64 end records: the cap reads those.
    path = put(tmp_path, media_zip(70_000, name_bytes=12), "export.zip")
    with pytest.raises(ExportError) as caught:
        list(ExportReader(path, limits=entries_limit(50_000)))
    assert caught.value.code == "zip_too_many_entries"
    reader = ExportReader(path, limits=entries_limit(70_001))
    assert [item["id"] for item in reader] == ["a"]


def test_only_the_conversation_members_stay_in_memory(tmp_path: Path) -> None:
    from soulworker.export.zip_members import find_conversation_members, keep_only

    with zipfile.ZipFile(io.BytesIO(media_zip(500))) as archive:
        members = find_conversation_members(archive)
        keep_only(archive, members)
        assert [info.filename for info in archive.infolist()] == ["conversations.json"]
        with archive.open(members[0].info) as member:
            assert json.loads(member.read()) == [conv("a")]


# -- numbers the C parser cannot hold ----------------------------------------------------------


def quote_in_pieces(data: bytes, cut: int) -> tuple[bytes, int]:
    quoter = NumberQuoter()
    out = b"".join(quoter.feed(data[i : i + cut]) for i in range(0, len(data), cut))
    return out + quoter.finish(), quoter.quoted


def yajl_items(data: bytes) -> list[Any]:
    backend = ijson.get_backend("yajl2_c")
    return list(backend.items(io.BytesIO(data), "item", use_float=True))


@pytest.mark.parametrize(
    ("number", "quoted"),
    [
        ("9223372036854775807", False),  # the largest yajl holds
        ("9223372036854775808", True),
        ("-9223372036854775807", False),
        ("-9223372036854775808", True),  # yajl negates the magnitude: this one overflows
        ("1" * 4301, True),  # over Python's own int() digit limit
        ("1.7976931348623157e308", False),
        ("1e309", True),
        ("-1e309", True),
        ("1e-400", False),  # underflow is a zero to yajl, not an error
        ("0.000001", False),
        ("1" * 400 + ".5", True),
    ],
)
def test_exactly_the_numbers_yajl_refuses_are_quoted(number: str, quoted: bool) -> None:
    data = f'[{number}, "{number}"]'.encode()
    if not quoted:
        yajl_items(data)  # the parser holds it as it is
    else:
        with pytest.raises(ijson.JSONError):
            yajl_items(data)
    for cut in (1, 2, 3, 7, len(data)):
        out, count = quote_in_pieces(data, cut)
        assert count == int(quoted)
        items = yajl_items(out)
        assert items[1] == number  # the same digits inside a string are never touched
        assert (items[0] == number) if quoted else (out == data)


def test_quoting_follows_strings_and_escapes_across_any_cut() -> None:
    rng = random.Random(7)
    values: list[Any] = []
    for _ in range(300):
        choice = rng.randrange(5)
        if choice == 0:
            values.append(rng.randrange(10**18, 10**30))
        elif choice == 1:
            values.append(-rng.randrange(10**18, 10**30))
        elif choice == 2:
            values.append(f'say "{rng.randrange(10**25)}" \\ {rng.randrange(10**25)}')
        elif choice == 3:
            values.append(rng.random() * 10 ** rng.randrange(-5, 5))
        else:
            values.append({'k\\"': [rng.randrange(10**25), "\\", '\\\\"']})
    data = json.dumps(values).encode()

    def as_yajl(text: str) -> int | str:
        return int(text) if abs(int(text)) < 2**63 else text

    expected = json.loads(data, parse_int=as_yajl)
    for cut in (1, 2, 5, 13, 64, 4096):
        out, _ = quote_in_pieces(data, cut)
        assert yajl_items(out) == expected


def test_a_number_longer_than_the_hold_limit_streams_as_a_string() -> None:
    digits = "7" * (MAX_NUMBER_CHARS * 3)
    data = f"[{digits}, 1]".encode()
    out, count = quote_in_pieces(data, 1000)
    assert count == 1
    assert yajl_items(out) == [digits, 1]


def big_number_export(number: str) -> bytes:
    items = [conv("a"), conv("b", create_time="X"), conv("c")]
    return json.dumps(items).replace('"X"', number).encode()


@pytest.mark.parametrize("number", ["9223372036854775808", "1" * 4301, "1e400", "9" * 1_000_000])
@pytest.mark.parametrize("form", ["json", "gzip", "zip", "zip-relayed"])
def test_a_valid_export_with_huge_numbers_is_read_whole(
    tmp_path: Path, number: str, form: str
) -> None:
    data = big_number_export(number)
    limits = HELPER if form == "zip-relayed" else IN_PROCESS
    if form == "gzip":
        path = put(tmp_path, gzip.compress(data), "export.json.gz")
    elif form.startswith("zip"):
        path = put(tmp_path, make_zip([("conversations.json", data)]), "export.zip")
    else:
        path = put(tmp_path, data, "export.json")
    reader = ExportReader(path, limits=limits)
    items = list(reader)
    assert [item["id"] for item in items] == ["a", "b", "c"]  # each once, in order
    assert items[1]["create_time"] == number
    assert reader.numbers_quoted == 1
    assert reader.uncompressed_bytes_read == len(data)  # the second reading is not counted twice


def test_damage_after_a_huge_number_is_still_reported(tmp_path: Path) -> None:
    data = big_number_export("9223372036854775808")
    damaged = data[:-1] + b"@]"  # a stray byte after the last conversation
    with pytest.raises(ExportError) as caught:
        list(ExportReader(put(tmp_path, damaged, "export.json"), limits=IN_PROCESS))
    assert caught.value.code == "invalid_json"
    assert caught.value.offset is not None
    assert caught.value.offset <= len(data) - 1  # near: the start of the buffer that held it


def test_a_cut_off_export_with_a_huge_number_is_truncated(tmp_path: Path) -> None:
    data = big_number_export("9223372036854775808")
    with pytest.raises(ExportError) as caught:
        list(ExportReader(put(tmp_path, data[:-30], "export.json"), limits=IN_PROCESS))
    assert caught.value.code == "export_truncated"
