"""The export reader on hand-made bytes and on generated exports: sniffing, ZIP layout,
wrapping, every error with its code and offset, archive limits and hostile structure."""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import ijson
import pytest

from soulworker.errors import PermanentJobError
from soulworker.export import reader as export_reader
from soulworker.export.errors import ExportError
from soulworker.export.reader import (
    READ_SIZE,
    ExportLimits,
    ExportReader,
    SlowJsonBackend,
    fast_json_backend_problem,
    require_fast_json_backend,
)
from soulworker.export.sniff import ExportKind
from soulworker.testing.export_generator import ExportForm, Feature, GeneratorConfig, write_export

IN_PROCESS = ExportLimits(scan_process_min_bytes=None)
HELPER = ExportLimits(scan_process_min_bytes=0)


def conv(ident: str, **extra: Any) -> dict[str, Any]:
    return {"id": ident, "title": f"t {ident}", "mapping": {}, **extra}


def array(*idents: str) -> bytes:
    return json.dumps([conv(i) for i in idents]).encode()


def put(tmp_path: Path, data: bytes, name: str = "upload.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read(
    path: Path, limits: ExportLimits = IN_PROCESS
) -> tuple[list[dict[str, Any]], ExportReader]:
    reader = ExportReader(path, limits=limits)
    return list(reader), reader


def ids(path: Path, limits: ExportLimits = IN_PROCESS) -> list[str]:
    return [item["id"] for item in read(path, limits)[0]]


def failure(path: Path, limits: ExportLimits = IN_PROCESS) -> tuple[ExportError, list[str]]:
    """The error reading ``path`` raises, and the ids yielded before it."""
    seen: list[str] = []
    with pytest.raises(ExportError) as caught:
        for item in ExportReader(path, limits=limits):
            seen.append(item["id"])
    assert isinstance(caught.value, PermanentJobError)
    return caught.value, seen


def make_zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def patch_central(data: bytes, name: str, **fields: int) -> bytes:
    """Rewrites fields of ``name``'s central directory record: flags, method, crc, file_size."""
    out = bytearray(data)
    position = out.find(b"PK\x01\x02")
    while position >= 0:
        name_length = struct.unpack_from("<H", out, position + 28)[0]
        if out[position + 46 : position + 46 + name_length] == name.encode():
            offsets = {
                "flags": (8, "<H"),
                "method": (10, "<H"),
                "crc": (16, "<I"),
                "file_size": (24, "<I"),
            }
            for field, value in fields.items():
                offset, fmt = offsets[field]
                struct.pack_into(fmt, out, position + offset, value)
            return bytes(out)
        position = out.find(b"PK\x01\x02", position + 4)
    raise AssertionError(f"{name} not in the archive")


# -- plain JSON ------------------------------------------------------------------------------


def test_a_bare_array_yields_every_conversation_in_file_order(tmp_path: Path) -> None:
    items, reader = read(put(tmp_path, array("a", "b", "c")))
    assert [item["id"] for item in items] == ["a", "b", "c"]
    assert items[0] == conv("a")
    assert reader.kind is ExportKind.JSON
    assert reader.conversations_read == 3


def test_floats_come_back_as_float_not_decimal(tmp_path: Path) -> None:
    items, _ = read(put(tmp_path, b'[{"id": "a", "create_time": 1714585031.148505}]'))
    assert type(items[0]["create_time"]) is float


def test_a_wrapped_export_is_read_whatever_the_key_order(tmp_path: Path) -> None:
    data = json.dumps({"user": {"x": [1]}, "conversations": [conv("a"), conv("b")]}).encode()
    assert ids(put(tmp_path, data)) == ["a", "b"]


