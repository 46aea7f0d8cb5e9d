"""``soulworker migrate``: apply the schema (Render's pre-deploy command)."""

from __future__ import annotations

import argparse
from typing import Any

from soulworker import db
from soulworker.cli.common import load_settings
from soulworker.migrate import migrate


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "migrate",
        help="apply the database schema (safe to run twice and beside running workers)",
        description="Apply pending sql/migrations in one transaction under an advisory lock.",
    )
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    conn = await db.connect(settings, "soulworker migrate")
    try:
        report = await migrate(conn, default_max_attempts=settings.max_attempts)
    finally:
        await conn.close()
    if report.applied:
        print(f"applied {len(report.applied)} migration(s): {', '.join(report.applied)}")
    else:
        print(f"schema is current ({len(report.already_applied)} migrations applied earlier)")
    for name in report.changed_since_applied:
        print(f"warning: {name} changed after it was applied; the change was not applied")
    return 0
