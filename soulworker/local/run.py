"""The local import from start to summary (see :mod:`soulworker.local` for the idea).

1. **Database.** ``DATABASE_URL`` when set, else an embedded PostgreSQL in a temp directory,
   stopped and removed at the end (kept with ``--keep-db``). The embedded one is migrated
   automatically. A user's database is *not* migrated behind their back: when it lacks
   migrations the command stops and says to run ``soulworker migrate``. On a user's database
   the job is created for a fresh random user id and its rows are left there (the summary
   says which), like any import the web app starts.
2. **The export's source.** The real :class:`~soulworker.pipeline.handler.ImportPipeline` is
   given an ``export_source_for`` that answers, for this command's own job, the local file
   (:class:`~soulworker.pipeline.export_source.LocalFileExportSource`): the real download stage
   copies it into the attempt's private file with the daemon's size limit, disk check, progress
   and errors (docs/pipeline.md, "Export sources"). Supabase Storage is never asked.
3. **The job.** One row is inserted for the fresh user, with ``max_attempts = 1`` and a
   ``run_after`` in the year 9999, and the real :class:`~soulworker.jobs.worker.Worker` works
   that job alone (:meth:`~soulworker.jobs.worker.Worker.run_one`: claim by id, the real
   :class:`~soulworker.jobs.runner.JobRun`, lease keeper and stop paths). Without model calls
   the stage list is the daemon's (download, parse) plus
   :class:`~soulworker.local.estimate_stage.CostEstimateStage`.
4. **Progress** is read by polling the job row (:mod:`soulworker.local.progress`).
5. **Results** are read back from the job row and ``user_profiles`` and written as files
   (:mod:`soulworker.local.results`).

Sharing a database with other jobs and workers (docs/queue.md, "One named job"). This command
claims its job by id, so it never touches another job. Its job's ``run_after`` is in the year
9999: a daemon's claim takes only queued jobs whose ``run_after`` has come, so no daemon beside
it ever claims it, and no NOTIFY wakes one for it (the trigger has the same condition); a
release keeps a later ``run_after``, so a job given back on Ctrl-C stays out of reach too
(``soulworker jobs`` lists it, and ``soulworker cancel`` works on it). Were this process
killed outright, its lease would expire and a daemon would rescue the running job like any
other, but the rescue finds its one attempt spent and fails it at once ("interrupted too many
times") without running a stage.

One attempt. A failure is final at once (``max_attempts = 1``): the model client already
retries within a call, and for a person at a terminal running the command again is the
retry; waiting minutes in a backoff would look like a hang.

Ctrl-C (or SIGTERM) stops the worker, which releases the job at its next checkpoint (within
the shutdown budget), then cancels the job with ``cancel_import_job`` so that nothing picks it
up again. A second Ctrl-C exits at once; the embedded database is still stopped and removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psycopg
from rich.console import Console

from soulworker import db
from soulworker.errors import PermanentJobError
from soulworker.jobs.errors import JobNotClaimable
from soulworker.jobs.job import ClaimedJob
from soulworker.jobs.store import Connection, JobStore
from soulworker.jobs.worker import RELEASE_GRACE_SECONDS, Worker
from soulworker.local.embedded_postgres import EmbeddedPostgres, PostgresUnavailable
from soulworker.local.estimate_stage import CostEstimateStage
from soulworker.local.progress import JobSnapshot, ProgressDisplay, make_display
from soulworker.local.results import (
    ALL_FILES,
    MEMORY_FILE,
    JobOutcome,
    soulprint_files,
    summary_lines,
    write_files,
)
from soulworker.logs import configure_logging
from soulworker.migrate import migrate, pending_migrations
from soulworker.pipeline.export_source import ExportSource, LocalFileExportSource
from soulworker.pipeline.handler import ImportPipeline, pipeline_stages
from soulworker.pipeline.import_run import Stage
from soulworker.settings import Settings, unknown_variables
from soulworker.sql_files import query

LOCAL_BUCKET = "imports"
"""The bucket the web app uses: the job's storage_path, only a label here (the export comes
from the local file), looks exactly like a real one."""

LOCAL_MAX_ATTEMPTS = 1
"""One attempt: a person at a terminal re-runs the command rather than wait out a backoff."""

IMPORT_LOG_LEVEL = "error"
"""The command reports progress and outcomes itself; routine log lines would only repeat them
(SOULWORKER_LOG_LEVEL, when set, wins)."""

WATCH_INTERVAL_SECONDS = 0.2
"""How often the job row is polled for the display: smooth enough, one tiny query each time."""

INTERRUPTED_EXIT_CODE = 130
"""What shells report for a command stopped by Ctrl-C."""

# Settings that differ for a local run unless the environment sets them explicitly:
# (variable, Settings field, value, why).
LOCAL_DEFAULTS: tuple[tuple[str, str, Any, str], ...] = (
    ("SOULWORKER_PROGRESS_INTERVAL_SECONDS", "progress_interval_seconds", 0.25,
     "a progress bar redraws several times a second; the web app's 1 s is too coarse"),
    ("SOULWORKER_SHUTDOWN_SECONDS", "shutdown_seconds", 3.0,
     "Ctrl-C should stop within seconds; a local job is not resumed by another worker"),
)  # fmt: skip

_OBJECT_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_OBJECT_NAME_CHARS = 120
"""The object name only labels the job; a long file name is cut to keep storage_path short."""


class LocalImportError(Exception):
    """The import could not run or did not succeed; one line for the user, and an exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class LocalImportRequest:
    export: Path
    out_dir: Path
    dry_run: bool = False
    keep_db: bool = False