def test_a_bom_and_leading_whitespace_are_skipped_and_counted_in_offsets(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf \n\t" + array("a", "b")
    assert ids(put(tmp_path, data)) == ["a", "b"]
    error, _ = failure(put(tmp_path, data[:-3], "cut.json"))
    assert error.code == "export_truncated"
    assert error.offset == len(data) - 3


def test_items_that_are_not_objects_are_counted_and_not_yielded(tmp_path: Path) -> None:
    items, reader = read(put(tmp_path, b'[1, "x", {"id": "a"}, null, [2], {"id": "b"}]'))
    assert [item["id"] for item in items] == ["a", "b"]
    assert reader.skipped_items == 4


@pytest.mark.parametrize(
    ("data", "looks_like"),
    [
        (b"%PDF-1.7\n%\xe2\xe3", "a PDF document"),
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", "a web page (HTML)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "a JPEG image"),
        (b"Rar!\x1a\x07\x01\x00", "a RAR archive"),
        (b"7z\xbc\xaf\x27\x1c\x00\x04", "a 7-Zip archive"),
        (b"id,title\n1,hello\n", "plain text"),
        (b'"just a string"', "a single JSON value"),
        (b"12345", "a single JSON value"),
    ],
)
def test_other_files_are_not_an_export_and_say_what_they_look_like(
    tmp_path: Path, data: bytes, looks_like: str
) -> None:
    error, _ = failure(put(tmp_path, data))
    assert error.code == "not_an_export"
    assert looks_like in str(error)


def test_utf16_text_is_an_encoding_error(tmp_path: Path) -> None:
    error, _ = failure(put(tmp_path, '[{"id": "a"}]'.encode("utf-16")))
    assert error.code == "invalid_utf8"
    assert "UTF-16" in str(error)


@pytest.mark.parametrize("data", [b"", b"   \n\t  ", b"\xef\xbb\xbf", b" " * 5000])
def test_an_empty_or_blank_file_is_an_empty_export(tmp_path: Path, data: bytes) -> None:
    error, _ = failure(put(tmp_path, data))
    assert error.code == "empty_export"


def test_json_after_long_leading_whitespace_is_still_json(tmp_path: Path) -> None:
    assert ids(put(tmp_path, b" " * 5000 + array("a"))) == ["a"]


@pytest.mark.parametrize(
    ("data", "code", "phrase"),
    [
        (b"[]", "empty_export", "no conversations"),
        (b'{"conversations": []}', "empty_export", "no conversations"),
        (b'{"user": {"id": 1}}', "not_an_export", "without a conversations list"),
        (b'{"conversations": {"a": 1}}', "not_an_export", "not a list"),
        (json.dumps(conv("a")).encode(), "not_an_export", "single conversation"),
        (b"[1, 2, 3]", "not_an_export", "holds no conversations"),
    ],
)
def test_shapes_without_conversations_get_the_right_error(
    tmp_path: Path, data: bytes, code: str, phrase: str
) -> None:
    error, _ = failure(put(tmp_path, data))
    assert error.code == code
    assert phrase in str(error)


def test_content_decides_the_kind_not_the_name(tmp_path: Path) -> None:
    zipped = put(tmp_path, make_zip([("conversations.json", array("z"))]), "conversations.json")
    assert ids(zipped) == ["z"]
    plain = put(tmp_path, array("j"), "export.zip")
    assert ids(plain) == ["j"]


# -- errors with offsets --------------------------------------------------------------------


def test_a_truncated_file_reports_where_it_ends(tmp_path: Path) -> None:
    data = array("a", "b", "c")
    cut = data[: data.index(b'"c"') + 2]
    error, seen = failure(put(tmp_path, cut))
    assert error.code == "export_truncated"
    assert error.offset == len(cut)
    assert f"byte {len(cut):,}" in str(error)
    assert seen == ["a", "b"]


def test_invalid_utf8_reports_the_exact_byte(tmp_path: Path) -> None:
    data = b'[{"id": "a", "text": "fine \xff here"}]'
    error, _ = failure(put(tmp_path, data))
    assert error.code == "invalid_utf8"
    assert error.offset == data.index(b"\xff")


def test_invalid_utf8_split_across_reads_reports_the_exact_byte(tmp_path: Path) -> None:
    # The reader's first read is the 512-byte sniff, then READ_SIZE reads: put a broken
    # three-byte sequence across the first READ_SIZE boundary.
    boundary = 512 + READ_SIZE
    prefix = b'[{"id": "a", "text": "'
    filler = b"x" * (boundary - 1 - len(prefix))
    data = prefix + filler + b"\xe2\x82" + b'"}]'  # \xe2\x82 needs a third byte; '"' is not one
    assert data.index(b"\xe2") == boundary - 1
    error, _ = failure(put(tmp_path, data))
    assert error.code == "invalid_utf8"
    assert error.offset == boundary - 1


