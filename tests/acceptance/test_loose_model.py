"""Imports against a model that answers the way real models sometimes do (docs/model-answers.md).

The fake Messages API answers as ``LooseModel``: valid for the JSON schema it was sent, but with
fewer or more items than the descriptions ask, over-long strings, fields left out, "not enough
data" everywhere, a generic ``ai_name``. Scripted faults add hard violations, truncation and a
spend limit. Every import with real conversations must end ``complete`` (or ``quick_ready`` with
the full pass failed, where that is what was injected); every billed call must be in the job's
usage; no request body may be sent twice within an attempt without a transport failure between.
"""

from __future__ import annotations

import json
import random
import re
import threading
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from soulworker.llm.ai_name import FALLBACK_NAMES, ai_name_problem
from soulworker.llm.schemas import SECTION_NAMES, SOULPRINT
from soulworker.testing.messages_api import (
    UNKNOWN,
    LooseModel,
    RecordedRequest,
    answer,
    generate_from_schema,
    recorded_usage,
    refusal,
    spend_limit,
    truncated,
)
from tests.acceptance.pipeline_harness import ImportHarness
from tests.acceptance.test_model_stages import (
    SMALL_BATCH_TOKENS,
    WORKER_TIMEOUT_SECONDS,
    ScriptedAnswers,
    artifact_count,
    assert_billed_is_recorded,
    assert_memory_shape,
    purpose_is,
    run_one,
    sections_of,
    zip_export,
)
from tests.acceptance.workers import query, wait_for

pytestmark = pytest.mark.db

DEGRADED_KEYS = {"stage", "call", "path", "rule", "count"}


def assert_sections_are_usable(profile: dict[str, Any]) -> None:
    """What the web app parses: five JSON sections, every field present and within its maximum,
    a real companion name."""
    sections = sections_of(profile)
    for name in SECTION_NAMES:
        schema = SOULPRINT.schema["properties"][name]
        assert set(sections[name]) == set(schema["properties"]), name
    leftovers = [
        problem
        for problem in SOULPRINT.validate(sections)
        if not problem.endswith(("min_items", "min_length"))
    ]
    assert leftovers == [], "types, enums and every maximum hold"
    assert ai_name_problem(profile["ai_name"]) is None
    assert sections["identity"]["ai_name"] == profile["ai_name"]


def assert_degraded_names_no_values(result: dict[str, Any], answers: list[str]) -> None:
    """``result.degraded`` holds paths, rules and counts; never a value a model wrote."""
    entries = result.get("degraded") or []
    for entry in entries:
        assert set(entry) in (DEGRADED_KEYS, {"stage", "call", "rule", "code", "count"}), entry
        assert entry["count"] >= 1
    said = json.dumps(entries)
    for text in answers:
        for word in text.split():
            if len(word) > 12:  # long generated strings: none may reach the record
                assert word not in said


def attempt_windows(job: dict[str, Any]) -> list[tuple[float, float]]:
    """(start, end) of each attempt as wall-clock seconds: attempts end at their errors."""
    ends = [datetime.fromisoformat(error["at"]).timestamp() for error in job["errors"]]
    starts = [0.0, *ends]
    return list(zip(starts, [*ends, float("inf")], strict=True))


def test_imports_with_a_loose_model_all_complete_with_their_repairs_recorded(
    database_url: str, tmp_path: Path
) -> None:
    exports = [zip_export(tmp_path, seed=seed, conversations=5) for seed in range(60, 66)]
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        model = LooseModel()
        h.api.responder = model
        jobs: list[tuple[uuid.UUID, uuid.UUID]] = []
        for export in exports:
            user = h.new_user()
            h.upload(user, export)
            jobs.append((user, h.enqueue(user)))
        worker = h.worker(SOULWORKER_FULL_PASS_BATCH_TOKENS=SMALL_BATCH_TOKENS).start()
        assert worker.wait(WORKER_TIMEOUT_SECONDS * 3) == 0, worker.output()[-3000:]

        answers = [message["content"][0]["text"] for message in h.api.responses]
        recorded: Counter[str] = Counter()
        rules_seen: set[str] = set()
        for user, job_id in jobs:
            job = h.job(job_id)
            assert (job["status"], job["attempt"]) == ("succeeded", 1), job["last_error"]
            profile = h.profile(user)
            assert profile is not None
            assert (profile["import_status"], profile["full_pass_status"]) == (
                "complete",
                "complete",
            )
            assert_sections_are_usable(profile)
            assert_memory_shape(profile["memory_md"])
            result = job["result"]
            assert_degraded_names_no_values(result, answers)
            rules_seen |= {entry["rule"] for entry in result.get("degraded") or []}
            recorded.update(recorded_usage(result["model_usage"]["total"]))
            stored_cost = profile["import_cost_json"]
            if isinstance(stored_cost, str):
                stored_cost = json.loads(stored_cost)
            assert stored_cost == result["cost"]
        assert dict(recorded) == h.api.billed(), "every billed call is in a job's usage"
        assert h.api.repeated_bodies() == [], "no request sent twice"
        assert {"max_items", "max_length", "min_items", "missing"} <= rules_seen


