"""The full pass through Message Batches end to end (docs/full-pass-batches.md): the real daemon
as subprocesses with real signals, real Postgres, the real ``anthropic`` SDK, the fake Messages
API (with its batches) and the fake Storage on loopback.

What must hold: one batch per job, never a second one (a crash while parked, a crash between
create and the saved id, a create that failed without saying whether it made the batch); the
job parked while its batch runs (no worker busy on it, no attempt charged) and then completed;
every plan batch's facts saved once, at batch prices; errored, expired and truncated requests
asked directly; a cancel while parked cancels the batch.
"""

from __future__ import annotations

import datetime
import os
import signal
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest

from soulworker.testing.message_batches import BATCHES_PATH, FakeBatch
from soulworker.testing.messages_api import (
    batch_request_expired,
    in_batches,
    server_error,
    truncated,
)
from tests.acceptance.pipeline_harness import ImportHarness
from tests.acceptance.test_model_stages import (
    HAIKU_5_5_INPUT_USD_PER_MTOK,
    HAIKU_5_5_OUTPUT_USD_PER_MTOK,
    SMALL_BATCH_TOKENS,
    WORKER_TIMEOUT_SECONDS,
    zip_export,
)
from tests.acceptance.workers import WorkerProcess, query, wait_for

pytestmark = pytest.mark.db

BATCH_ENV = {
    "SOULWORKER_FULL_PASS_MODE": "batch",
    "SOULWORKER_FULL_PASS_BATCH_TOKENS": SMALL_BATCH_TOKENS,
    "SOULWORKER_BATCH_POLL_MIN_SECONDS": "0.3",
    "SOULWORKER_BATCH_POLL_MAX_SECONDS": "0.6",
}


def parked(h: ImportHarness, job_id: uuid.UUID) -> dict[str, Any] | None:
    job = h.job(job_id)
    return job if job["parked_at"] is not None and job["status"] == "queued" else None


def wait_parked(h: ImportHarness, job_id: uuid.UUID, worker: WorkerProcess) -> dict[str, Any]:
    job: dict[str, Any] = wait_for(
        lambda: parked(h, job_id), timeout=60, what="the job parked", context=worker.output
    )
    return job


def park_first(h: ImportHarness, job_id: uuid.UUID) -> dict[str, Any]:
    """Run a worker until it has parked the job, then stop it (SIGTERM); the job row as it was
    while parked. A draining worker would not leave: the parked job is due again every poll."""
    worker = h.worker(drain=False, **BATCH_ENV).start()
    job = wait_parked(h, job_id, worker)
    worker.send(signal.SIGTERM)
    assert worker.wait(WORKER_TIMEOUT_SECONDS) == 0, worker.output()[-3000:]
    assert h.job(job_id)["status"] == "queued"
    return job


def start(h: ImportHarness, export: Path) -> tuple[uuid.UUID, uuid.UUID]:
    user = h.new_user()
    h.upload(user, export)
    return user, h.enqueue(user)


def finish(h: ImportHarness, job_id: uuid.UUID, **env: str) -> dict[str, Any]:
    worker = h.worker(drain=True, **(BATCH_ENV | env)).start()
    assert worker.wait(WORKER_TIMEOUT_SECONDS) == 0, worker.output()[-3000:]
    job = h.job(job_id)
    assert job["status"] == "succeeded", (job["last_error"], worker.output()[-3000:])
    return job


def batch_cost_usd(batch: FakeBatch) -> Decimal:
    """What the fake billed for a batch's answered requests, at half the list price (written out
    here from the price sheet, not taken from the worker)."""
    usd = Decimal(0)
    for result in batch.results.values():
        if result["type"] != "succeeded":
            continue
        usage = result["message"]["usage"]
        usd += (
            Decimal(usage["input_tokens"]) * Decimal(str(HAIKU_5_5_INPUT_USD_PER_MTOK))
            + Decimal(usage["output_tokens"]) * Decimal(str(HAIKU_5_5_OUTPUT_USD_PER_MTOK))
        ) / Decimal(1_000_000)
    return usd / 2


def another_jobs_batch(h: ImportHarness, requests: int) -> str:
    """A batch of ``requests`` requests with custom ids of another job's nonce; its id."""
    assert h.api is not None
    body = {
        "requests": [
            {
                "custom_id": f"0123456789abcdef-{n}",
                "params": {"model": "claude-haiku-5-5", "max_tokens": 10, "messages": []},
            }
            for n in range(requests)
        ]
    }
    answer = httpx2.post(f"{h.api.base_url}{BATCHES_PATH}", json=body, timeout=10)
    answer.raise_for_status()
    batch_id: str = answer.json()["id"]
    return batch_id