@dataclass
class LocalRun:
    """Everything one local import works with, decided before the job exists."""

    request: LocalImportRequest
    settings: Settings
    user_id: uuid.UUID
    storage_path: str
    embedded: bool
    model_calls_off: str | None
    export_bytes: int
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr_console: Console = field(default_factory=lambda: Console(stderr=True))


# --- preparation (synchronous, before the event loop)


def check_export(path: Path) -> int:
    """The export's size; LocalImportError (exit 2) when it is not a readable file."""
    try:
        if not path.exists():
            raise LocalImportError(f"no such file: {path}", 2)
        if not path.is_file():
            raise LocalImportError(
                f"{path} is not a file; give the export's .zip (or conversations.json)", 2
            )
        with path.open("rb") as handle:
            handle.read(1)
        return path.stat().st_size
    except PermissionError:
        raise LocalImportError(f"cannot read {path}: permission denied", 2) from None
    except OSError as exc:
        raise LocalImportError(f"cannot read {path}: {exc.strerror or exc}", 2) from None


def check_out_dir(path: Path) -> None:
    """Refuse, before any work, a --out that is a file or cannot be created or written."""
    if path.exists():
        if not path.is_dir():
            raise LocalImportError(f"--out {path} is a file; give a folder", 2)
        if not os.access(path, os.W_OK):
            raise LocalImportError(f"cannot write to {path}: permission denied", 2)
        return
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise LocalImportError(f"cannot create {path}: permission denied", 2)


def object_name_for(path: Path) -> str:
    """The file's name in Storage's character set (``[A-Za-z0-9._-]``), for readable logs."""
    name = _OBJECT_NAME_UNSAFE.sub("-", path.name).strip(".-")[:MAX_OBJECT_NAME_CHARS]
    return name or "export"


def model_calls_off_reason(settings: Settings, *, dry_run: bool) -> str | None:
    """Why the model stages will not run, or None when they will."""
    if dry_run:
        return "--dry-run"
    if not settings.model_stages:
        return "SOULWORKER_MODEL_STAGES=off"
    if not settings.anthropic_api_key:
        return "ANTHROPIC_API_KEY is not set"
    return None