def test_not_enough_data_everywhere_and_never_a_name_still_complete(
    database_url: str, tmp_path: Path
) -> None:
    export = zip_export(tmp_path, seed=70, conversations=4)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.responder = LooseModel(ways=(UNKNOWN,), generic_name_share=1.0)
        user, job_id, _ = run_one(h, export)
        job = h.job(job_id)
        assert (job["status"], job["attempt"]) == ("succeeded", 1), job["last_error"]
        profile = h.profile(user)
        assert profile is not None
        assert profile["import_status"] == "complete"
        assert profile["ai_name"] in FALLBACK_NAMES
        assert_sections_are_usable(profile)
        calls = h.api.calls_by_purpose()
        assert calls["quick_pass"] == 2, "asked once more, then given a name"
        assert calls["soulprint_v2"] == 1, "the v2 name is the quick pass's: never asked again"
        degraded = job["result"]["degraded"]
        assert {
            "stage": "quick_pass",
            "call": "quick_pass",
            "path": "$.identity.ai_name",
            "rule": "fallback_name",
            "count": 1,
        } in degraded
        assert any(
            entry["stage"] == "quick_pass" and entry["rule"] == "min_items" for entry in degraded
        ), "three personality traits were asked for, one came, and it was kept"
        assert_billed_is_recorded(h, job)
        assert h.api.repeated_bodies() == []
        # The re-ask said what was wrong, and only that.
        [first, second] = [r for r in h.api.message_requests if r.purpose == "quick_pass"]
        assert isinstance(first.body["messages"][0]["content"], str)
        feedback = second.body["messages"][0]["content"][1]["text"]
        assert re.search(r"- \$\.identity\.ai_name: (generic|placeholder|empty) name\n", feedback)


def broken_soulprint() -> dict[str, Any]:
    """A soulprint answer that breaks hard rules: an enum and a missing required key."""
    data: dict[str, Any] = generate_from_schema(SOULPRINT.wire_schema, random.Random(1))
    data["soul"]["formality_level"] = "whatever fits"
    del data["identity"]["ai_name"]
    return data


def test_one_hard_violation_then_a_good_answer_costs_one_more_call(
    database_url: str, tmp_path: Path
) -> None:
    export = zip_export(tmp_path, seed=71, conversations=4)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.responder = LooseModel(generic_name_share=0.0)
        h.api.script(answer(broken_soulprint(), when=purpose_is("quick_pass")))
        _, job_id, _ = run_one(h, export)
        job = h.job(job_id)
        assert (job["status"], job["attempt"], job["errors"]) == ("succeeded", 1, [])
        assert h.api.calls_by_purpose()["quick_pass"] == 2
        assert_billed_is_recorded(h, job)
        assert h.api.repeated_bodies() == []


def test_two_hard_violations_fail_the_attempt_truly_and_the_retry_completes(
    database_url: str, tmp_path: Path
) -> None:
    export = zip_export(tmp_path, seed=72, conversations=4)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.responder = LooseModel()
        broken = broken_soulprint()
        h.api.script(answer(broken, when=purpose_is("quick_pass"), times=2))
        user, job_id, _ = run_one(h, export)
        job = h.job(job_id)
        assert (job["status"], job["attempt"]) == ("succeeded", 2), job["last_error"]
        [error] = job["errors"]
        assert (error["code"], error["permanent"]) == ("model_bad_output", False)
        assert error["message"] == (
            "The model's answers could not be used. The import will be retried automatically."
        )
        profile = h.profile(user)
        assert profile is not None
        assert profile["import_status"] == "complete"
        assert_sections_are_usable(profile)
        assert_billed_is_recorded(h, job)  # the failed attempt's two calls included
        for since, until in attempt_windows(job):
            assert h.api.repeated_bodies(since=since, until=until) == [], "within an attempt"