def test_one_batch_per_job_parked_then_completed(database_url: str, tmp_path: Path) -> None:
    export = zip_export(tmp_path, seed=41, conversations=8)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.batch_book.hold_batches = True
        user, job_id = start(h, export)
        job = park_first(h, job_id)
        (batch,) = h.api.batches
        assert job["attempt"] == 0, "parking charges no attempt"
        assert job["lease_owner"] is None
        assert batch.id in job["waiting_for"]
        assert job["stage"] == "full_pass"
        assert job["checkpoint"]["full_pass_batch"]["batch_id"] == batch.id
        profile = h.profile(user)
        assert profile is not None
        assert profile["import_status"] == "quick_ready"
        assert profile["full_pass_status"] == "processing"
        assert profile["import_stage"] == "Building deep memory"
        assert h.api.calls_by_purpose()["fact_extraction"] == 0, "no direct fact call"

        h.api.batch_book.end_held_batches()
        job = finish(h, job_id)

        assert len(h.api.batches) == 1, "one batch per job"
        plan = job["result"]["full_pass"]["batches"]
        assert plan == len(batch.requests)
        assert h.api.calls_by_purpose()["fact_extraction"] == 0
        assert batch.results_fetched >= 1
        usage = job["result"]["model_usage"]["by_purpose"]
        assert usage["fact_extraction_batch"]["calls"] == plan
        assert "fact_extraction" not in usage
        billed = h.api.billed(in_batches=True)
        assert usage["fact_extraction_batch"]["input_tokens"] == billed["input_tokens"]
        assert usage["fact_extraction_batch"]["output_tokens"] == billed["output_tokens"]
        expected = batch_cost_usd(batch)
        assert abs(Decimal(str(usage["fact_extraction_batch"]["cost_usd"])) - expected) < Decimal(
            "0.00000002"
        )
        full_pass = job["result"]["cost"]["by_stage"]["full_pass"]
        assert full_pass["calls"] == plan
        profile = h.profile(user)
        assert profile is not None
        assert (profile["import_status"], profile["full_pass_status"]) == ("complete", "complete")
        assert profile["import_cost_json"] == job["result"]["cost"]
        # The batch's requests are the direct path's: the same plan, effort and answer limit.
        for _, request in batch.requests:
            assert request.body["output_config"]["effort"] == "low"
            assert request.body["max_tokens"] == 6000


def test_a_worker_killed_while_its_job_is_parked_leaves_no_second_batch(
    database_url: str, tmp_path: Path
) -> None:
    export = zip_export(tmp_path, seed=42, conversations=8)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.batch_book.hold_batches = True
        _, job_id = start(h, export)
        # Not draining: the worker parks the job, then claims it again and again to look.
        first = h.worker(drain=False, **BATCH_ENV).start()
        wait_parked(h, job_id, first)
        api = h.api
        wait_for(
            lambda: len([r for r in api.requests if r.method == "GET"]) >= 3,
            timeout=30,
            what="the worker looking at its batch again",
            context=first.output,
        )
        first.kill()
        h.api.batch_book.end_held_batches()
        job = finish(h, job_id)
        assert len(h.api.batches) == 1, "never a second batch"
        assert job["result"]["full_pass"]["batches"] == len(h.api.batches[0].requests)
        assert h.api.calls_by_purpose()["fact_extraction"] == 0


@pytest.mark.parametrize("batch_running", [True, False], ids=["running", "ended"])
def test_a_crash_between_create_and_the_saved_id_adopts_the_batch(
    database_url: str, tmp_path: Path, batch_running: bool
) -> None:
    """SIGKILL from inside the fake, after it made the batch and before it answered: the id was
    never saved. The next worker finds the batch by its custom ids, once it can tell."""
    export = zip_export(tmp_path, seed=43, conversations=8)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.batch_book.hold_batches = batch_running
        _, job_id = start(h, export)
        first = h.worker(drain=True, **BATCH_ENV)
        h.api.batch_book.on_create = lambda _: os.kill(first.pid, signal.SIGKILL)
        first.start()
        first.wait(WORKER_TIMEOUT_SECONDS)
        h.api.batch_book.on_create = None
        (batch,) = h.api.batches
        marker = h.job(job_id)["checkpoint"]["full_pass_batch"]
        assert marker["batch_id"] is None, "killed before the id was saved"
        assert all(cid.startswith(marker["nonce"] + "-") for cid in batch.custom_ids)
        # Another job's batch made meanwhile, as many requests: never taken for ours.
        decoy = another_jobs_batch(h, len(batch.requests))
        if batch_running:
            job = park_first(h, job_id)
            assert job["waiting_for"] == "message batch being looked for"
            h.api.batch_book.end_held_batches()
        job = finish(h, job_id)
        assert [b.id for b in h.api.batches] == [batch.id, decoy], "adopted, not submitted again"
        assert job["checkpoint"]["full_pass_batch"]["batch_id"] == batch.id
        assert h.api.batch_book.get(decoy).cancel_initiated_at is None  # type: ignore[union-attr]
        assert h.api.calls_by_purpose()["fact_extraction"] == 0
        assert job["result"]["model_usage"]["by_purpose"]["fact_extraction_batch"]["calls"] == (
            len(batch.requests)
        )


