"""Parsing while the export downloads, in a real daemon process: two jobs at once, each parsing
an export that a throttled Storage is still sending, with the tests' 2-second lease. The
download, the parse thread, the COPY and the heartbeats of both jobs all run together; neither
job may lose its lease or be claimed twice, and both must end exactly as the sequential path
ends them. With the parse following, each download is handed over to a helper process (the
threshold set to 1 byte here: these exports are smaller than the default's 64 MiB)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from soulworker.testing.export_generator import ExportForm, GeneratorConfig, write_export
from tests.acceptance.pipeline_harness import ImportHarness

pytestmark = pytest.mark.db

RATE = 6 * 1024 * 1024
"""The 15 MB JSON export takes ~2.5 s to arrive, the gzip one (~4 MB) under a second; two at
once share nothing but the CPU."""


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
                SOULWORKER_DOWNLOAD_PROCESS_MIN_BYTES="1",
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
        handed_over = [e for e in events if e["event"] == "storage_download_handed_over"]
        resumes = [job["result"]["download"]["resumes"] for job in jobs]
        # Following: the JSON download went on in its helper once it was ready (0.3-0.8 s
        # here; one resume), the small gzip one may have ended first; sequential: never
        # (nothing competes with a download alone).
        assert len(handed_over) == sum(resumes), resumes
        assert resumes[0] == (1 if mode == "on" else 0), resumes
        assert resumes[1] in ((0, 1) if mode == "on" else (0,)), resumes
        stalls = [e["max_stall_seconds"] for e in events if e["event"] == "event loop stall"]
        assert len(stalls) == 2 and max(stalls) < 1.0, stalls  # inside the 2 s lease
        results[mode] = [
            (count, job["result"]["conversations"], job["result"]["uncompressed_bytes"])
            for count, job in zip(counts, jobs, strict=True)
        ]
    assert results["on"] == results["off"], "the same chunks and counts either way"