def test_a_spend_limit_in_the_quick_pass_fails_at_once_without_burning_attempts(
    database_url: str, tmp_path: Path
) -> None:
    export = zip_export(tmp_path, seed=73, conversations=3)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.responder = LooseModel()
        # The first answer is unusable; the re-ask meets the spend limit.
        h.api.script(
            answer(broken_soulprint(), when=purpose_is("quick_pass")),
            spend_limit(when=purpose_is("quick_pass"), times=100),
        )
        user, job_id, _ = run_one(h, export)
        job = h.job(job_id)
        assert (job["status"], job["attempt"]) == ("failed", 1)
        assert [(e["code"], e["permanent"]) for e in job["errors"]] == [("model_spend_limit", True)]
        assert "retried" not in job["last_error"]
        assert "Raise the limit or add credit" in job["last_error"]
        assert h.api.calls_by_purpose()["quick_pass"] == 2, "the spend limit is not retried"
        profile = h.profile(user)
        assert profile is not None
        assert (profile["import_status"], profile["import_error"]) == ("failed", job["last_error"])
        assert_billed_is_recorded(h, job)  # the rejected first answer was billed and is counted
        cost = profile["import_cost_json"]
        cost = json.loads(cost) if isinstance(cost, str) else cost
        assert cost["total"]["calls"] == 1


def test_a_quick_pass_truncated_on_every_attempt_ends_failed_with_a_true_message(
    database_url: str, tmp_path: Path
) -> None:
    export = zip_export(tmp_path, seed=74, conversations=6)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.responder = LooseModel()
        h.api.script(truncated(when=purpose_is("quick_pass"), times=1000))
        user, job_id, _ = run_one(h, export, job_columns={"max_attempts": 3})
        job = h.job(job_id)
        assert (job["status"], job["attempt"]) == ("failed", 3)
        said = [(e["code"], e["permanent"], e["message"]) for e in job["errors"]]
        cut_off = "The model's answer was cut off repeatedly."
        assert said == [
            ("model_truncated", False, f"{cut_off} The import will be retried automatically."),
            ("model_truncated", False, f"{cut_off} The import will be retried automatically."),
            (
                "model_truncated",
                False,
                f"{cut_off} The import stopped after 3 attempts; please try it again later.",
            ),
        ]
        assert job["last_error"] == said[-1][2]
        profile = h.profile(user)
        assert profile is not None
        assert (profile["import_status"], profile["import_error"]) == ("failed", job["last_error"])
        assert h.api.calls_by_purpose()["quick_pass"] == 9, "three steps of the ladder, thrice"
        assert_billed_is_recorded(h, job)  # nine truncated answers, each billed and counted
        for since, until in attempt_windows(job):
            assert h.api.repeated_bodies(since=since, until=until) == []


class HoldOthers:
    """Answers as ``model`` does; the first fact-extraction request it sees becomes the target
    (its answers are cut off by a scripted fault), and every other fact-extraction request is
    held until ``release``."""

    def __init__(self, model: LooseModel) -> None:
        self.model = model
        self.lock = threading.Lock()
        self.target: str | None = None
        self.released = threading.Event()
        self.held = 0

    def is_target(self, request: RecordedRequest) -> bool:
        if request.purpose != "fact_extraction":
            return False
        content = json.dumps(request.body["messages"])
        with self.lock:
            if self.target is None:
                self.target = content
            return content == self.target

    def __call__(self, request: RecordedRequest) -> dict[str, Any]:
        if request.purpose == "fact_extraction" and not self.is_target(request):
            with self.lock:
                self.held += 1
            self.released.wait(30)
        return self.model(request)


def test_a_failed_batch_lets_the_batches_in_flight_finish_and_every_call_counts(
    database_url: str, tmp_path: Path
) -> None:
    export = zip_export(tmp_path, seed=75, conversations=6)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        responder = HoldOthers(LooseModel())
        h.api.responder = responder
        # Cut off twice (both output limits) and alone in its batch: the attempt fails.
        h.api.script(truncated(when=responder.is_target, times=2))
        user = h.new_user()
        h.upload(user, export)
        job_id = h.enqueue(user)
        worker = h.worker(
            SOULWORKER_FULL_PASS_BATCH_TOKENS=SMALL_BATCH_TOKENS,
            SOULWORKER_MODEL_CONCURRENCY_PER_JOB="2",
        ).start()
        try:
            wait_for(
                lambda: h.api is not None and h.api.pending_faults == 0 and responder.held >= 1,
                timeout=30,
                what="the target cut off twice while another batch is in flight",
                context=worker.output,
            )
            assert h.job(job_id)["status"] == "running", "it waits for the batch in flight"
        finally:
            responder.released.set()
        assert worker.wait(WORKER_TIMEOUT_SECONDS) == 0, worker.output()[-3000:]
        job = h.job(job_id)
        assert (job["status"], job["attempt"]) == ("succeeded", 2), job["last_error"]
        [error] = job["errors"]
        assert error["code"] == "model_truncated"
        assert artifact_count(database_url, job_id, "facts:") == 0, "cleaned up at the end"
        bodies = [
            json.dumps(r.body["messages"])
            for r in h.api.message_requests
            if r.purpose == "fact_extraction"
        ]
        others = [body for body in bodies if body != responder.target]
        assert len(others) == len(set(others)), "the batch in flight was saved, not asked again"
        assert len(others) == job["result"]["full_pass"]["batches"] - 1
        assert_billed_is_recorded(h, job)
        profile = h.profile(user)
        assert profile is not None
        assert profile["import_status"] == "complete"