def test_a_syntax_error_far_into_the_file_is_located_exactly(tmp_path: Path) -> None:
    good = [conv(f"c{i}", text="y" * 3000) for i in range(100)]  # ~300 KB before the damage
    data = json.dumps(good).encode()[:-1] + b", {x}]"
    error, seen = failure(put(tmp_path, data))
    assert error.code == "invalid_json"
    assert error.offset == data.index(b"{x}") + 1
    assert len(seen) >= 90  # conversations before the damage were delivered


def test_trailing_garbage_after_the_array_is_invalid_json(tmp_path: Path) -> None:
    data = array("a") + b"\n[]"
    error, seen = failure(put(tmp_path, data))
    assert error.code == "invalid_json"
    assert error.offset == len(data) - 2
    assert seen == ["a"]


def test_parser_messages_never_leak_conversation_text(tmp_path: Path) -> None:
    secret = "SECRET-diagnosis-text"
    data = json.dumps([conv("a", text=secret)]).encode()
    for broken in (
        data[:-5],
        data.replace(b'"text"', b"text"),
        data.replace(b"SECRET", b"\xffECRET"),
    ):
        error, _ = failure(put(tmp_path, broken, "x.json"))
        assert secret not in str(error)
        assert "SECRET" not in str(error)


# -- ZIP layout -----------------------------------------------------------------------------


def test_zip_reads_only_conversation_files_and_ignores_decoys(tmp_path: Path) -> None:
    data = make_zip(
        [
            ("chat.html", b"<html>[{}]</html>"),
            ("shared_conversations.json", array("shared")),
            ("conversations.json.index", b"\x00\x01\x02"),
            ("user.json", b'{"id": "user-1"}'),
            ("file-abc-IMG_1.jpeg", b"\xff\xd8\xff"),
            ("conversations.json", array("a", "b")),
            ("__MACOSX/._conversations.json", b"\x00\x05\x16\x07"),
        ]
    )
    items, reader = read(put(tmp_path, data))
    assert [item["id"] for item in items] == ["a", "b"]
    assert reader.members == ("conversations.json",)
    assert reader.kind is ExportKind.ZIP


def test_shards_are_read_in_numeric_order(tmp_path: Path) -> None:
    data = make_zip(
        [
            ("conversations-10.json", array("ten")),
            ("conversations-2.json", array("two")),
            ("conversations-000.json", array("zero")),
            ("conversations-1.json", array("one")),
        ]
    )
    assert ids(put(tmp_path, data)) == ["zero", "one", "two", "ten"]


def test_files_inside_one_folder_are_found(tmp_path: Path) -> None:
    data = make_zip(
        [
            ("My Export/conversations-001.json", array("b")),
            ("My Export/conversations-000.json", array("a")),
        ]
    )
    items, reader = read(put(tmp_path, data))
    assert [item["id"] for item in items] == ["a", "b"]
    assert reader.members == (
        "My Export/conversations-000.json",
        "My Export/conversations-001.json",
    )


def test_both_names_and_copies_in_a_folder_are_all_read(tmp_path: Path) -> None:
    data = make_zip(
        [
            ("export/conversations.json", array("folder")),
            ("conversations-000.json", array("shard")),
            ("conversations.json", array("root")),
        ]
    )
    assert ids(put(tmp_path, data)) == ["root", "shard", "folder"]


@pytest.mark.parametrize(
    ("entries", "hint"),
    [
        ([("a/b/conversations.json", b"[]")], "more than one folder deep"),
        ([("export.zip", b"PK\x03\x04")], "another ZIP"),
        ([("chat.html", b"<html>"), ("user.json", b"{}")], "chat.html"),
        ([("[Content_Types].xml", b"<Types/>")], "Office document"),
        ([("notes.txt", b"hi"), ("pic.png", b"x")], "2 other files"),
    ],
)
def test_a_zip_without_conversation_files_says_what_it_holds(
    tmp_path: Path, entries: list[tuple[str, bytes]], hint: str
) -> None:
    error, _ = failure(put(tmp_path, make_zip(entries)))
    assert error.code == "no_conversations_file"
    assert hint in str(error)