def local_settings(
    base: Settings,
    *,
    database_url: str,
    model_stages: bool,
    environ: Mapping[str, str],
) -> Settings:
    """The daemon's settings, pointed at the local database, for one job."""
    changes: dict[str, Any] = {
        "database_url": database_url,
        "model_stages": model_stages,
        "concurrency": 1,
        # A person waits for this import: no Message Batch, whose answer may take an hour
        # (docs/full-pass-batches.md, "Modes").
        "full_pass_mode": "direct",
    }
    for variable, name, value, _why in LOCAL_DEFAULTS:
        if variable not in environ:
            changes[name] = value
    return base.replace(**changes)


class _CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is *now*.

    rich's live display swaps ``sys.stderr`` for a proxy that prints above the bars; log lines
    must go through it, or they would tear the display apart.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.__stderr__ is not None and sys.__stderr__.isatty()


def configure_command_logging(settings: Settings, environ: Mapping[str, str]) -> None:
    level = settings.log_level if "SOULWORKER_LOG_LEVEL" in environ else IMPORT_LOG_LEVEL
    configure_logging(settings.log_format, level, stream=_CurrentStderr())  # type: ignore[arg-type]
    for name in unknown_variables(environ):
        # Printed, not logged: at the command's log level a warning would be dropped.
        print(f"soulworker: warning: {name} is not a setting; is it misspelled?", file=sys.stderr)


@contextlib.contextmanager
def local_database(settings: Settings, *, keep: bool) -> Iterator[EmbeddedPostgres | None]:
    """None when DATABASE_URL is set; else a started embedded server, stopped afterwards."""
    if settings.database_url:
        yield None
        return
    server = EmbeddedPostgres(keep=keep)
    try:
        server.start()
    except PostgresUnavailable as exc:
        raise LocalImportError(str(exc), 2) from None
    try:
        yield server
    finally:
        server.stop()


# --- the job


class OwnExportSource:
    """The pipeline's ``export_source_for``: the local file, for this command's job alone.

    The worker claims no other job (``Worker.run_one``); should one reach the pipeline all the
    same, it fails rather than be fed this person's export.
    """

    def __init__(self, export: Path) -> None:
        self.source = LocalFileExportSource(export)
        self.job_id: uuid.UUID | None = None  # set once the job is inserted

    def __call__(self, job: ClaimedJob) -> ExportSource:
        if self.job_id is None or job.id != self.job_id:
            raise PermanentJobError("soulworker import reads the export of its own job only.")
        return self.source


def import_stages(settings: Settings) -> list[Stage]:
    """The daemon's stages; plus the cost estimate when the model stages are off."""
    stages = pipeline_stages(settings)
    if not settings.model_stages:
        stages.append(CostEstimateStage())
    return stages


async def prepare_database(conn: Connection, *, embedded: bool, settings: Settings) -> None:
    """Migrate an embedded database; check that a user's one is current.

    Only the embedded database gets pgvector created (when its binaries ship it): extensions in
    a user's database are theirs to choose (docs/embeddings.md, "soulworker import").
    """
    if embedded:
        await conn.execute(query("create_vector_extension"))
        await migrate(conn, default_max_attempts=settings.max_attempts)
        return
    pending = await pending_migrations(conn)
    if pending:
        raise LocalImportError(
            f"the database at DATABASE_URL lacks {len(pending)} migration(s) "
            f"({', '.join(pending)}): run `soulworker migrate` first, or unset DATABASE_URL "
            "to use an embedded database"
        )


async def insert_job(conn: Connection, user_id: uuid.UUID, storage_path: str) -> uuid.UUID:
    try:
        cur = await conn.execute(
            query("insert_local_job"),
            {
                "user_id": user_id,
                "storage_path": storage_path,
                "max_attempts": LOCAL_MAX_ATTEMPTS,
            },
        )
    except psycopg.errors.ForeignKeyViolation:
        raise LocalImportError(
            "the database at DATABASE_URL accepts import jobs only for its own users "
            "(import_jobs.user_id references auth.users, as in a Supabase project), so a local "
            "import cannot create one there; unset DATABASE_URL to use an embedded database"
        ) from None
    row = await cur.fetchone()
    assert row is not None
    job_id: uuid.UUID = row["id"]
    return job_id


