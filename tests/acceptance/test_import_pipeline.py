"""The import pipeline through the real daemon (model stages off): Storage download, parse,
chunks, result counts and the profile (docs/contract.md, docs/pipeline.md), across export forms,
re-imports, a worker killed mid-parse, progress as the web app sees it, and the worker's temp
files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from soulworker.conversations.chunker import RECENT_DAYS
from soulworker.conversations.conversation import UNTITLED
from soulworker.llm.models import estimate_tokens
from soulworker.tempfiles import ROOT_PREFIX, WorkspaceRoot
from soulworker.testing.export_generator import (
    ConversationFacts,
    DuplicateKind,
    ExportForm,
    ExportSummary,
    Feature,
    GeneratorConfig,
    write_export,
)
from tests.acceptance.pipeline_harness import ImportHarness
from tests.acceptance.workers import REPO_ROOT, WorkerProcess, query, wait_for

pytestmark = pytest.mark.db

TAG = re.compile(r"\(#\d+\.\d+\)")
"""The generator ends every dialogue text with a unique tag such as ``(#12.3)``."""

BIG_EXPORT_BYTES = 50_000_000
"""Large enough that the parse runs for about a second (a kill lands in it reliably, progress
is reported several times), small enough to generate in two seconds."""

DAY = 86_400


# -- helpers ---------------------------------------------------------------------------------


def drain(h: ImportHarness, **env: str) -> WorkerProcess:
    """Run one worker until no job is left; it must exit cleanly."""
    worker = h.worker(drain=True, **env).start()
    assert worker.wait(90) == 0, worker.output()[-3000:]
    return worker


def wait_status(h: ImportHarness, job_id: uuid.UUID, *statuses: str, timeout: float = 30) -> Any:
    return wait_for(
        lambda: (row := h.job(job_id))["status"] in statuses and row,
        timeout=timeout,
        what=f"job {job_id} to be {'/'.join(statuses)}",
    )


def expected_title(facts: ConversationFacts) -> str:
    return " ".join((facts.title or "").split()) or UNTITLED


def dialogue_tags(facts: ConversationFacts) -> set[str]:
    return {t for m in facts.messages for part in m.parts for t in TAG.findall(part)}


def chunk_fingerprint(database_url: str, user: uuid.UUID) -> list[tuple[Any, ...]]:
    rows = query(
        database_url,
        "select chunk_index, conversation_id, md5(content) as digest, message_count, "
        "token_count, created_at, is_recent from conversation_chunks where user_id = %s "
        "order by chunk_index",
        user,
    )
    return [tuple(row.values()) for row in rows]


def check_import(
    h: ImportHarness,
    user: uuid.UUID,
    job_id: uuid.UUID,
    summary: ExportSummary,
    *,
    bad_conversations: int = 0,
    skipped_items: int = 0,
) -> list[dict[str, Any]]:
    """Everything a finished import must show for ``summary``'s export; returns the chunks."""
    assert summary.expected is not None
    job = h.job(job_id)
    assert job["status"] == "succeeded", job["last_error"]
    assert (job["progress_percent"], job["attempt"], job["last_error"]) == (100, 1, None)

    winners = {i: f for i, f in summary.expected.items() if f.messages}
    result = job["result"]
    assert result["conversations"] == len(winners)
    assert result["messages"] == sum(len(f.messages) for f in winners.values())
    assert result["conversations_without_dialogue"] == len(summary.expected) - len(winners)
    assert result["duplicate_conversations"] == summary.items_written - len(summary.expected)
    unknown: Counter[str] = Counter()
    for facts in winners.values():
        unknown.update(facts.unknown_content_types)
    assert result["unknown_content_types"] == dict(unknown)
    assert result["bad_conversations"] == bad_conversations
    assert result["skipped_items"] == skipped_items
    assert result["export_bytes"] == summary.file_bytes
    assert result["chunk_tier"] == "medium"
    assert set(result["stage_seconds"]) == {"download", "parse", "embed"}

    chunks = h.chunks(user)
    assert len(chunks) == result["chunks"] > 0
    by_conversation: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for chunk in chunks:
        by_conversation[chunk["conversation_id"]].append(chunk)
    assert set(by_conversation) == set(winners), "every conversation with dialogue, no decoy"

    # The parse's clock lies between the job's start and finish: decide is_recent only where
    # the answer cannot depend on which instant it used.
    started, finished = job["started_at"], job["finished_at"]
    recent_for_sure = finished - timedelta(days=RECENT_DAYS)
    old_for_sure = started - timedelta(days=RECENT_DAYS)
    for conversation_id, mine in by_conversation.items():
        facts = winners[conversation_id]
        title = expected_title(facts)
        created = datetime.fromtimestamp(facts.create_time, tz=UTC)
        indexes = [c["chunk_index"] for c in mine]
        assert indexes == list(range(indexes[0], indexes[0] + len(mine))), "contiguous"
        for chunk in mine:
            assert chunk["content"].startswith(f"# {title}\n")
            assert chunk["title"] == title
            assert (chunk["user_id"], chunk["import_job_id"]) == (user, job_id)
            assert chunk["chunk_tier"] == "medium"
            assert chunk["token_count"] == estimate_tokens(chunk["content"])
            assert 0 < chunk["message_count"] <= len(facts.messages)
            assert abs((chunk["created_at"] - created).total_seconds()) < 0.001
            if created >= recent_for_sure:
                assert chunk["is_recent"] is True, (created, started)
            elif created < old_for_sure:
                assert chunk["is_recent"] is False, (created, started)
        if len(mine) == 1:
            assert mine[0]["message_count"] == len(facts.messages)
        else:
            assert sum(c["message_count"] for c in mine) >= len(facts.messages)
        # No dialogue lost, none added (dead branches, tool traffic, the losing copy's turns).
        found = {t for c in mine for t in TAG.findall(c["content"])}
        assert found == dialogue_tags(facts), conversation_id

    # chunk_index is contiguous across the job apart from the ranges of replaced copies.
    gaps = max(c["chunk_index"] for c in chunks) + 1 - len(chunks)
    replacing = {DuplicateKind.NEWER_LATER, DuplicateKind.TIE_LARGER, DuplicateKind.IDENTICAL}
    if not set(summary.duplicates.values()) & replacing:
        assert gaps == 0
    assert len({c["chunk_index"] for c in chunks}) == len(chunks)

    profile = h.profile(user)
    assert profile is not None
    assert profile["import_job_id"] == job_id
    assert (profile["import_status"], profile["progress_percent"]) == ("complete", 100)
    assert (profile["import_stage"], profile["import_error"]) == ("Complete", None)
    assert h.artifacts(job_id) == {}, "personal working data is gone once the job succeeded"
    return chunks


# -- 1. end to end ---------------------------------------------------------------------------


def test_an_export_becomes_chunks_counts_and_a_complete_profile(
    database_url: str, tmp_path: Path
) -> None:
    # Times spread over the two years before a month ago: some conversations are recent.
    config = GeneratorConfig(
        seed=21,
        conversations=30,
        now=time.time() - 30 * DAY,
        median_conversation_bytes=8_000,
        rates={
            Feature.DUPLICATES: 0.15,
            Feature.UNKNOWN_CONTENT_TYPES: 0.05,
            Feature.NULL_TITLES: 0.1,
            Feature.HUGE_MESSAGES: 0.01,
        },
    )
    export = tmp_path / "conversations.json"
    summary = write_export(export, config, collect_facts=True)
    assert summary.expected is not None
    assert summary.duplicates, "the export repeats some conversations"
    # Entries that are no conversation at all, among the real ones: counted, skipped. (A
    # conversation without an id is not among them: it is imported under a derived id.)
    items = json.loads(export.read_text(encoding="utf-8"))
    items[3:3] = [{"id": "bad", "mapping": [1, 2]}, {"id": "bad", "mapping": "not a tree"}, 7, None]
    export.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    summary.file_bytes = export.stat().st_size

    with ImportHarness(database_url) as h:
        user = h.new_user()
        h.upload(user, export, "conversations.json")
        job_id = h.enqueue(user, f"imports/{user}/conversations.json")
        drain(h)
        chunks = check_import(h, user, job_id, summary, bad_conversations=2, skipped_items=2)

    recent = {c["is_recent"] for c in chunks}
    assert recent == {True, False}, "the export has recent and old conversations"
    assert any(f.title is None for f in summary.expected.values())
    assert any(c["title"] == UNTITLED for c in chunks)
    assert any(c["message_count"] > 1 for c in chunks)
    by_conversation = Counter(c["conversation_id"] for c in chunks)
    assert max(by_conversation.values()) > 1, "a long conversation spans several chunks"


@pytest.mark.parametrize("form", list(ExportForm), ids=lambda form: form.value)
def test_every_export_form_goes_through_the_same_path(
    database_url: str, tmp_path: Path, form: ExportForm
) -> None:
    config = GeneratorConfig(
        seed=32,
        conversations=12,
        form=form,
        shard_bytes=40_000,  # several shards for zip-shards
        median_conversation_bytes=6_000,
        rates={Feature.DUPLICATES: 0.25},
    )
    export = tmp_path / f"export.{form.value}"
    summary = write_export(export, config, collect_facts=True)
    if form is ExportForm.ZIP_SHARDS:
        assert len(summary.members) > 2
    with ImportHarness(database_url) as h:
        user = h.new_user()
        h.upload(user, export)
        # The web app's file_type hint is wrong on purpose: the content decides.
        job_id = h.enqueue(user, file_type="json" if form.is_zip else "zip")
        drain(h)
        check_import(h, user, job_id, summary)


# -- 2. importing again ----------------------------------------------------------------------


def test_the_same_export_twice_leaves_exactly_the_second_jobs_chunks(
    database_url: str, tmp_path: Path
) -> None:
    export = tmp_path / "export.zip"
    summary = write_export(
        export,
        GeneratorConfig(seed=44, conversations=15, form=ExportForm.ZIP),
        collect_facts=True,
    )
    with ImportHarness(database_url) as h:
        user, bystander = h.new_user(), h.new_user()
        h.upload(user, export)
        h.upload(bystander, export)
        first = h.enqueue(user)
        other = h.enqueue(bystander)
        worker = h.worker(drain=False).start()
        wait_status(h, first, "succeeded", "failed")
        wait_status(h, other, "succeeded", "failed")
        first_set = chunk_fingerprint(database_url, user)
        bystander_set = chunk_fingerprint(database_url, bystander)
        check_import(h, user, first, summary)

        second = h.enqueue(user)
        wait_status(h, second, "succeeded", "failed")
        worker.send(signal.SIGTERM)
        assert worker.wait(30) == 0
        chunks = check_import(h, user, second, summary)

    assert {c["import_job_id"] for c in chunks} == {second}, "the first job's chunks are gone"
    assert chunk_fingerprint(database_url, user) == first_set, "the same set, written once"
    assert h.job(second)["result"]["previous_chunks_replaced"] == len(first_set)
    assert chunk_fingerprint(database_url, bystander) == bystander_set, "other users untouched"


# -- 3. a kill during the parse --------------------------------------------------------------


@pytest.fixture(scope="module")
def big_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "conversations.json"
    write_export(path, GeneratorConfig(seed=8, target_bytes=BIG_EXPORT_BYTES))
    return path


def parse_transaction_has_written(database_url: str) -> bool:
    """Whether some session holds an open transaction that has COPYed chunks in already."""
    rows = query(
        database_url,
        "select count(*) as n from pg_stat_activity where datname = current_database() "
        "and backend_xid is not null and query ilike '%%conversation_chunks%%' "
        "and pid <> pg_backend_pid()",
    )
    return bool(rows[0]["n"])


def test_a_worker_killed_mid_parse_is_rescued_and_leaves_exactly_one_chunk_set(
    database_url: str, tmp_path: Path, big_export: Path
) -> None:
    query(database_url, PROGRESS_LOG)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    with ImportHarness(database_url) as h:
        user, clean_user = h.new_user(), h.new_user()
        h.upload(user, big_export)
        h.upload(clean_user, big_export)
        job_id = h.enqueue(user)
        first = h.worker(drain=False, TMPDIR=str(tmpdir)).start()
        wait_for(
            lambda: h.job(job_id)["stage"] == "parse",
            timeout=30,
            what="the parse stage to start",
            context=first.output,
        )
        wait_for(
            lambda: parse_transaction_has_written(database_url),
            timeout=10,
            what="the parse transaction to hold chunks",
            context=first.output,
        )
        first.kill()
        killed = h.job(job_id)
        assert (killed["status"], killed["stage"], killed["attempt"]) == ("running", "parse", 1)
        assert "parse" not in killed["checkpoint"], "the kill landed inside the parse"
        assert h.chunk_count(user) == 0, "the killed attempt's rows were never visible"
        root = tmpdir / f"{ROOT_PREFIX}{os.getuid()}"
        killed_workspaces = [p for p in root.iterdir() if p.is_dir()]
        assert killed_workspaces, "the killed worker left its workspace behind"

        # The rescuer also runs a clean import of the same export for comparison.
        clean_job = h.enqueue(clean_user)
        second = drain(h, TMPDIR=str(tmpdir))

    job = h.job(job_id)
    assert (job["status"], job["attempt"]) == ("succeeded", 2), job["last_error"]
    clean = h.job(clean_job)
    assert (clean["status"], clean["attempt"]) == ("succeeded", 1)
    assert job["result"]["chunks"] == clean["result"]["chunks"] == h.chunk_count(user) > 0
    rescued = chunk_fingerprint(database_url, user)
    assert rescued == chunk_fingerprint(database_url, clean_user), (
        "the rescued job wrote exactly what a clean run writes, each chunk once"
    )
    assert {c["import_job_id"] for c in h.chunks(user)} == {job_id}
    cleanup = [
        e for e in second.events() if e.get("event") == "removed temp files left by dead workers"
    ]
    assert cleanup and cleanup[0]["workspaces"] >= 1, "the rescuer removed the dead one's files"
    assert not any(p.exists() for p in killed_workspaces)
    # Across the kill and the rescue, the user never saw progress go back.
    for owner in (job_id, user):
        shown = [r["percent"] for r in progress_log(database_url, owner)]
        assert shown == sorted(shown) and shown[-1] == 100, shown


# -- 4. progress as the web app sees it ------------------------------------------------------

PROGRESS_LOG = """
create table test_progress_log (
    id bigserial primary key,
    source text not null,
    owner uuid not null,
    stage text,
    percent integer,
    label text,
    status text
);
create function test_log_job_progress() returns trigger language plpgsql as $$
begin
    insert into test_progress_log (source, owner, stage, percent, status)
    values ('job', new.id, new.stage, new.progress_percent, new.status);
    return new;
end $$;
create trigger test_log_job_progress after update on import_jobs for each row
    when (old.progress_percent is distinct from new.progress_percent
          or old.stage is distinct from new.stage or old.status is distinct from new.status)
    execute function test_log_job_progress();
create function test_log_profile_progress() returns trigger language plpgsql as $$
begin
    insert into test_progress_log (source, owner, percent, label, status)
    values ('profile', new.user_id, new.progress_percent, new.import_stage, new.import_status);
    return new;
end $$;
create trigger test_log_profile_progress after insert or update on user_profiles for each row
    execute function test_log_profile_progress();
"""

LABEL_RANGES = {
    "Starting import": (0, 0),
    "Downloading export": (0, 20),
    "Parsing conversations": (20, 35),
    "Indexing memories": (50, 60),
    "Complete": (100, 100),
}


def progress_log(database_url: str, owner: uuid.UUID) -> list[dict[str, Any]]:
    """The progress writes to one job (by job id) or one profile (by user id), in order."""
    return query(
        database_url, "select * from test_progress_log where owner = %s order by id", owner
    )


def runs(values: list[Any]) -> list[Any]:
    """``values`` with consecutive repeats collapsed."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


def test_progress_never_decreases_and_follows_the_stages(
    database_url: str, big_export: Path
) -> None:
    query(database_url, PROGRESS_LOG)
    with ImportHarness(database_url) as h:
        user = h.new_user()
        h.upload(user, big_export)
        job_id = h.enqueue(user)
        # Every report reaches the database, so every step can be checked.
        drain(h, SOULWORKER_PROGRESS_INTERVAL_SECONDS="0")
        assert h.job(job_id)["status"] == "succeeded"
    job_rows = progress_log(database_url, job_id)
    profile_rows = progress_log(database_url, user)

    percents = [r["percent"] for r in job_rows]
    assert percents == sorted(percents), "the job's progress never decreases"
    assert runs([r["status"] for r in job_rows]) == ["running", "succeeded"]
    # The embed stage runs (skipped: embedding is off) after the parse.
    stages = runs([r["stage"] for r in job_rows if r["stage"]])
    assert stages == ["download", "parse", "embed"]
    assert (job_rows[-1]["status"], job_rows[-1]["percent"]) == ("succeeded", 100)
    ranges = {"download": (0, 20), "parse": (20, 35), "embed": (50, 60)}
    for row in job_rows:
        if row["status"] == "running" and row["stage"]:
            low, high = ranges[row["stage"]]
            assert low <= row["percent"] <= high, row
    downloading = {r["percent"] for r in job_rows if r["stage"] == "download"}
    parsing = {r["percent"] for r in job_rows if r["stage"] == "parse"}
    assert len(downloading & set(range(1, 20))) >= 5, f"download by bytes: {sorted(downloading)}"
    assert parsing & set(range(21, 35)), f"parse by bytes read: {sorted(parsing)}"

    shown = [r["percent"] for r in profile_rows]
    assert shown == sorted(shown), "the web app never sees progress go back"
    labels = [r["label"] for r in profile_rows]
    assert runs(labels) == list(LABEL_RANGES)
    for row in profile_rows:
        low, high = LABEL_RANGES[row["label"]]
        assert low <= row["percent"] <= high, row
    assert runs([r["status"] for r in profile_rows]) == ["processing", "complete"]


# -- 5. temp files ---------------------------------------------------------------------------

DEAD_WORKER = """
import sys, time
from pathlib import Path
from soulworker.tempfiles import WorkspaceRoot
workspace = WorkspaceRoot.open(Path(sys.argv[1]))
held = workspace.job_file("0f0f0f0f-dead-job", ".export")
path = held.__enter__()
path.write_bytes(b"x" * 100_000)
print(path, flush=True)
time.sleep(120)
"""


@pytest.fixture
def dead_workers_file(tmp_path: Path) -> Path:
    """An export left in the workspace of a worker process that was SIGKILLed."""
    base = tmp_path / "tmp"
    base.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", DEAD_WORKER, str(base)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        path = Path(process.stdout.readline().strip())
        assert path.is_file()
    finally:
        process.kill()
        process.wait(10)
    return path


def test_temp_files_are_removed_after_each_job_and_dead_workers_leftovers_at_start(
    database_url: str, tmp_path: Path, dead_workers_file: Path
) -> None:
    base = dead_workers_file.parents[2]
    root = WorkspaceRoot.ensure(base)
    # A workspace a live process holds (this one): never touched by another worker's cleanup.
    live = root.create_workspace()
    try:
        with live.job_file("live-job", ".export") as live_file:
            live_file.write_bytes(b"y" * 10)
            export = tmp_path / "export.zip"
            write_export(export, GeneratorConfig(seed=5, conversations=5, form=ExportForm.ZIP))
            with ImportHarness(database_url) as h:
                good_user, bad_user = h.new_user(), h.new_user()
                h.upload(good_user, export)
                h.storage.put_bytes("imports", f"{bad_user}/export.zip", b"%PDF-1.7 not an export")
                good, bad = h.enqueue(good_user), h.enqueue(bad_user)
                worker = h.worker(drain=False, TMPDIR=str(base)).start()
                assert wait_status(h, good, "succeeded", "failed")["status"] == "succeeded"
                assert wait_status(h, bad, "succeeded", "failed")["status"] == "failed"

                [own] = [p for p in root.path.glob(f"w-{worker.pid}-*") if p.is_dir()]
                assert own.stat().st_mode & 0o777 == 0o700
                assert list(own.iterdir()) == [], "no export left after a success or a failure"
                assert not dead_workers_file.parent.exists(), "the dead worker's files are gone"
                assert live_file.read_bytes() == b"y" * 10, "a live worker's file is untouched"
                [cleanup] = [
                    e
                    for e in worker.events()
                    if e.get("event") == "removed temp files left by dead workers"
                ]
                assert (cleanup["workspaces"], cleanup["files"], cleanup["bytes"]) == (
                    1,
                    1,
                    100_000,
                )
                worker.send(signal.SIGTERM)
                assert worker.wait(30) == 0
            assert not own.exists(), "a worker removes its workspace when it stops"
    finally:
        live.close()
