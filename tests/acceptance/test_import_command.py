"""``soulworker import PATH`` end to end, as a real subprocess, on the shipped sample export.

The command runs the real worker, job runner and pipeline against a real PostgreSQL (the test
database through DATABASE_URL, or the embedded one it starts itself), the download stage takes
the export from the local file through the export-source seam, and, with a key, the command
talks to the fake Messages API over loopback. On a shared database it works its own job alone:
other jobs and a daemon running beside it are never touched (docs/queue.md, "One named job").
Output is captured, so it is never a terminal: the plain progress lines are what is checked.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rich.console import Console

from soulworker.embeddings.dimensions import PROBE_TEXT
from soulworker.llm.schemas import SECTION_NAMES
from soulworker.local.embedded_postgres import (
    EmbeddedPostgres,
    PostgresBinaries,
    PostgresUnavailable,
    find_postgres_binaries,
)
from soulworker.local.progress import JobSnapshot, PlainProgress, RichProgress
from soulworker.local.results import ALL_FILES, JobOutcome, summary_lines
from soulworker.local.run import INTERRUPTED_EXIT_CODE, LOCAL_MAX_ATTEMPTS
from soulworker.settings import Settings
from soulworker.soulprint.cost_estimate import estimate_model_cost
from soulworker.soulprint.memory import HEADINGS, MEMORY_TITLE
from soulworker.soulprint.sections import SECTION_FILES, SECTION_TITLES, section_markdown
from soulworker.testing import embeddings_server as embeddings_kit
from soulworker.testing.embeddings_server import EmbeddingsServer
from soulworker.testing.export_generator import write_export
from soulworker.testing.messages_api import FakeMessagesAPI
from tests.acceptance.workers import REPO_ROOT, WorkerProcess, query, wait_for

SAMPLE = REPO_ROOT / "examples" / "sample-export.zip"
MAKE_SAMPLE = REPO_ROOT / "examples" / "make_sample_export.py"
TEST_KEY = "sk-ant-test-0123456789abcdef"
COMMAND_TIMEOUT_SECONDS = 60
PROGRESS_LINE = re.compile(r"^\[\s*(\d{1,3})%\] \S.*$")
# Variables of the developer's shell that would change what the command does.
SCRUBBED = ("DATABASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "SUPABASE_URL")


@pytest.fixture
def short_tmpdir() -> Iterator[Path]:
    """A short TMPDIR of the test's own (Unix socket paths are limited to ~100 characters).

    World-traversable like /tmp: run as root, the embedded server runs as another account.
    """
    path = Path(tempfile.mkdtemp(prefix="swi-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def import_env(tmpdir: Path, env: Mapping[str, str] | None) -> dict[str, str]:
    base = {
        key: value
        for key, value in os.environ.items()
        if key not in SCRUBBED and not key.startswith("SOULWORKER_")
    }
    return {**base, "PYTHONPATH": str(REPO_ROOT), "TMPDIR": str(tmpdir), **(env or {})}


def run_import(
    *args: str, cwd: Path, tmpdir: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "soulworker", "import", *args],
        cwd=cwd,
        env=import_env(tmpdir, env),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def summary(stdout: str) -> dict[str, str]:
    """The summary's ``  label  value`` rows."""
    rows: dict[str, str] = {}
    for line in stdout.splitlines():
        match = re.match(r"^  (\S[\w ]*?\S)\s{2,}(.+)$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def progress_lines(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "\x1b" not in stderr, "no terminal control sequences when output is not a terminal"
    for line in lines:
        assert PROGRESS_LINE.match(line), f"not a progress line: {line!r}"
    percents = [int(PROGRESS_LINE.match(line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert percents == sorted(percents), "progress never goes back"
    return lines


def the_job(database_url: str) -> dict[str, Any]:
    rows = query(database_url, "select * from import_jobs")
    assert len(rows) == 1, "the command created exactly one job"
    return rows[0]


def the_profile(database_url: str, user_id: uuid.UUID) -> dict[str, Any]:
    rows = query(database_url, "select * from user_profiles where user_id = %s", user_id)
    assert len(rows) == 1
    return rows[0]


def sample_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_sample_export", MAKE_SAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the sample export


def test_the_shipped_sample_export_is_what_its_script_generates(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(MAKE_SAMPLE), "--check"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert 100_000 < SAMPLE.stat().st_size < 1_000_000, "a few hundred KB"


# --- with a model key


@pytest.mark.db
def test_with_a_model_key_the_six_files_are_readable_markdown_of_the_profile(
    database_url: str, tmp_path: Path, short_tmpdir: Path
) -> None:
    out = tmp_path / "out"
    with FakeMessagesAPI() as api:
        completed = run_import(
            str(SAMPLE),
            "--out",
            str(out),
            cwd=tmp_path,
            tmpdir=short_tmpdir,
            env={
                "DATABASE_URL": database_url,
                "ANTHROPIC_API_KEY": TEST_KEY,
                "ANTHROPIC_BASE_URL": api.base_url,
            },
        )
        calls = api.calls_by_purpose()
    assert completed.returncode == 0, completed.stderr[-3000:]

    job = the_job(database_url)
    assert job["status"] == "succeeded"
    assert job["max_attempts"] == LOCAL_MAX_ATTEMPTS
    assert job["run_after"].year == 9999, "set aside: no daemon's claim ever takes it"
    assert job["storage_path"] == f"imports/{job['user_id']}/sample-export.zip"
    profile = the_profile(database_url, job["user_id"])
    assert profile["import_status"] == "complete"

    assert sorted(p.name for p in out.iterdir()) == sorted(ALL_FILES)
    for name in SECTION_NAMES:
        text = (out / SECTION_FILES[name]).read_text()
        assert text.startswith(f"# {SECTION_TITLES[name]}\n"), "a markdown title, not JSON"
        assert text == section_markdown(name, json.loads(profile[f"{name}_md"]), heading_level=1)
    memory = (out / "MEMORY.md").read_text()
    assert memory == profile["memory_md"]
    assert memory.startswith(MEMORY_TITLE + "\n")
    for heading in HEADINGS.values():
        assert f"\n## {heading}\n" in memory

    result = job["result"]
    rows = summary(completed.stdout)
    for label in ("conversations", "messages", "chunks", "facts"):
        assert rows[label] == f"{result[label]:,}", label
    total = result["cost"]["total"]
    assert rows["model calls"] == (
        f"{total['calls']:,}: {total['input_tokens']:,} input + "
        f"{total['output_tokens']:,} output tokens"
    )
    assert rows["cost"].startswith("$")
    assert total["calls"] == sum(calls.values())
    assert {"quick_pass", "fact_extraction", "soulprint_v2"} <= set(calls)
    assert f"job {job['id']}, user {job['user_id']}" in completed.stdout, "the rows stay; said so"

    lines = progress_lines(completed.stderr)
    assert lines[-1] == "[100%] Done"
    assert len(lines) < 30, "a few lines per stage at most"


@pytest.mark.db
def test_the_import_command_calls_directly_even_when_batch_is_set(
    database_url: str, tmp_path: Path, short_tmpdir: Path
) -> None:
    """A person waits for ``soulworker import``: no Message Batch that may take an hour."""
    with FakeMessagesAPI() as api:
        completed = run_import(
            str(SAMPLE),
            "--out",
            str(tmp_path / "out"),
            cwd=tmp_path,
            tmpdir=short_tmpdir,
            env={
                "DATABASE_URL": database_url,
                "ANTHROPIC_API_KEY": TEST_KEY,
                "ANTHROPIC_BASE_URL": api.base_url,
                "SOULWORKER_FULL_PASS_MODE": "batch",
            },
        )
        calls = api.calls_by_purpose()
        batches = api.batches
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert batches == []
    job = the_job(database_url)
    assert job["status"] == "succeeded"
    assert calls["fact_extraction"] == job["result"]["full_pass"]["batches"] >= 1


# --- without model calls


@pytest.mark.db
def test_dry_run_makes_no_model_call_and_prints_the_estimate_the_job_recorded(
    database_url: str, tmp_path: Path, short_tmpdir: Path
) -> None:
    out = tmp_path / "out"
    with FakeMessagesAPI() as api:
        completed = run_import(
            str(SAMPLE),
            "--out",
            str(out),
            "--dry-run",
            cwd=tmp_path,
            tmpdir=short_tmpdir,
            env={
                "DATABASE_URL": database_url,
                "ANTHROPIC_API_KEY": TEST_KEY,
                "ANTHROPIC_BASE_URL": api.base_url,
            },
        )
        requests = api.requests
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert requests == [], "a dry run never calls the model"
    assert not out.exists(), "no placeholder files without a soulprint"
    assert "No soulprint written" in completed.stdout

    job = the_job(database_url)
    assert job["status"] == "succeeded"
    estimate = job["result"]["cost_estimate"]
    total = estimate["total"]
    rows = summary(completed.stdout)
    assert rows["model calls"] == "none (--dry-run)"
    assert rows["would cost"].startswith(
        f"about ${total['usd']:,.4f} for {total['calls']:,} calls: "
        f"{total['input_tokens']:,} input + {total['output_tokens']:,} output tokens"
    )
    # Planned as the real stages would: one quick pass, the fact batches, one v2 call; every
    # chunk's text goes to the full pass once (the sample is far under the token budget).
    chunk_tokens = query(
        database_url,
        "select coalesce(sum(token_count), 0) as n from conversation_chunks "
        "where import_job_id = %s",
        job["id"],
    )[0]["n"]
    batches = estimate["by_stage"]["full_pass"]["calls"]
    assert batches >= 1
    assert total["calls"] == 1 + batches + 1
    # Both full-pass modes: the batch one pays half of the full pass's share.
    modes = total["usd_by_full_pass_mode"]
    full_pass_usd = estimate["by_stage"]["full_pass"]["usd"]
    assert modes["direct"] == total["usd"]
    assert modes["batch"] == pytest.approx(total["usd"] - full_pass_usd / 2, abs=1e-6)
    assert rows["full pass mode"] == (
        f"direct about ${modes['direct']:,.4f}, batch about ${modes['batch']:,.4f} "
        "(SOULWORKER_FULL_PASS_MODE; soulworker import calls directly)"
    )
    assert estimate["by_stage"]["full_pass"]["input_tokens"] >= chunk_tokens * 0.9
    assert total["usd"] > 0
    assert (
        query(database_url, "select name from import_job_artifacts where job_id = %s", job["id"])
        == []
    ), "the personal working data is deleted on success, as in the daemon"


needs_postgres_binaries = pytest.mark.skipif(
    find_postgres_binaries() is None,
    reason="neither pgserver nor a PostgreSQL 15+ initdb is installed for the embedded database",
)


def processes_mentioning(fragment: str) -> list[int]:
    """Pids whose command line contains ``fragment`` (Linux /proc; empty elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if fragment.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@needs_postgres_binaries
def test_without_a_key_or_a_database_it_runs_on_an_embedded_postgres_and_cleans_up(
    tmp_path: Path, short_tmpdir: Path
) -> None:
    completed = run_import(str(SAMPLE), cwd=tmp_path, tmpdir=short_tmpdir)
    assert completed.returncode == 0, completed.stderr[-3000:]

    rows = summary(completed.stdout)
    assert rows["model calls"] == "none (ANTHROPIC_API_KEY is not set)"
    assert rows["would cost"].startswith("about $")
    expected = write_export(
        tmp_path / "again.zip", sample_module().SAMPLE_CONFIG, collect_facts=True
    ).expected
    assert expected is not None
    with_dialogue = [facts for facts in expected.values() if facts.messages]
    assert rows["conversations"] == f"{len(with_dialogue):,}"
    assert rows["messages"] == f"{sum(len(f.messages) for f in with_dialogue):,}"
    assert not (tmp_path / "soulprint").exists()
    assert "DATABASE_URL" not in completed.stdout, "nothing stays behind to point at"
    progress_lines(completed.stderr)

    leftovers = [
        path.relative_to(short_tmpdir)
        for path in short_tmpdir.rglob("*")
        # soulworker-<uid>/ is the workers' shared temp root, kept by design (tempfiles.py).
        if path.name != f"soulworker-{os.getuid()}"
    ]
    assert leftovers == [], "the database, its socket and the export's copy are removed"
    assert processes_mentioning(str(short_tmpdir)) == [], "the embedded server was stopped"


@needs_postgres_binaries
def test_keep_db_leaves_the_stopped_database_and_says_where(
    tmp_path: Path, short_tmpdir: Path
) -> None:
    completed = run_import(str(SAMPLE), "--keep-db", cwd=tmp_path, tmpdir=short_tmpdir)
    assert completed.returncode == 0, completed.stderr[-3000:]
    kept = [path for path in short_tmpdir.iterdir() if path.name.startswith("soulworker-pg-")]
    assert len(kept) == 1
    assert (kept[0] / "data" / "PG_VERSION").is_file()
    assert f"Kept the embedded database in {kept[0]}" in completed.stdout
    assert processes_mentioning(str(kept[0])) == [], "kept, but stopped"


@needs_postgres_binaries
def test_with_an_openai_compatible_endpoint_the_embedded_database_gets_every_chunk_embedded(
    tmp_path: Path, short_tmpdir: Path
) -> None:
    """pgvector is created in the embedded database, so the embed stage has its column."""
    with EmbeddingsServer() as server:
        completed = run_import(
            str(SAMPLE),
            cwd=tmp_path,
            tmpdir=short_tmpdir,
            env={
                "SOULWORKER_EMBED_PROVIDER": "openai",
                "SOULWORKER_EMBED_ENDPOINT_URL": server.openai_base_url,
                "SOULWORKER_EMBED_API_KEY": embeddings_kit.FAKE_OPENAI_API_KEY,
            },
        )
        texts = [
            text
            for request in server.answered
            for text in request.texts
            if text != PROBE_TEXT  # the dimension check's call
        ]
    assert completed.returncode == 0, completed.stderr[-3000:]

    rows = summary(completed.stdout)
    chunks = int(rows["chunks"].replace(",", ""))
    assert chunks > 0
    assert rows["embedded chunks"] == rows["chunks"], "every chunk embedded"
    assert len(texts) == chunks, "each chunk's text sent once"
    progress_lines(completed.stderr)


# --- refusals and errors


def jobs_of(database_url: str, user_id: uuid.UUID) -> list[dict[str, Any]]:
    return query(database_url, "select * from import_jobs where user_id = %s", user_id)


@pytest.mark.db
def test_a_database_with_another_queued_job_works_its_own_job_and_leaves_the_other_alone(
    database_url: str, tmp_path: Path, short_tmpdir: Path
) -> None:
    other_user = uuid.uuid4()
    query(
        database_url,
        "insert into import_jobs (user_id, storage_path, priority) values (%s, %s, %s)",
        other_user,
        f"imports/{other_user}/export.zip",
        2**31 - 1,  # the highest priority: first in any claim but a named one
    )
    [before] = jobs_of(database_url, other_user)
    completed = run_import(
        str(SAMPLE), cwd=tmp_path, tmpdir=short_tmpdir, env={"DATABASE_URL": database_url}
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    [after] = jobs_of(database_url, other_user)
    assert after == before, "the other job is untouched: not claimed, not released, not updated"
    assert (after["status"], after["attempt"], after["lease_owner"]) == ("queued", 0, None)
    [mine] = query(database_url, "select * from import_jobs where user_id <> %s", other_user)
    assert (mine["status"], mine["attempt"]) == ("succeeded", 1)


@pytest.mark.db
def test_a_daemon_running_beside_it_never_claims_the_imports_job(
    database_url: str, tmp_path: Path, short_tmpdir: Path
) -> None:
    # A daemon that polls often and listens for NOTIFY, with a queued job of its own.
    daemon_user = uuid.uuid4()
    with WorkerProcess(
        database_url, env={"SOULWORKER_POLL_SECONDS": "0.1", "SOULWORKER_CONCURRENCY": "2"}
    ) as daemon:
        daemon.wait_for_event("worker started")
        completed = run_import(
            str(SAMPLE), cwd=tmp_path, tmpdir=short_tmpdir, env={"DATABASE_URL": database_url}
        )
        query(
            database_url,
            "insert into import_jobs (user_id, storage_path) values (%s, %s)",
            daemon_user,
            f"imports/{daemon_user}/ok",
        )
        daemon.wait_for_event("job attempt ended")  # the daemon was alive all along
        claimed = daemon.wait_for_event("job claimed")
        assert daemon.process is not None and daemon.process.poll() is None
        events = daemon.events()
    assert completed.returncode == 0, completed.stderr[-3000:]

    [mine] = query(database_url, "select * from import_jobs where user_id <> %s", daemon_user)
    assert (mine["status"], mine["attempt"]) == ("succeeded", 1)
    claimed_id = uuid.UUID(claimed["job_id"])
    assert claimed_id != mine["id"]
    claims = [event["job_id"] for event in events if event.get("event") == "job claimed"]
    assert str(mine["id"]) not in claims, "the daemon never claimed the import's job"
    ran = query(database_url, "select distinct job_id from test_handler_runs")
    assert [row["job_id"] for row in ran] == [claimed_id], "its handler ran only its own job"


@pytest.mark.db
def test_ctrl_c_stops_releases_then_cancels_the_job_and_exits_130(
    database_url: str, tmp_path: Path, short_tmpdir: Path
) -> None:
    # Every model call takes longer than the local shutdown budget (3 s): Ctrl-C during the
    # quick pass takes the cancel-work path, then the command cancels the released job.
    with FakeMessagesAPI(latency_seconds=10) as api:
        process = subprocess.Popen(
            [sys.executable, "-m", "soulworker", "import", str(SAMPLE)],
            cwd=tmp_path,
            env=import_env(
                short_tmpdir,
                {
                    "DATABASE_URL": database_url,
                    "ANTHROPIC_API_KEY": TEST_KEY,
                    "ANTHROPIC_BASE_URL": api.base_url,
                },
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(
                lambda: query(database_url, "select 1 from import_jobs where stage = 'quick_pass'"),
                timeout=COMMAND_TIMEOUT_SECONDS,
                what="the quick pass to start",
            )
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_SECONDS)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == INTERRUPTED_EXIT_CODE, stderr[-3000:]
    assert "Interrupted: stopping the import" in stderr
    assert "Imported" not in stdout
    job = the_job(database_url)
    assert (job["status"], job["attempt"], job["lease_owner"]) == ("cancelled", 0, None)
    assert job["run_after"].year == 9999, "released, it stayed set aside until cancelled"


def test_a_missing_file_is_one_line_and_exit_2(tmp_path: Path, short_tmpdir: Path) -> None:
    completed = run_import(str(tmp_path / "nope.zip"), cwd=tmp_path, tmpdir=short_tmpdir)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        f"soulworker: no such file: {tmp_path / 'nope.zip'}"
    ]
    assert completed.stdout == ""

    folder = run_import(str(tmp_path), cwd=tmp_path, tmpdir=short_tmpdir)
    assert folder.returncode == 2
    assert len(folder.stderr.strip().splitlines()) == 1 and "is not a file" in folder.stderr

    taken = tmp_path / "taken"
    taken.write_text("a file where the output folder should go")
    out_is_a_file = run_import(str(SAMPLE), "--out", str(taken), cwd=tmp_path, tmpdir=short_tmpdir)
    assert out_is_a_file.returncode == 2, "refused before any work, not after the import"
    assert out_is_a_file.stderr.strip().splitlines() == [
        f"soulworker: --out {taken} is a file; give a folder"
    ]


@pytest.mark.db
def test_an_unreadable_export_fails_with_the_jobs_message(
    database_url: str, tmp_path: Path, short_tmpdir: Path
) -> None:
    export = tmp_path / "notes.txt"
    export.write_text("these are my notes, not a ChatGPT export\n")
    completed = run_import(
        str(export), cwd=tmp_path, tmpdir=short_tmpdir, env={"DATABASE_URL": database_url}
    )
    assert completed.returncode == 1
    job = the_job(database_url)
    assert job["status"] == "failed" and job["last_error"]
    error_lines = [line for line in completed.stderr.splitlines() if line.startswith("soulworker:")]
    assert error_lines == [f"soulworker: the import failed: {job['last_error']}"]
    assert "Traceback" not in completed.stderr
    assert "Imported" not in completed.stdout


# --- the pieces, in process


def fake_postgres(folder: Path, version: str, *, initdb_exit: int = 0) -> Path:
    folder.mkdir()
    (folder / "postgres").write_text(f"#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n")
    (folder / "initdb").write_text(
        f"#!/bin/sh\necho 'initdb: cannot do that' >&2\nexit {initdb_exit}\n"
    )
    for program in ("postgres", "initdb"):
        (folder / program).chmod(0o755)
    return folder


def test_postgres_discovery_takes_the_first_version_15_or_newer(tmp_path: Path) -> None:
    old = fake_postgres(tmp_path / "old", "14.9")
    new = fake_postgres(tmp_path / "new", "16.2 (Debian)")
    empty = tmp_path / "empty"
    empty.mkdir()
    found = find_postgres_binaries([("a", empty), ("b", old), ("c", new)])
    assert found is not None
    assert (found.bindir, found.major, found.source) == (new.resolve(), 16, "c")
    assert find_postgres_binaries([("a", empty), ("b", old)]) is None


def test_an_embedded_postgres_that_cannot_start_says_why_and_leaves_nothing(
    short_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Beside TMPDIR, where the server's account can reach it when the tests run as root.
    broken = fake_postgres(short_tmpdir / "broken", "16.2", initdb_exit=1)
    scratch = short_tmpdir / "scratch"
    scratch.mkdir()
    scratch.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    server = EmbeddedPostgres(PostgresBinaries(broken, 16, "test"))
    with pytest.raises(PostgresUnavailable, match=r"initdb failed.*cannot do that"):
        server.start()
    assert list(scratch.iterdir()) == []


# --- the progress displays


def test_plain_progress_prints_stage_changes_and_at_most_one_line_per_interval() -> None:
    stream = io.StringIO()
    now = [0.0]
    display = PlainProgress(stream, 10_000_000, interval_seconds=5, clock=lambda: now[0])
    for at, stage, percent in [
        (0.0, None, 0),  # queued: nothing to say yet
        (0.1, "download", 0),
        (1.0, "download", 10),  # within the interval: quiet
        (2.0, "download", 20),
        (2.0, "parse", 20),
        (7.0, "parse", 26),  # 40 % of parse = 4 MB in 5 s
        (8.0, "parse", 29),
        (9.0, "parse", 35),
    ]:
        now[0] = at
        display.update(JobSnapshot("running", stage, percent))
    display.close(succeeded=True)
    assert stream.getvalue().splitlines() == [
        "[  0%] Downloading export",
        "[ 20%] Parsing conversations",
        "[ 26%] Parsing conversations: 4.0 of 10.0 MB, 0.8 MB/s, about 8 s left",
        "[100%] Done",
    ]


def test_rich_progress_on_a_terminal_shows_each_stage_with_bytes_and_speed() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    display = RichProgress(console, 50_000_000)
    display.update(JobSnapshot("running", "download", 10))
    display.update(JobSnapshot("running", "parse", 25))
    display.update(JobSnapshot("running", "quick_pass", 35))
    display.close(succeeded=True)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    for label in ("Downloading export", "Parsing conversations", "Generating soulprint"):
        assert label in output
    assert "50.0/50.0 MB" in output, "a finished byte stage shows the whole export"


def test_the_summary_does_not_price_a_model_it_has_no_price_for() -> None:
    estimate = estimate_model_cost(
        sample_chars=10_000,
        persona_chars=0,
        v2_sample_chars=10_000,
        chunk_stats=[],
        settings=Settings().replace(quick_pass_model="my-own-model"),
    )
    outcome = JobOutcome(
        job_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        status="succeeded",
        last_error=None,
        result={"conversations": 3, "messages": 40, "chunks": 5, "cost_estimate": estimate},
        profile=None,
    )
    lines = summary_lines(outcome, export_name="x.zip", seconds=1.0, model_calls_off="--dry-run")
    rows = summary("\n".join(lines))
    assert rows["would cost"].startswith("unknown (no price for my-own-model")
    assert rows["conversations"] == "3"