def test_loose_imports_run_exactly_once_across_workers(database_url: str, tmp_path: Path) -> None:
    exports = [zip_export(tmp_path, seed=seed, conversations=4) for seed in range(80, 84)]
    with ImportHarness(database_url, model_api=True, api_latency_seconds=0.02) as h:
        assert h.api is not None
        h.api.responder = LooseModel()
        jobs = []
        for export in exports:
            user = h.new_user()
            h.upload(user, export)
            jobs.append((user, h.enqueue(user)))
        workers = [
            h.worker(
                SOULWORKER_CONCURRENCY="2", SOULWORKER_FULL_PASS_BATCH_TOKENS=SMALL_BATCH_TOKENS
            ).start()
            for _ in range(3)
        ]
        for worker in workers:
            assert worker.wait(WORKER_TIMEOUT_SECONDS * 2) == 0, worker.output()[-3000:]
        first_asks = [
            r
            for r in h.api.message_requests
            if r.purpose == "quick_pass" and isinstance(r.body["messages"][0]["content"], str)
        ]
        assert len(first_asks) == len(jobs), "one quick pass per import"
        assert len({json.dumps(r.body) for r in first_asks}) == len(jobs)
        recorded_calls = 0
        for user, job_id in jobs:
            job = h.job(job_id)
            assert (job["status"], job["attempt"]) == ("succeeded", 1), job["last_error"]
            assert h.chunk_count(user) == job["result"]["chunks"] > 0
            recorded_calls += job["result"]["model_usage"]["total"]["calls"]
        assert recorded_calls == h.api.billed()["calls"]
        assert h.api.repeated_bodies() == []


def test_a_resumed_finish_pays_for_no_answer_twice_and_keeps_its_record(
    database_url: str, tmp_path: Path
) -> None:
    export = zip_export(tmp_path, seed=76, conversations=4)
    long_fact = "Plans every weekend hike with a paper map, a compass and a thermos of tea. " * 3

    def many_preferences(request: RecordedRequest) -> dict[str, Any]:
        seed = len(request.text)
        return {
            "preferences": [f"{n} {seed} {long_fact}"[:300] for n in range(25)],
            "projects": [],
            "dates": [],
            "beliefs": [],
            "decisions": [],
        }

    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        answers = ScriptedAnswers(LooseModel())
        answers.overrides["fact_extraction"] = many_preferences
        answers.hold("soulprint_v2")
        h.api.responder = answers
        h.api.script(refusal(when=purpose_is("fact_reduction")))
        user = h.new_user()
        h.upload(user, export)
        job_id = h.enqueue(user)
        first = h.worker(SOULWORKER_FULL_PASS_BATCH_TOKENS="2000").start()
        try:
            wait_for(
                lambda: answers.held_count() == 1,
                timeout=30,
                what="the v2 sections asked for, after the reduction",
                context=first.output,
            )
            assert artifact_count(database_url, job_id, "reduced:") == 1
            first.kill()
        finally:
            answers.release()
        calls_before = h.api.calls_by_purpose()
        assert calls_before["fact_reduction"] == 1
        second = h.worker().start()
        assert second.wait(WORKER_TIMEOUT_SECONDS) == 0, second.output()[-3000:]
        job = h.job(job_id)
        assert (job["status"], job["attempt"]) == ("succeeded", 2), job["last_error"]
        calls = h.api.calls_by_purpose()
        assert calls["fact_reduction"] == 1, "the saved reduction is not asked again"
        assert calls["soulprint_v2"] == 2, "the one the dead worker asked for is asked again"
        assert {
            "stage": "finish",
            "call": "fact_reduction",
            "rule": "skipped",
            "code": "model_refused",
            "count": 1,
        } in job["result"]["degraded"], "the resumed finish keeps the record of the first"
        assert_billed_is_recorded(h, job, unanswered=1)
        profile = h.profile(user)
        assert profile is not None
        assert profile["import_status"] == "complete"


