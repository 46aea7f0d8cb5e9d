"""The parse's CPU work on its own, fed through a real channel: rows numbered in the order they
are sent, a replaced copy's rows sent back for deletion, and the artifact's JSON (encoded in
slices, so no step holds the GIL long) equal to the plain encoding."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from soulworker.export.reader import ExportLimits
from soulworker.pipeline import handoffs
from soulworker.pipeline.handoffs import ParseOutput
from soulworker.pipeline.parse_pass import (
    ChunkRowChange,
    DeleteChunks,
    ParsePass,
    ParseSummary,
    WriteChunks,
)
from soulworker.pipeline.parse_thread import ParseChannel, start_parse_thread
from soulworker.settings import Settings
from soulworker.testing.hostile_exports import tiny_conversation


async def run_pass(export: Path) -> tuple[ParsePass, list[ChunkRowChange], ParseSummary]:
    parse = ParsePass(
        Settings(),
        export,
        limits=ExportLimits(scan_process_min_bytes=None),
        job_started=datetime(2026, 1, 1, tzinfo=UTC),
    )
    channel: ParseChannel[ChunkRowChange, ParseSummary] = ParseChannel(asyncio.get_running_loop())
    start_parse_thread(channel, parse.run, name="test-parse")
    outputs: list[ChunkRowChange] = []
    while (taken := await channel.take(0.05)) is not None:
        outputs.extend(taken)
    return parse, outputs, channel.outcome()


async def test_rows_are_numbered_in_order_and_replaced_copies_sent_back(tmp_path: Path) -> None:
    newer: dict[str, Any] = tiny_conversation(0) | {"update_time": 2_000_000_000.0}
    items = [tiny_conversation(0), tiny_conversation(1), newer]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(items), encoding="utf-8")
    _, outputs, summary = await run_pass(export)
    assert [type(output) for output in outputs] == [
        WriteChunks,
        WriteChunks,
        DeleteChunks,
        WriteChunks,
    ]
    first, second, deleted, third = outputs
    assert isinstance(first, WriteChunks) and first.indexes == range(0, 1)
    assert isinstance(second, WriteChunks) and second.indexes == range(1, 2)
    assert isinstance(deleted, DeleteChunks) and deleted.indexes == range(0, 1)
    assert isinstance(third, WriteChunks) and third.indexes == range(2, 3)
    assert summary.rows == 3
    assert (summary.counts.conversations, summary.counts.duplicates) == (2, 1)


@pytest.mark.parametrize("slice_size", [1, 3, 65_536])
async def test_the_artifact_json_is_the_plain_encoding(
    tmp_path: Path, slice_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handoffs, "JSON_SLICE", slice_size)
    export = tmp_path / "export.json"
    export.write_text(json.dumps([tiny_conversation(n) for n in range(7)]), encoding="utf-8")
    parse, _, summary = await run_pass(export)
    stored = json.loads(summary.artifact_json)
    assert stored == parse.artifact().to_json()
    assert ParseOutput.from_json(stored).to_json() == stored, "what later stages read back"
    assert len(parse.artifact().chunk_layout.header_chars) == 7


async def test_an_empty_layout_is_an_empty_list(tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_text(json.dumps([{"id": "a", "mapping": {}}]), encoding="utf-8")
    _, outputs, summary = await run_pass(export)
    assert outputs == []
    assert json.loads(summary.artifact_json)["chunk_layout"] == {
        "header_chars": [],
        "overlap_chars": [],
    }
