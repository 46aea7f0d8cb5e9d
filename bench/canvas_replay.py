"""What replaying Canvas documents costs the linearizer: on realistic exports, and at worst.

Canvas edits are regular expressions from the uploaded file (docs/export-format.md, "Canvas").
The linearizer bounds their work without timeouts; this script shows the bound in time.

* **typical**: the same generated export with Canvas on (30 % of exchanges in the conversations
  that have it, which is far more than real exports) and off; median CPU time per conversation
  over ``--runs`` runs, and the ratio.
* **hostile**: single conversations built to cost as much as possible (ten thousand edits of a
  megabyte document, a replacement repeating the whole match 50,000 times, a quadratic pattern
  on a megabyte, catastrophic and general patterns); median CPU time to linearize each, and how
  many of their edits were applied.

    python bench/canvas_replay.py [--conversations 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from soulworker.conversations.linearize import linearize  # noqa: E402
from soulworker.testing.export_generator import Feature, GeneratorConfig, iter_export  # noqa: E402

Json = dict[str, Any]


def said(role: str, text: str) -> Json:
    return {"author": {"role": role}, "content": {"content_type": "text", "parts": [text]}}


def call(recipient: str, arguments: object) -> Json:
    content = {"content_type": "code", "text": json.dumps(arguments)}
    return {"author": {"role": "assistant"}, "recipient": recipient, "content": content}


def create(content: str) -> Json:
    return call("canmore.create_textdoc", {"name": "doc", "content": content})


def edits(pattern: str, replacement: str, count: int, *, multiple: bool = False) -> list[Json]:
    update = {"pattern": pattern, "replacement": replacement, "multiple": multiple}
    return [call("canmore.update_textdoc", {"updates": [update]})] * count


def conversation(messages: list[Json]) -> Json:
    mapping: Json = {"root": {"id": "root", "message": None, "parent": None}}
    parent = "root"
    for number, message in enumerate([said("user", "Go."), *messages]):
        mapping[f"n{number}"] = {"id": f"n{number}", "message": message, "parent": parent}
        parent = f"n{number}"
    return {"id": "c", "title": "t", "mapping": mapping, "current_node": parent}


MEGABYTE_OF_WORDS = "word " * 200_000
HOSTILE: dict[str, Callable[[], Json]] = {
    "10,000 edits of a 1 MB document": lambda: conversation(
        [create(MEGABYTE_OF_WORDS), *edits("word", "w", 10_000)]
    ),
    "every character of 1 MB replaced": lambda: conversation(
        [create("a" * 1_000_000), *edits("a", "b", 1, multiple=True)]
    ),
    "whole 1 MB text repeated 50,000 times": lambda: conversation(
        [create(MEGABYTE_OF_WORDS), *edits(".*", "\\g<0>" * 50_000, 1)]
    ),
    "100 x a.*?X over 1 MB of a": lambda: conversation(
        [create("a" * 1_000_000), *edits("a.*?X", "y", 100)]
    ),
    "100 x (a+)+$ (refused)": lambda: conversation(
        [create("a" * 100_000), *edits("(a+)+$", "y", 100)]
    ),
    "100 x \\s*b on 1,500 spaces (general class, at its step limit)": lambda: conversation(
        [create(" " * 1_500), *edits("\\s*b", "y", 100)]
    ),
}


def cpu_seconds(items: list[Json]) -> float:
    started = time.process_time()
    for item in items:
        linearize(item)
    return time.process_time() - started


def typical(conversations: int, runs: int) -> None:
    exports = {}
    for label, rate in (("Canvas off", 0.0), ("Canvas on", 0.3)):
        config = GeneratorConfig(seed=1, conversations=conversations, rates={Feature.CANVAS: rate})
        exports[label] = [json.loads(json.dumps(item.data)) for item in iter_export(config)]
    megabytes = {
        label: sum(len(json.dumps(item, ensure_ascii=False).encode()) for item in items) / 1e6
        for label, items in exports.items()
    }
    with_canvas = sum(
        any(
            node["message"] is not None
            and str(node["message"].get("recipient")).startswith("canmore.")
            for node in item["mapping"].values()
        )
        for item in exports["Canvas on"]
    )
    times: dict[str, list[float]] = {label: [] for label in exports}
    for _ in range(runs):  # interleaved, so both see the same machine load
        for label, items in exports.items():
            times[label].append(cpu_seconds(items))
    print(f"typical: {conversations} conversations, {with_canvas} with Canvas when it is on")
    per_megabyte = {}
    for label, values in times.items():
        seconds = statistics.median(values)
        per_megabyte[label] = seconds / megabytes[label] * 1000
        print(
            f"  {label}: {megabytes[label]:.0f} MB of JSON, median "
            f"{seconds / conversations * 1e6:.0f} µs per conversation, "
            f"{per_megabyte[label]:.2f} ms per MB"
        )
    ratio = per_megabyte["Canvas on"] / per_megabyte["Canvas off"]
    print(f"  on / off, per MB: {ratio:.2f}")


def hostile(runs: int) -> None:
    print("hostile single conversations (median CPU time to linearize):")
    for label, build in HOSTILE.items():
        raw = build()
        updates = sum(
            1
            for node in raw["mapping"].values()
            if node["message"] and node["message"].get("recipient") == "canmore.update_textdoc"
        )
        values = []
        result = None
        for _ in range(runs):
            started = time.process_time()
            result = linearize(raw)
            values.append(time.process_time() - started)
        assert result is not None
        applied = updates - result.stats.canvas_updates_not_applied
        print(
            f"  {label}: {statistics.median(values) * 1000:.0f} ms, "
            f"{applied} of {updates} edits applied"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    typical(arguments.conversations, arguments.runs)
    hostile(arguments.runs)


if __name__ == "__main__":
    main()