def test_a_retry_after_the_working_data_was_pruned_reads_the_export_again(
    database_url: str, tmp_path: Path
) -> None:
    export = zip_export(tmp_path, seed=77, conversations=4)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.responder = LooseModel()
        h.api.script(spend_limit(when=purpose_is("quick_pass")))
        user, job_id, _ = run_one(h, export)
        job = h.job(job_id)
        assert (job["status"], job["errors"][0]["code"]) == ("failed", "model_spend_limit")
        assert job["checkpoint"]["parse"]["done"] is True
        downloads = sum(1 for r in h.storage.requests if r.method == "GET")

        # Thirty-one days later the worker's maintenance deletes the working data.
        query(
            database_url,
            "update import_jobs set finished_at = now() - interval '31 days' where id = %s",
            job_id,
        )
        maintenance = h.worker().start()
        assert maintenance.wait(WORKER_TIMEOUT_SECONDS) == 0, maintenance.output()[-3000:]
        assert h.artifacts(job_id) == {}, "pruned"
        # Then an operator retries it.
        [row] = query(database_url, "select retry_import_job(%s) as status", job_id)
        assert row["status"] == "queued"
        worker = h.worker().start()
        assert worker.wait(WORKER_TIMEOUT_SECONDS) == 0, worker.output()[-3000:]
        assert "redoing stages" in worker.output()

        job = h.job(job_id)
        assert job["status"] == "succeeded", job["last_error"]
        assert sum(1 for r in h.storage.requests if r.method == "GET") > downloads, "read again"
        [*_, quick] = [r for r in h.api.message_requests if r.purpose == "quick_pass"]
        sample = re.search(r"<conversation_data>\n(.*?)\n</conversation_data>", quick.text, re.S)
        assert sample is not None and len(sample.group(1)) > 1_000, "a real sample, not nothing"
        assert h.chunk_count(user) == job["result"]["chunks"] > 0
        profile = h.profile(user)
        assert profile is not None
        assert profile["import_status"] == "complete"


def test_a_retry_skips_a_finished_parse_and_redoes_one_whose_output_cannot_be_read(
    database_url: str, tmp_path: Path
) -> None:
    """The download keeps no checkpoint entry: it runs only while the parse is still to run.
    A parse output that is not its contract's shape is read like pruned data: the parse (and the
    download before it) are done again, in the same attempt (docs/pipeline.md)."""
    export = zip_export(tmp_path, seed=78, conversations=4)
    with ImportHarness(database_url, model_api=True) as h:
        assert h.api is not None
        h.api.responder = LooseModel()
        h.api.script(spend_limit(when=purpose_is("quick_pass")))
        user, job_id, _ = run_one(h, export)
        assert h.job(job_id)["checkpoint"]["parse"]["done"] is True
        downloads = sum(1 for r in h.storage.requests if r.method == "GET")
        assert downloads > 0

        # A retry that fails in the quick pass again: the parse is done, so nothing is fetched.
        h.api.script(spend_limit(when=purpose_is("quick_pass")))
        [row] = query(database_url, "select retry_import_job(%s) as status", job_id)
        assert row["status"] == "queued"
        worker = h.worker().start()
        assert worker.wait(WORKER_TIMEOUT_SECONDS) == 0, worker.output()[-3000:]
        assert h.job(job_id)["errors"][-1]["code"] == "model_spend_limit"
        assert sum(1 for r in h.storage.requests if r.method == "GET") == downloads
        assert "download" not in h.job(job_id)["checkpoint"], "the download keeps no entry"

        # The stored parse output loses a field every version wrote: unreadable.
        query(
            database_url,
            "update import_job_artifacts set content = content - 'sample_text' "
            "where job_id = %s and name = 'parse_output'",
            job_id,
        )
        [row] = query(database_url, "select retry_import_job(%s) as status", job_id)
        assert row["status"] == "queued"
        worker = h.worker().start()
        assert worker.wait(WORKER_TIMEOUT_SECONDS) == 0, worker.output()[-3000:]
        assert "cannot be read; redoing stages" in worker.output()
        job = h.job(job_id)
        assert job["status"] == "succeeded", job["last_error"]
        assert sum(1 for r in h.storage.requests if r.method == "GET") > downloads, "read again"
        [*_, quick] = [r for r in h.api.message_requests if r.purpose == "quick_pass"]
        sample = re.search(r"<conversation_data>\n(.*?)\n</conversation_data>", quick.text, re.S)
        assert sample is not None and len(sample.group(1)) > 1_000, "a real sample, not nothing"
        assert h.chunk_count(user) == job["result"]["chunks"] > 0
        profile = h.profile(user)
        assert profile is not None
        assert profile["import_status"] == "complete"
