"""Parsing while the export downloads, in a real daemon process: two jobs at once, each parsing
an export that a throttled Storage is still sending, with the tests' 2-second lease. The
download, the parse thread, the COPY and the heartbeats of both jobs all run together; neither
job may lose its lease or be claimed twice, and both must end exactly as the sequential path
ends them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from soulworker.testing.export_generator import ExportForm, GeneratorConfig, write_export
from tests.acceptance.pipeline_harness import ImportHarness

pytestmark = pytest.mark.db

RATE = 10 * 1024 * 1024
"""Each 15 MB export takes ~1.5 s to arrive (two at once share nothing but the CPU)."""


def test_two_jobs_parse_while_they_download_and_keep_their_leases(
    database_url: str, tmp_path: Path
) -> None:
    json_export = tmp_path / "export.json"
    write_export(json_export, GeneratorConfig(seed=5, target_bytes=15_000_000))
    gzip_export = tmp_path / "export.json.gz"
    write_export(
        gzip_export, GeneratorConfig(seed=5, target_bytes=15_000_000, form=ExportForm.GZIP)
    )
    results = {}
    for mode in ("off", "on"):
        with ImportHarness(database_url) as h:
            h.storage.throttle(RATE)
            users = [h.new_user(), h.new_user()]
            ids = [
                h.enqueue(user, h.upload(user, export))
                for user, export in zip(users, (json_export, gzip_export), strict=True)
            ]
            worker = h.worker(
                drain=True,
                SOULWORKER_CONCURRENCY="2",
                SOULWORKER_PARSE_DURING_DOWNLOAD=mode,
                SOULWORKER_LOOP_STALL_MONITOR="on",
            ).start()
            assert worker.wait(240) == 0, worker.output()[-3000:]
            output = worker.output()
            jobs = [h.job(job_id) for job_id in ids]
            counts = [h.chunk_count(user) for user in users]
        for job in jobs:
            assert (job["status"], job["attempt"], job["errors"]) == ("succeeded", 1, []), job
        events = [json.loads(line) for line in output.splitlines() if line[:1] == "{"]
        trouble = [e["event"] for e in events if "lease" in e["event"] or "heartbeat" in e["event"]]
        assert trouble == [], trouble
        stalls = [e["max_stall_seconds"] for e in events if e["event"] == "event loop stall"]
        assert len(stalls) == 2 and max(stalls) < 1.0, stalls  # inside the 2 s lease
        results[mode] = [
            (count, job["result"]["conversations"], job["result"]["uncompressed_bytes"])
            for count, job in zip(counts, jobs, strict=True)
        ]
    assert results["on"] == results["off"], "the same chunks and counts either way"
