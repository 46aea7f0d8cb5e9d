"""The operator's verbs from a shell: ``enqueue``, ``jobs``, ``retry``, ``cancel``.

``jobs --watch`` redraws the queue's health (the numbers of the ``queue_stats`` log event,
docs/queue.md, "Queue health") and the job list every few seconds until Ctrl-C.

``retry`` and ``cancel`` call the same SQL functions operators use in the Supabase SQL editor
(``retry_import_job``, ``cancel_import_job``), so both ways behave identically.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from soulworker import db
from soulworker.cli.common import CommandError, format_age, load_settings, render_table
from soulworker.jobs.queue_stats import Connection, read_queue_stats
from soulworker.sql_files import query

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
# Not a status of the table: queued jobs parked by their handler (docs/queue.md, "Parking a job").
WAITING = "waiting"
ERROR_COLUMN_WIDTH = 60
WATCH_DEFAULT_SECONDS = 2.0
# Home the cursor and clear the screen: each frame replaces the last on a terminal.
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def _job_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a job id (a UUID): {text!r}") from None


def register(subparsers: Any) -> None:
    enqueue = subparsers.add_parser(
        "enqueue",
        help="queue an import job (what the web app does)",
        description="Insert an import job, exactly like the web app's insert.",
    )
    enqueue.add_argument("user_id", type=_job_id, help="the user's id (UUID)")
    enqueue.add_argument("storage_path", help="bucket/object of the uploaded export")
    enqueue.add_argument("--file-type", choices=("json", "zip"), help="a hint; content is sniffed")
    enqueue.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    enqueue.add_argument("--max-attempts", type=int, help="default: SOULWORKER_MAX_ATTEMPTS")
    enqueue.set_defaults(func=run_enqueue)

    jobs = subparsers.add_parser("jobs", help="list recent jobs as a table")
    jobs.add_argument(
        "--status",
        choices=(*STATUSES, WAITING),
        help=f"only jobs in this status ({WAITING}: queued jobs parked until a later time)",
    )
    jobs.add_argument("--user", type=_job_id, help="only this user's jobs")
    jobs.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    jobs.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=WATCH_DEFAULT_SECONDS,
        metavar="SECONDS",
        help="redraw the queue's health and the list every SECONDS "
        f"(default {WATCH_DEFAULT_SECONDS:g}) until Ctrl-C",
    )
    jobs.set_defaults(func=run_jobs)

    retry = subparsers.add_parser(
        "retry", help="put a failed or cancelled job back in the queue (retry_import_job)"
    )
    retry.add_argument("job_id", type=_job_id)
    retry.set_defaults(func=run_retry)

    cancel = subparsers.add_parser(
        "cancel", help="cancel a queued job, or ask a running one to stop (cancel_import_job)"
    )
    cancel.add_argument("job_id", type=_job_id)
    cancel.set_defaults(func=run_cancel)


async def run_enqueue(args: argparse.Namespace) -> int:
    settings = load_settings()
    params = {
        "user_id": args.user_id,
        "storage_path": args.storage_path,
        "file_type": args.file_type,
        "priority": args.priority,
        "max_attempts": args.max_attempts,
    }
    async with await db.connect(settings, "soulworker enqueue") as conn:
        try:
            cur = await conn.execute(query("enqueue_job"), params)
        except pg_errors.UniqueViolation:
            raise CommandError(f"user {args.user_id} already has an active import job") from None
        except pg_errors.CheckViolation as exc:
            raise CommandError(f"the job was refused: {exc.diag.constraint_name}") from None
        row = await cur.fetchone()
    assert row is not None
    print(row["id"])
    return 0


async def run_jobs(args: argparse.Namespace) -> int:
    settings = load_settings()
    params = {"status": args.status, "user_id": args.user, "limit": max(1, args.limit)}
    async with await db.connect(settings, "soulworker jobs") as conn:
        if args.watch is None:
            print(await _jobs_table(conn, params))
            return 0
        await _watch(conn, params, max(0.1, args.watch))
    return 0


async def _watch(conn: Connection, params: dict[str, Any], seconds: float) -> None:
    """Print a frame every ``seconds`` until SIGINT (Ctrl-C) or SIGTERM, then return."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    clear = CLEAR_SCREEN if sys.stdout.isatty() else "\n"
    try:
        while not stop.is_set():
            stats = await read_queue_stats(conn)
            table = await _jobs_table(conn, params)
            now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            header = f"{now}: every {seconds:g} s, Ctrl-C to stop"
            print(f"{clear}{header}\n{_stats_lines(stats)}\n\n{table}", flush=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _stats_lines(stats: dict[str, Any]) -> str:
    def age(seconds: float, *, when: int) -> str:
        """The age, or "-" when there is nothing to measure (the event says 0 then)."""
        return format_age(timedelta(seconds=seconds)) if when else "-"

    oldest = age(stats["oldest_queued_seconds"], when=stats["queued_due"])
    silence = age(stats["max_heartbeat_age_seconds"], when=stats["running"])
    return (
        f"queued {stats['queued']} (due {stats['queued_due']}, parked {stats['parked']}, set "
        f"aside {stats['set_aside']}; oldest due waiting {oldest})\n"
        f"running {stats['running']} ({stats['stale_running']} past their lease; longest "
        f"heartbeat silence {silence})\n"
        f"failed in the last hour {stats['failed_last_hour']}; all time: succeeded "
        f"{stats['succeeded']}, failed {stats['failed']}, cancelled {stats['cancelled']}"
    )


async def _jobs_table(conn: Connection, params: dict[str, Any]) -> str:
    cur = await conn.execute(query("list_jobs"), params)
    rows = await cur.fetchall()
    if not rows:
        return "no jobs"
    table = [
        [
            str(row["id"]),
            _status(row),
            row["stage"] or "-",
            f"{row['progress_percent']}%",
            f"{row['attempt']}/{row['max_attempts']}",
            format_age(row["age"]),
            _shorten(row["last_error"]),
            _waiting(row),
        ]
        for row in rows
    ]
    headers = ("job", "status", "stage", "progress", "attempt", "age", "error", "waiting for")
    return render_table(headers, table)


def _status(row: dict[str, Any]) -> str:
    """The status, with ``waiting`` for a parked job and a pending cancel said."""
    status = WAITING if row["status"] == "queued" and row["waiting_for"] else row["status"]
    return f"{status} (cancel requested)" if row["cancel_requested"] else status


def _waiting(row: dict[str, Any]) -> str:
    """For a parked job: what it waits for, how long it has, and until when."""
    if not (row["status"] == "queued" and row["waiting_for"]):
        return ""
    due_in = row["due_in"]
    until = "due now" if due_in.total_seconds() <= 0 else f"resumes {format_age(-due_in)}"
    return f"{_shorten(row['waiting_for'])} (parked {format_age(row['parked_for'])}, {until})"


async def run_retry(args: argparse.Namespace) -> int:
    status = await _call_operator_function("retry_job", args.job_id)
    print(f"job {args.job_id}: {status}")
    return 0


async def run_cancel(args: argparse.Namespace) -> int:
    status = await _call_operator_function("cancel_job", args.job_id)
    print(f"job {args.job_id}: {status}")
    return 0


async def _call_operator_function(name: str, job_id: uuid.UUID) -> str:
    settings = load_settings()
    async with await db.connect(settings, f"soulworker {name}") as conn:
        try:
            cur = await conn.execute(query(name), {"job_id": job_id})
        except (pg_errors.NoDataFound, pg_errors.ObjectNotInPrerequisiteState) as exc:
            raise CommandError(exc.diag.message_primary or str(exc)) from None
        except pg_errors.UniqueViolation as exc:
            hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
            raise CommandError(f"{exc.diag.message_primary}{hint}") from None
        except psycopg.errors.RaiseException as exc:
            raise CommandError(exc.diag.message_primary or str(exc)) from None
        row = await cur.fetchone()
    assert row is not None
    status: str = row["status"]
    return status


def _shorten(text: str | None) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= ERROR_COLUMN_WIDTH else flat[: ERROR_COLUMN_WIDTH - 1] + "…"