def test_an_empty_archive_has_no_conversations_file(tmp_path: Path) -> None:
    error, _ = failure(put(tmp_path, make_zip([])))
    assert error.code == "no_conversations_file"
    assert "empty" in str(error)


def test_empty_members_are_skipped_but_an_all_empty_export_is_refused(tmp_path: Path) -> None:
    data = make_zip([("conversations-000.json", b""), ("conversations-001.json", b"[]")])
    error, _ = failure(put(tmp_path, data))
    assert error.code == "empty_export"


# -- archive damage and limits ---------------------------------------------------------------


def test_a_crc_failure_surfaces_at_the_end_of_the_member(tmp_path: Path) -> None:
    body = json.dumps([conv(f"c{i}", text="w" * 1000) for i in range(400)]).encode()
    data = make_zip([("conversations.json", body)], zipfile.ZIP_STORED)
    position = data.index(b"t c1")  # a letter inside an early title: the JSON stays valid
    damaged = data[:position] + b"T" + data[position + 1 :]
    error, seen = failure(put(tmp_path, damaged))
    assert error.code == "corrupt_archive"
    assert error.member == "conversations.json"
    # The damage is near the start, yet it is only found once the member is read to its end:
    # everything but the last read's conversations was already delivered.
    assert 300 < len(seen) < 400


