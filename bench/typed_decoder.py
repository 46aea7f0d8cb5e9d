"""Decoding one conversation at a time from its byte range, against bare ijson, in one run.

The lever (docs/pipeline.md, "Parsing while the export downloads"): ijson building Python
objects is the largest single cost of a parse; a decoder applied to each conversation's slice of
the file (a generic one such as orjson or msgspec, building the same dicts the linearizer reads,
or a typed msgspec one building only the fields it uses) might beat it. This script measures the
decoders alone, over the same file, interleaved, in the same run:

* ``ijson``: bare ``ijson.items(f, "item", use_float=True)`` (yajl2_c), what the reader runs;
* ``orjson``, ``msgspec``: the same dicts, one ``loads``/``decode`` per conversation slice;
* ``msgspec typed``: ``msgspec.json.Decoder`` of ``Struct(gc=False)`` classes holding the fields
  the linearizer reads most (title, times, id, current_node, mapping → parent, message → author
  role, content type and parts, create_time, recipient), unknown fields skipped.

The slices are found once, before timing, with the standard library's ``raw_decode`` (exact,
and slow: it is not a candidate). No splitter at C speed exists in the pipeline today (the
structure guard's bracket reduction does not keep positions), so the figures are the decoders'
upper bound: a real pipeline pays the split on top, in the scan helper or here.

    python bench/typed_decoder.py bench/out/export-json-100000000-s1.json [--runs 3]

Needs ``msgspec`` and ``orjson``, which are not dependencies of soulworker (pip install them
into the benchmark's environment).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ijson

# Not dependencies of soulworker: imported by name, so the type check runs without them.
msgspec: Any = importlib.import_module("msgspec")
orjson: Any = importlib.import_module("orjson")


def conversation_type() -> Any:
    """``Struct(gc=False)`` classes of the fields the linearizer reads most."""
    struct = msgspec.defstruct
    optional = None
    author = struct(
        "Author", [("role", str | None, optional), ("name", str | None, optional)], gc=False
    )
    content = struct(
        "Content",
        [
            ("content_type", str | None, optional),
            ("parts", list[Any] | None, optional),
            ("text", str | None, optional),
        ],
        gc=False,
    )
    message = struct(
        "Message",
        [
            ("author", author | None, optional),
            ("content", content | None, optional),
            ("create_time", float | None, optional),
            ("recipient", str | None, optional),
        ],
        gc=False,
    )
    node = struct(
        "Node",
        [
            ("parent", str | None, optional),
            ("children", list[str] | None, optional),
            ("message", message | None, optional),
        ],
        gc=False,
    )
    return struct(
        "Conversation",
        [
            ("id", str | None, optional),
            ("title", str | None, optional),
            ("create_time", float | None, optional),
            ("update_time", float | None, optional),
            ("current_node", str | None, optional),
            ("mapping", dict[str, node] | None, optional),  # type: ignore[valid-type]
        ],
        gc=False,
    )


def slices(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the top-level array's items (found once, untimed)."""
    text = data.decode("utf-8")
    decoder = json.JSONDecoder()
    ranges: list[tuple[int, int]] = []
    position = text.index("[") + 1
    byte_position = len(text[:position].encode("utf-8"))
    while True:
        start = position
        while text[position] in " \t\r\n,":
            position += 1
        byte_position += position - start  # whitespace and commas are ASCII
        if text[position] == "]":
            return ranges
        _, end = decoder.raw_decode(text, position)
        byte_end = byte_position + len(text[position:end].encode("utf-8"))
        ranges.append((byte_position, byte_end))
        position, byte_position = end, byte_end


def timed(work: Callable[[], int]) -> tuple[float, int]:
    gc.collect()
    started = time.perf_counter()
    count = work()
    return time.perf_counter() - started, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data = args.export.read_bytes()
    ranges = slices(data)
    view = memoryview(data)
    backend = ijson.get_backend("yajl2_c")
    typed = msgspec.json.Decoder(conversation_type())
    untyped = msgspec.json.Decoder()

    def run_ijson() -> int:
        with args.export.open("rb") as handle:
            return sum(1 for _ in backend.items(handle, "item", use_float=True))

    def per_slice(decode: Callable[[Any], Any]) -> Callable[[], int]:
        def work() -> int:
            count = 0
            for start, end in ranges:
                item = decode(view[start:end])
                count += 1
                del item
            return count

        return work

    candidates: dict[str, Callable[[], int]] = {
        "ijson.items (bare)": run_ijson,
        "orjson per slice": per_slice(lambda chunk: orjson.loads(bytes(chunk))),
        "msgspec per slice": per_slice(untyped.decode),
        "msgspec typed per slice": per_slice(typed.decode),
    }
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.runs):
        for name, work in candidates.items():
            elapsed, count = timed(work)
            if count != len(ranges):
                raise SystemExit(f"{name} read {count} items, expected {len(ranges)}")
            seconds[name].append(elapsed)
    mb = len(data) / 1e6
    bare = statistics.median(seconds["ijson.items (bare)"])
    print(f"{args.export.name}: {mb:.0f} MB, {len(ranges):,} conversations, {args.runs} runs")
    print("| decoder | median s | MB/s | × bare ijson |")
    print("|---|---|---|---|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {mb / median:.0f} | {bare / median:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