async def poll_job(conn: Connection, job_id: uuid.UUID) -> JobSnapshot:
    cur = await conn.execute(query("job_progress"), {"job_id": job_id})
    row = await cur.fetchone()
    if row is None:
        raise LocalImportError("the import's job row disappeared from the database")
    return JobSnapshot(row["status"], row["stage"], int(row["progress_percent"]))


async def read_outcome(conn: Connection, job_id: uuid.UUID, user_id: uuid.UUID) -> JobOutcome:
    cur = await conn.execute(query("job_outcome"), {"job_id": job_id})
    job = await cur.fetchone()
    assert job is not None
    cur = await conn.execute(query("user_profile"), {"user_id": user_id})
    profile = await cur.fetchone()
    return JobOutcome(
        job_id=job_id,
        user_id=user_id,
        status=job["status"],
        last_error=job["last_error"],
        result=dict(job["result"] or {}),
        profile=dict(profile) if profile else None,
    )


async def watch(
    conn: Connection,
    job_id: uuid.UUID,
    worker_task: asyncio.Task[None],
    display: ProgressDisplay,
) -> None:
    """Show the job row until the worker has stopped."""
    while True:
        display.update(await poll_job(conn, job_id))
        if worker_task.done():
            break
        await asyncio.wait({worker_task}, timeout=WATCH_INTERVAL_SECONDS)
    try:
        worker_task.result()  # a crashed worker surfaces here
    except JobNotClaimable as exc:
        # Someone cancelled or took the job between its insert and its claim.
        raise LocalImportError(str(exc)) from None


async def cancel_after_interrupt(
    local: LocalRun, job_id: uuid.UUID, worker: Worker, worker_task: asyncio.Task[None]
) -> None:
    """Stop the worker (the job is released), then cancel the job so nobody resumes it."""
    worker.request_stop()
    budget = local.settings.shutdown_seconds + RELEASE_GRACE_SECONDS + 1
    await asyncio.wait({worker_task}, timeout=budget)
    with contextlib.suppress(psycopg.Error):
        async with await db.connect(local.settings, "soulworker import") as conn:
            await conn.execute(query("cancel_job"), {"job_id": job_id})


async def run_job(local: LocalRun) -> JobOutcome | None:
    """Insert, run and watch the job; its outcome, or None when interrupted."""
    settings = local.settings
    source_for = OwnExportSource(local.request.export)
    # Built before the job exists: it checks the settings first.
    pipeline = ImportPipeline(settings, import_stages(settings), export_source_for=source_for)
    try:
        conn = await db.connect(settings, "soulworker import")
    except BaseException:
        await pipeline.aclose()
        raise
    try:
        await prepare_database(conn, embedded=local.embedded, settings=settings)
        job_id = await insert_job(conn, local.user_id, local.storage_path)
        source_for.job_id = job_id
        pool = db.create_pool(settings, "soulworker import")
        await pool.open(wait=True, timeout=db.CONNECT_TIMEOUT_SECONDS)
        worker = Worker(
            settings,
            JobStore(pool, lease_seconds=settings.lease_seconds),
            pipeline,
            db.worker_identity(),
            listen=False,  # one named job: nothing to be woken for
        )
        worker_task = asyncio.create_task(worker.run_one(job_id), name="local-worker")
        display = make_display(local.stderr_console, local.export_bytes)
        succeeded = False
        try:
            await watch(conn, job_id, worker_task, display)
            outcome = await read_outcome(conn, job_id, local.user_id)
            succeeded = outcome.succeeded
            return outcome
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            print("Interrupted: stopping the import…", file=sys.stderr, flush=True)
            await cancel_after_interrupt(local, job_id, worker, worker_task)
            return None
        finally:
            display.close(succeeded=succeeded)
            if not worker_task.done():
                worker_task.cancel()
                await asyncio.gather(worker_task, return_exceptions=True)
            await pool.close()
    finally:
        await pipeline.aclose()
        await conn.close()


