"""The operator's verbs from a shell: ``enqueue``, ``jobs``, ``retry``, ``cancel``.

``retry`` and ``cancel`` call the same SQL functions operators use in the Supabase SQL editor
(``retry_import_job``, ``cancel_import_job``), so both ways behave identically.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from soulworker import db
from soulworker.cli.common import CommandError, format_age, load_settings, render_table
from soulworker.sql_files import query

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ERROR_COLUMN_WIDTH = 60


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
    jobs.add_argument("--status", choices=STATUSES, help="only jobs in this status")
    jobs.add_argument("--user", type=_job_id, help="only this user's jobs")
    jobs.add_argument("--limit", type=int, default=20, help="how many (default 20)")
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
        cur = await conn.execute(query("list_jobs"), params)
        rows = await cur.fetchall()
    if not rows:
        print("no jobs")
        return 0
    table = [
        [
            str(row["id"]),
            row["status"],
            row["stage"] or "-",
            f"{row['progress_percent']}%",
            f"{row['attempt']}/{row['max_attempts']}",
            format_age(row["age"]),
            _shorten(row["last_error"]),
        ]
        for row in rows
    ]
    print(render_table(("job", "status", "stage", "progress", "attempt", "age", "error"), table))
    return 0


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
