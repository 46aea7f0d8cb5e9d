"""One job can never hurt another: hostile uploads beside a good one in one real daemon process.

Each test runs ``soulworker run`` as a subprocess with two jobs at once (concurrency 2) and the
tests' 2-second lease, so a parse that kept the event loop for a second or two would cost every
job of the process its lease, and the hostile one would be claimed again and again. The good
job must succeed on attempt 1; the hostile one must fail once, permanently, with its own
message, and never be claimed again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from soulworker.testing.export_generator import GeneratorConfig, write_export
from soulworker.testing.hostile_exports import tiny_conversation, write_zeros
from tests.acceptance.pipeline_harness import ImportHarness

pytestmark = pytest.mark.db


def good_export(tmp_path: Path) -> Path:
    """A realistic export big enough to still be parsing while the hostile job runs."""
    path = tmp_path / "good.json"
    write_export(path, GeneratorConfig(seed=11, target_bytes=15_000_000))
    return path


def run_beside(
    h: ImportHarness, good: Path, hostile: Path, **env: str
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Queue the good and the hostile upload, run one worker until both are done."""
    good_user, hostile_user = h.new_user(), h.new_user()
    good_id = h.enqueue(good_user, h.upload(good_user, good))
    hostile_id = h.enqueue(hostile_user, h.upload(hostile_user, hostile))
    worker = h.worker(drain=True, SOULWORKER_CONCURRENCY="2", **env).start()
    assert worker.wait(240) == 0, worker.output()[-3000:]
    return h.job(good_id), h.job(hostile_id), worker.output()


def assert_good(job: dict[str, Any]) -> None:
    assert (job["status"], job["attempt"]) == ("succeeded", 1), job["errors"]
    assert job["errors"] == []
    assert job["result"]["chunks"] > 0


def assert_failed_once(job: dict[str, Any], code: str) -> str:
    assert (job["status"], job["attempt"]) == ("failed", 1), job["errors"]
    [entry] = job["errors"]
    assert (entry["code"], entry["permanent"], entry["attempt"], entry["stage"]) == (
        code,
        True,
        1,
        "parse",
    )
    message: str = job["last_error"]
    return message


def assert_no_lease_trouble(output: str) -> None:
    events = [json.loads(line).get("event", "") for line in output.splitlines() if line[:1] == "{"]
    trouble = [e for e in events if "lease" in e or "heartbeat" in e]
    assert trouble == [], trouble


def test_a_long_run_of_zeros_fails_once_and_the_job_beside_it_is_untouched(
    database_url: str, tmp_path: Path
) -> None:
    # 40 MB of [0,0,0,…] held the event loop for ~3 s before the parse had a thread of its own:
    # past the 2 s lease, so both jobs lost it and the upload was claimed again and again.
    hostile = write_zeros(tmp_path / "zeros.json", 40_000_000)
    with ImportHarness(database_url) as h:
        good, failed, output = run_beside(h, good_export(tmp_path), hostile)
    assert_good(good)
    message = assert_failed_once(failed, "not_an_export")
    assert "more than 100,000 entries that are not conversations" in message
    assert_no_lease_trouble(output)


def test_a_parse_busy_for_several_leases_leaves_both_jobs_their_leases(
    database_url: str, tmp_path: Path
) -> None:
    # One conversation with dialogue (its rows open a COPY), then 300,000 without dialogue: a
    # parse several leases long with nothing to write, and a 1 s statement timeout that a COPY
    # left open through it would hit. The file is cut off at the end: a permanent failure.
    silent = ",".join(
        json.dumps({"id": f"s{n}", "title": "t", "mapping": {}}) for n in range(300_000)
    )
    data = "[" + json.dumps(tiny_conversation(0)) + "," + silent
    hostile = tmp_path / "busy.json"
    hostile.write_text(data[: len(data) - 10], encoding="utf-8")
    with ImportHarness(database_url) as h:
        good, failed, output = run_beside(
            h,
            good_export(tmp_path),
            hostile,
            SOULWORKER_STATEMENT_TIMEOUT_SECONDS="1",
            SOULWORKER_LOOP_STALL_MONITOR="on",
        )
    assert_good(good)
    message = assert_failed_once(failed, "export_truncated")
    assert "cut off" in message
    assert_no_lease_trouble(output)
    stalls = [json.loads(line) for line in output.splitlines() if '"event loop stall"' in line]
    assert {str(event["job_id"]) for event in stalls} == {
        str(good["id"]),
        str(failed["id"]),
    }, "each job reported the longest stall it saw"