def test_a_create_that_failed_is_looked_for_then_submitted_once(
    database_url: str, tmp_path: Path
) -> None:
    export = zip_export(tmp_path, seed=44, conversations=8)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.script(server_error(path=BATCHES_PATH))
        _, job_id = start(h, export)
        job = finish(h, job_id)
        creates = [r for r in h.api.requests if r.path == BATCHES_PATH and r.method == "POST"]
        assert len(creates) == 2, "the failed create, then one after looking"
        assert len(h.api.batches) == 1
        assert job["result"]["full_pass"]["batches"] == len(h.api.batches[0].requests)


def test_errored_expired_and_truncated_requests_are_asked_directly(
    database_url: str, tmp_path: Path
) -> None:
    export = zip_export(tmp_path, seed=45, conversations=8)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.script(
            in_batches(server_error()),
            batch_request_expired(),
            in_batches(truncated()),
        )
        _, job_id = start(h, export)
        job = finish(h, job_id)
        (batch,) = h.api.batches
        kinds = sorted(result["type"] for result in batch.results.values())
        assert kinds.count("errored") == 1
        assert kinds.count("expired") == 1
        cut = [
            r for r in batch.results.values() if r["type"] == "succeeded"
            and r["message"]["stop_reason"] == "max_tokens"
        ]  # fmt: skip
        assert len(cut) == 1
        direct = [r for r in h.api.message_requests if r.purpose == "fact_extraction"]
        assert len(direct) == 3, "one direct call for each request the batch did not answer"
        # The cut-off answer is asked again at the larger limit at once.
        assert sorted(r.body["max_tokens"] for r in direct) == [6000, 6000, 12000]
        plan = job["result"]["full_pass"]["batches"]
        assert plan == len(batch.requests)
        usage = job["result"]["model_usage"]["by_purpose"]
        assert usage["fact_extraction"]["calls"] == 3
        # Billed: every answered batch request, the cut-off one included.
        assert usage["fact_extraction_batch"]["calls"] == plan - 2
        assert h.api.billed(in_batches=True)["calls"] == plan - 2


def test_an_expired_batch_is_asked_directly(database_url: str, tmp_path: Path) -> None:
    export = zip_export(tmp_path, seed=46, conversations=8)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.batch_book.hold_batches = True
        _, job_id = start(h, export)
        park_first(h, job_id)
        (batch,) = h.api.batches
        h.api.batch_book.expire(batch.id)
        job = finish(h, job_id)
        plan = job["result"]["full_pass"]["batches"]
        assert h.api.calls_by_purpose()["fact_extraction"] == plan
        assert len(h.api.batches) == 1


def test_a_cancel_while_parked_cancels_the_batch(database_url: str, tmp_path: Path) -> None:
    export = zip_export(tmp_path, seed=47, conversations=8)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.batch_book.hold_batches = True
        _, job_id = start(h, export)
        park_first(h, job_id)
        query(database_url, "select cancel_import_job(%s)", job_id)
        second = h.worker(drain=True, **BATCH_ENV).start()
        assert second.wait(WORKER_TIMEOUT_SECONDS) == 0, second.output()[-3000:]
        job = h.job(job_id)
        assert job["status"] == "cancelled"
        (batch,) = h.api.batches
        assert batch.cancel_initiated_at is not None
        cancels = [r for r in h.api.requests if r.path.endswith("/cancel")]
        assert len(cancels) == 1
        assert h.api.calls_by_purpose()["fact_extraction"] == 0


def test_a_job_with_a_batch_reads_it_after_the_mode_changed_to_direct(
    database_url: str, tmp_path: Path
) -> None:
    """Its requests are paid for: switching the daemon to direct does not ask them again."""
    export = zip_export(tmp_path, seed=48, conversations=8)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.batch_book.hold_batches = True
        _, job_id = start(h, export)
        park_first(h, job_id)
        h.api.batch_book.end_held_batches()
        job = finish(h, job_id, SOULWORKER_FULL_PASS_MODE="direct")
        assert len(h.api.batches) == 1
        assert h.api.calls_by_purpose()["fact_extraction"] == 0
        assert job["result"]["full_pass"]["batches"] == len(h.api.batches[0].requests)


def test_a_batch_still_running_past_its_expiry_is_cancelled_and_asked_directly(
    database_url: str, tmp_path: Path
) -> None:
    export = zip_export(tmp_path, seed=49, conversations=8)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.batch_book.hold_batches = True
        _, job_id = start(h, export)
        park_first(h, job_id)
        (batch,) = h.api.batches
        h.api.batch_book.age(batch.id, datetime.timedelta(hours=24, minutes=20))
        job = finish(h, job_id)
        assert batch.cancel_initiated_at is not None, "ours, so cancelled"
        plan = job["result"]["full_pass"]["batches"]
        assert h.api.calls_by_purpose()["fact_extraction"] == plan
        assert len(h.api.batches) == 1