async def run_job_with_signals(local: LocalRun) -> JobOutcome | None:
    """:func:`run_job`, with SIGTERM treated like Ctrl-C (asyncio.run handles SIGINT)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run_job(local)
    except asyncio.CancelledError:
        # Interrupted before the job existed: nothing to cancel.
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        return None
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


# --- the command


def run_local_import(
    request: LocalImportRequest,
    *,
    environ: Mapping[str, str],
    stdout: TextIO | None = None,
    stderr_console: Console | None = None,
) -> int:
    """The whole command; returns the exit code or raises LocalImportError / SettingsError."""
    started = time.monotonic()
    export_bytes = check_export(request.export)
    check_out_dir(request.out_dir)
    base = Settings.from_env(environ)
    configure_command_logging(base, environ)
    off = model_calls_off_reason(base, dry_run=request.dry_run)
    user_id = uuid.uuid4()
    storage_path = f"{LOCAL_BUCKET}/{user_id}/{object_name_for(request.export)}"
    out = stdout or sys.stdout
    with local_database(base, keep=request.keep_db) as embedded:
        settings = local_settings(
            base,
            database_url=embedded.url if embedded else base.require_database_url(),
            model_stages=off is None,
            environ=environ,
        )
        local = LocalRun(
            request=request,
            settings=settings,
            user_id=user_id,
            storage_path=storage_path,
            embedded=embedded is not None,
            model_calls_off=off,
            export_bytes=export_bytes,
            stdout=out,
            stderr_console=stderr_console or Console(stderr=True),
        )
        outcome = asyncio.run(run_job_with_signals(local))
        if outcome is None:
            return INTERRUPTED_EXIT_CODE
        report(local, outcome, seconds=time.monotonic() - started)
        if embedded is not None and request.keep_db:
            print(f"Kept the embedded database in {embedded.directory}.", file=out)
            print(f"  to use it again: {embedded.restart_hint()}", file=out)
    if not outcome.succeeded:
        reason = outcome.last_error or f"the job ended as {outcome.status}"
        raise LocalImportError(f"the import failed: {reason}")
    return 0


def report(local: LocalRun, outcome: JobOutcome, *, seconds: float) -> None:
    """The summary, the files, and where the rows are."""
    out = local.stdout
    request = local.request
    files = soulprint_files(outcome.profile)
    if outcome.succeeded:
        for line in summary_lines(
            outcome,
            export_name=str(request.export),
            seconds=seconds,
            model_calls_off=local.model_calls_off,
        ):
            print(line, file=out)
    try:
        written = write_files(request.out_dir, files)
    except OSError as exc:
        raise LocalImportError(
            f"could not write the soulprint to {request.out_dir}: {exc.strerror or exc}"
        ) from None
    if written:
        names = ", ".join(path.name for path in written)
        print(f"Wrote {names} to {request.out_dir}{'/' if request.out_dir.name else ''}", file=out)
        if MEMORY_FILE not in files and local.model_calls_off is None:
            print("  MEMORY.md was not written: the full pass did not finish.", file=out)
    elif outcome.succeeded:
        print(
            f"No soulprint written: {', '.join(ALL_FILES)} come from the model calls "
            f"({local.model_calls_off}). Set ANTHROPIC_API_KEY and run again to build them.",
            file=out,
        )
    if not local.embedded:
        print(
            f"The job's rows stay in DATABASE_URL: job {outcome.job_id}, user {outcome.user_id}.",
            file=out,
        )
    out.flush()