def test_a_truncated_zip_is_a_corrupt_archive(tmp_path: Path) -> None:
    data = make_zip([("conversations.json", array("a", "b"))])
    error, _ = failure(put(tmp_path, data[: len(data) // 2]))
    assert error.code == "corrupt_archive"


def test_a_member_declaring_a_bomb_ratio_is_refused_before_reading(tmp_path: Path) -> None:
    data = make_zip([("conversations.json", b"[" + b" " * 20_000_000 + b"]")])
    error, _ = failure(put(tmp_path, data))
    assert error.code == "zip_bomb"
    assert error.member == "conversations.json"


def test_declared_sizes_over_the_limit_are_refused_before_reading(tmp_path: Path) -> None:
    data = make_zip(
        [("conversations-000.json", array("a")), ("conversations-001.json", array("b"))]
    )
    limit = len(array("a")) + 10
    error, _ = failure(
        put(tmp_path, data), ExportLimits(max_export_bytes=limit, scan_process_min_bytes=None)
    )
    assert error.code == "export_too_large"


def test_a_lying_size_in_the_central_directory_fails_the_member(tmp_path: Path) -> None:
    body = array(*(f"c{i}" for i in range(50)))
    data = patch_central(
        make_zip([("conversations.json", body)]), "conversations.json", file_size=len(body) // 3
    )
    error, seen = failure(put(tmp_path, data))
    assert error.code in ("corrupt_archive", "export_truncated", "invalid_json")
    assert len(seen) < 50


def test_an_encrypted_member_is_refused(tmp_path: Path) -> None:
    data = patch_central(
        make_zip([("conversations.json", array("a"))]), "conversations.json", flags=0x1
    )
    error, _ = failure(put(tmp_path, data))
    assert error.code == "encrypted_archive"


def test_an_unsupported_compression_method_is_named(tmp_path: Path) -> None:
    data = patch_central(
        make_zip([("conversations.json", array("a"))]), "conversations.json", method=9
    )
    error, _ = failure(put(tmp_path, data))
    assert error.code == "unsupported_archive"
    assert "Deflate64" in str(error)


def test_gzip_is_read_and_its_damage_reported(tmp_path: Path) -> None:
    body = array(*(f"c{i}" for i in range(200)))
    packed = gzip.compress(body)
    assert ids(put(tmp_path, packed)) == [f"c{i}" for i in range(200)]
    error, _ = failure(put(tmp_path, packed[: len(packed) - 40], "cut.gz"))
    assert error.code == "export_truncated"
    crc = bytearray(packed)
    crc[-8] ^= 0xFF  # the CRC-32 in the trailer
    error, _ = failure(put(tmp_path, bytes(crc), "crc.gz"))
    assert error.code == "corrupt_archive"
    assert error.offset is None  # found at the end; the damage can be anywhere


def test_gzip_expanding_like_a_bomb_is_refused_while_streaming(tmp_path: Path) -> None:
    packed = gzip.compress(b"[" + b" " * 30_000_000 + b"]")
    error, _ = failure(put(tmp_path, packed))
    assert error.code == "zip_bomb"


def test_gzip_over_the_size_limit_is_refused_while_streaming(tmp_path: Path) -> None:
    body = array(*(f"c{i}" for i in range(2000)))
    limits = ExportLimits(max_export_bytes=len(body) // 2, scan_process_min_bytes=None)
    error, seen = failure(put(tmp_path, gzip.compress(body)), limits)
    assert error.code == "export_too_large"
    assert 0 < len(seen) < 2000


def test_gzip_holding_something_else_is_not_an_export(tmp_path: Path) -> None:
    error, _ = failure(put(tmp_path, gzip.compress(b"%PDF-1.4 ...")))
    assert error.code == "not_an_export"
    assert "PDF" in str(error)


def test_one_oversized_conversation_is_refused(tmp_path: Path) -> None:
    data = json.dumps([conv("small"), conv("big", text="x" * 300_000)]).encode()
    limits = ExportLimits(max_conversation_bytes=200_000, scan_process_min_bytes=None)
    error, seen = failure(put(tmp_path, data), limits)
    assert error.code == "conversation_too_large"
    assert seen == ["small"]
    assert ids(put(tmp_path, data, "ok.json"), ExportLimits(max_conversation_bytes=400_000)) == [
        "small",
        "big",
    ]


# -- hostile structure ----------------------------------------------------------------------


@pytest.mark.parametrize("limits", [IN_PROCESS, HELPER], ids=["in-process", "helper"])
def test_deep_arrays_are_refused_at_the_first_byte_too_deep(
    tmp_path: Path, limits: ExportLimits
) -> None:
    data = b'[{"id": "a"}, ' + b"[" * 300_000
    error, seen = failure(put(tmp_path, data), limits)
    assert error.code == "nesting_too_deep"
    assert error.offset == data.index(b"[[") + 127  # the 129th level
    assert seen == ["a"]


@pytest.mark.parametrize("limits", [IN_PROCESS, HELPER], ids=["in-process", "helper"])
def test_deep_objects_are_refused_at_the_first_byte_too_deep(
    tmp_path: Path, limits: ExportLimits
) -> None:
    data = b"[" + b'{"a":' * 100_000
    error, _ = failure(put(tmp_path, data), limits)
    assert error.code == "nesting_too_deep"
    assert error.offset == 1 + 5 * 127
    assert "128 levels" in str(error)


@pytest.mark.parametrize("limits", [IN_PROCESS, HELPER], ids=["in-process", "helper"])
def test_a_long_key_is_refused_and_a_long_value_is_not(
    tmp_path: Path, limits: ExportLimits
) -> None:
    key = "k" * 5000
    error, _ = failure(put(tmp_path, json.dumps([{key: [[1]]}]).encode()), limits)
    assert error.code == "nesting_too_deep"
    assert "key longer than" in str(error)
    assert ids(
        put(tmp_path, json.dumps([conv("v", text=key * 100)]).encode(), "v.json"), limits
    ) == ["v"]


def _peak_rss_kib(path: Path) -> int:
    code = (
        "import resource, sys\n"
        "from soulworker.export.reader import ExportReader, ExportLimits\n"
        "from soulworker.export.errors import ExportError\n"
        "try:\n"
        "    limits = ExportLimits(scan_process_min_bytes=None)\n"
        "    for _ in ExportReader(sys.argv[1], limits=limits): pass\n"
        "except ExportError:\n"
        "    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, check=True, timeout=60
    )
    return int(result.stdout)


def test_hostile_nesting_costs_no_more_memory_than_a_normal_export(tmp_path: Path) -> None:
    normal = tmp_path / "normal.json"
    write_export(normal, GeneratorConfig(seed=3, target_bytes=2_000_000))
    normal_peak = _peak_rss_kib(normal)
    hostile = {
        "arrays.json": b"[" * 400_000,
        "objects.json": b"[" + b'{"a":' * 100_000,
        "keys.json": b"[" + (b'{"' + b"k" * 1000 + b'":') * 126 + b"1" + b"}" * 126 + b"]",
        "huge-key.json": b'[{"' + b"k" * 1_000_000 + b'":' + b"[" * 120 + b"]" * 120 + b"}]",
    }
    for name, data in hostile.items():
        peak = _peak_rss_kib(put(tmp_path, data, name))
        # Without the guard the first two cost gigabytes (ijson's path strings grow with the
        # square of the depth); the third is the worst case the limits allow.
        assert peak < normal_peak + 16 * 1024, (name, peak, normal_peak)


# -- progress and counters ------------------------------------------------------------------


def test_progress_rises_to_one_and_counters_add_up(tmp_path: Path) -> None:
    data = json.dumps([conv(f"c{i}", text="z" * 2000) for i in range(300)]).encode()
    path = put(tmp_path, data)
    reader = ExportReader(path, limits=IN_PROCESS)
    seen = [reader.progress]
    for _ in reader:
        seen.append(reader.progress)
    assert seen == sorted(seen)
    assert seen[0] == 0.0
    assert 0.0 < seen[len(seen) // 2] < 1.0
    assert reader.progress == 1.0
    assert reader.input_bytes_read == reader.input_bytes_total == len(data)
    assert reader.uncompressed_bytes_read == len(data)


def test_zip_progress_counts_compressed_member_bytes(tmp_path: Path) -> None:
    bodies = [
        json.dumps([conv(f"{shard}-{i}", text="q" * 900) for i in range(100)]).encode()
        for shard in range(3)
    ]
    path = put(
        tmp_path, make_zip([(f"conversations-00{n}.json", body) for n, body in enumerate(bodies)])
    )
    reader = ExportReader(path, limits=IN_PROCESS)
    middle = []
    for number, _ in enumerate(reader):
        if number == 150:
            middle.append(reader.progress)
            assert reader.current_member == "conversations-001.json"
    with zipfile.ZipFile(path) as archive:
        compressed = sum(info.compress_size for info in archive.infolist())
    assert 0.3 < middle[0] < 0.7
    assert reader.input_bytes_read == compressed
    assert reader.uncompressed_bytes_read == sum(len(body) for body in bodies)


# -- generated exports, every form, both guard modes ----------------------------------------


@pytest.mark.parametrize("form", list(ExportForm), ids=lambda form: form.value)
@pytest.mark.parametrize("limits", [IN_PROCESS, HELPER], ids=["in-process", "helper"])
def test_every_generated_form_reads_back_completely(
    tmp_path: Path, form: ExportForm, limits: ExportLimits
) -> None:
    config = GeneratorConfig(
        seed=11,
        conversations=60,
        form=form,
        shard_bytes=200_000,
        rates={Feature.DUPLICATES: 0.2, Feature.UNICODE: 0.5},
    )
    summary = write_export(tmp_path / f"export.{form.value}", config, collect_facts=True)
    assert summary.expected is not None
    items, reader = read(summary.path, limits)
    assert len(items) == summary.items_written
    assert {item["id"] for item in items} == set(summary.expected)
    assert reader.skipped_items == 0
    if form is ExportForm.ZIP_SHARDS:
        assert len(reader.members) == len(summary.members) > 1


def test_ensure_ascii_exports_read_back_identically(tmp_path: Path) -> None:
    raw = write_export(tmp_path / "raw.json", GeneratorConfig(seed=5, conversations=30))
    escaped = write_export(
        tmp_path / "esc.json", GeneratorConfig(seed=5, conversations=30, ensure_ascii=True)
    )
    assert escaped.path.read_bytes().isascii()
    assert read(raw.path)[0] == read(escaped.path)[0]


# -- the helper process, the backend check, the iterator contract ---------------------------


def test_the_helper_process_is_stopped_when_iteration_stops_early(tmp_path: Path) -> None:
    path = write_export(tmp_path / "e.json", GeneratorConfig(seed=2, conversations=40)).path
    reader = ExportReader(path, limits=HELPER)
    iterator = iter(reader)
    next(iterator)
    scan = reader._scan
    assert scan is not None
    reader.close()
    assert scan._process.returncode is not None


def _wordy_array(count: int) -> bytes:
    """``count`` conversations of ~1 KB of digits: compressible, but not like a bomb."""
    rng = random.Random(count)
    return json.dumps(
        [conv(f"c{i}", text=" ".join(str(rng.random()) for _ in range(50))) for i in range(count)]
    ).encode()


def _with_bad_crc(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        crc = archive.getinfo(name).CRC
    return patch_central(data, name, crc=crc ^ 0xFFFF)


def _read_after_the_helper_finished(reader: ExportReader) -> None:
    """Reads ``reader`` to its end with the helper's verdicts deciding. A ZIP's bytes come from
    the helper, so that is always so; otherwise the helper is let finish after the first
    conversation, since a small export is checked in-process until the helper has caught up."""
    conversations = iter(reader)
    next(conversations)
    assert reader._scan is not None
    if reader.kind is not ExportKind.ZIP:
        reader._scan._process.wait(timeout=30)
    for _ in conversations:
        pass


# Three sizes, so the member ends at different points of the helper's last 256 KiB read.
@pytest.mark.parametrize("count", [4000, 9000, 9111])
@pytest.mark.parametrize(
    "method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"]
)
def test_damage_the_helper_meets_first_is_reported_as_damage(
    tmp_path: Path, method: int, count: int
) -> None:
    # The helper reads 256 KiB at a time and the parser 64 KiB, so the parser can get intact
    # bytes past the helper's failing read before its own read meets the bad CRC. Those bytes
    # were never checked: they are read on without parsing until the damage shows.
    name = "conversations.json"
    data = _with_bad_crc(make_zip([(name, _wordy_array(count))], method), name)
    reader = ExportReader(put(tmp_path, data), limits=HELPER)
    with pytest.raises(ExportError) as caught:
        _read_after_the_helper_finished(reader)
    assert caught.value.code == "corrupt_archive"
    assert caught.value.member == name


def test_a_cut_off_gzip_is_reported_as_truncated_with_the_helper(tmp_path: Path) -> None:
    packed = gzip.compress(_wordy_array(9000))
    reader = ExportReader(put(tmp_path, packed[: len(packed) * 2 // 3], "cut.gz"), limits=HELPER)
    with pytest.raises(ExportError) as caught:
        _read_after_the_helper_finished(reader)
    assert caught.value.code == "export_truncated"


class _HelperReadsAnotherFile(ExportReader):
    """A reader whose helper scans ``helper_path`` while the parser reads ``path``."""

    def __init__(self, path: Path, helper_path: Path) -> None:
        super().__init__(path, limits=HELPER)
        self._helper_path = str(helper_path)

    def _start_scan(
        self, kind: ExportKind, expected_bytes: int, members: list[int] | None = None
    ) -> None:
        parsed, self.path = self.path, self._helper_path
        try:
            super()._start_scan(kind, expected_bytes, members)
        finally:
            self.path = parsed


def test_a_helper_failing_on_data_the_parser_reads_intact_is_transient(tmp_path: Path) -> None:
    from soulworker.errors import TransientJobError

    name = "conversations.json"
    data = make_zip([(name, _wordy_array(9000))], zipfile.ZIP_STORED)
    intact = put(tmp_path, data, "intact.zip")
    damaged = put(tmp_path, _with_bad_crc(data, name), "damaged.zip")
    with pytest.raises(TransientJobError) as caught:
        _read_after_the_helper_finished(_HelperReadsAnotherFile(intact, damaged))
    assert caught.value.code == "export_scan_failed"


# -- relaying: a ZIP's members come from the helper ------------------------------------------


def test_a_relayed_member_is_refused_at_the_first_byte_too_deep(tmp_path: Path) -> None:
    data = b'[{"id": "a"}, ' + b"[" * 300_000
    path = put(tmp_path, make_zip([("conversations.json", data)]))
    error, seen = failure(path, HELPER)
    assert error.code == "nesting_too_deep"
    assert error.member == "conversations.json"
    assert error.offset == data.index(b"[[") + 127  # the 129th level
    assert seen == ["a"]


def test_a_relayed_member_with_a_bom_keeps_its_offsets(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    good = make_zip([("conversations.json", bom + array("a", "b"))])
    assert ids(put(tmp_path, good, "good.zip"), HELPER) == ["a", "b"]
    deep = make_zip([("conversations.json", bom + b"[" + b'{"a":' * 100_000)])
    error, _ = failure(put(tmp_path, deep, "deep.zip"), HELPER)
    assert error.code == "nesting_too_deep"
    assert error.offset == len(bom) + 1 + 5 * 127  # offsets count the BOM


def test_relayed_shards_with_a_blank_one_read_back_in_order(tmp_path: Path) -> None:
    data = make_zip(
        [
            ("conversations-000.json", _wordy_array(3000)),
            ("conversations-001.json", b"  \n "),
            ("conversations-002.json", array("last")),
        ]
    )
    items, reader = read(put(tmp_path, data), HELPER)
    assert [item["id"] for item in items] == [f"c{i}" for i in range(3000)] + ["last"]
    assert reader.progress == 1.0


def test_a_helper_killed_while_relaying_fails_the_job_as_transient(tmp_path: Path) -> None:
    from soulworker.errors import TransientJobError

    path = put(tmp_path, make_zip([("conversations.json", _wordy_array(12_000))]))
    reader = ExportReader(path, limits=HELPER)
    conversations = iter(reader)
    next(conversations)
    assert reader._scan is not None
    reader._scan._process.kill()  # the pipe still holds some bytes; the rest never comes
    with pytest.raises(TransientJobError) as caught:
        for _ in conversations:
            pass
    assert caught.value.code == "export_scan_failed"


def test_the_helpers_verdict_past_a_stream_it_could_not_read(tmp_path: Path) -> None:
    from soulworker.export.scan import ScanJob, ScanProcess, ScanStoppedAtDamage

    cut = put(tmp_path, gzip.compress(_wordy_array(100))[:200], "cut.gz")
    process = ScanProcess(ScanJob(path=str(cut), kind="gzip", max_depth=3, max_key_bytes=1024))
    try:
        process._process.wait(timeout=30)
        assert process.verdict(0, 10, wait=False) is False  # the in-process guard stays in charge
        with pytest.raises(ScanStoppedAtDamage) as caught:
            process.verdict(0, 10)
        assert caught.value.offset == 0
    finally:
        process.close()


def test_a_helper_that_dies_early_leaves_the_in_process_guard_in_charge(tmp_path: Path) -> None:
    from soulworker.errors import TransientJobError
    from soulworker.export.scan import ScanJob, ScanProcess

    job = ScanJob(path=str(tmp_path / "missing.json"), kind="json", max_depth=3, max_key_bytes=1024)
    process = ScanProcess(job)
    try:
        process._process.wait(timeout=30)
        guard = process.guard(0)
        assert guard.check(b"[[[") is None
        refusal = guard.check(b"[")  # still exact: the in-process guard saw every byte
        assert refusal is not None
        assert refusal.index == 0
        with pytest.raises(TransientJobError) as caught:  # a guard that relied on the helper
            process.verdict(1, 10)
        assert caught.value.code == "export_scan_failed"
    finally:
        process.close()


def test_an_export_reader_iterates_once(tmp_path: Path) -> None:
    reader = ExportReader(put(tmp_path, array("a")), limits=IN_PROCESS)
    assert [item["id"] for item in reader] == ["a"]
    with pytest.raises(RuntimeError, match="only once"):
        iter(reader)


def test_the_fast_backend_check(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fast_json_backend_problem() is None
    require_fast_json_backend()

    def missing(name: str) -> None:
        raise ImportError(f"no module named {name}")

    monkeypatch.setattr(ijson, "get_backend", missing)
    problem = fast_json_backend_problem()
    assert problem is not None
    assert "yajl2_c" in problem
    assert "10x slower" in problem
    with pytest.raises(SlowJsonBackend):
        require_fast_json_backend()
    with pytest.raises(SlowJsonBackend):
        list(ExportReader(Path(export_reader.__file__)))
