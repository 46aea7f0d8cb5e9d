"""The ``soulworker`` command: thin wrappers that parse arguments and call the library.

Every command reads the same settings from the environment. Exit codes: 0 success, 1 the command
failed (a database error, a job in the wrong state), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import psycopg

from soulworker import __version__
from soulworker.cli import (
    doctor_command,
    import_command,
    migrate_command,
    operator_commands,
    run_command,
    settings_command,
)
from soulworker.cli.common import CommandError, fail
from soulworker.db_failures import (
    DatabaseTarget,
    connect_failure_reason,
    describe_connection_failure,
    is_connection_failure,
)
from soulworker.logs import redact_text
from soulworker.settings import SettingsError

COMMANDS = (
    run_command,
    migrate_command,
    operator_commands,
    settings_command,
    doctor_command,
    import_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soulworker",
        description="Turns ChatGPT exports into a soulprint, a MEMORY and searchable chunks.",
    )
    parser.add_argument("--version", action="version", version=f"soulworker {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except SettingsError as exc:
        return fail(f"configuration error: {exc}", 2)
    except CommandError as exc:
        return fail(str(exc), exc.exit_code)
    except psycopg.Error as exc:
        if is_connection_failure(exc):
            return fail(_connection_failure_message(exc), 1)
        # Only the primary message: the rest of a database error may quote row data.
        primary = exc.diag.message_primary if exc.diag else None
        return fail(f"database error: {redact_text(primary or type(exc).__name__)}", 1)
    except KeyboardInterrupt:
        return 130


def _connection_failure_message(exc: psycopg.Error) -> str:
    """Why the database could not be reached and what to do: the same description as
    ``soulworker doctor`` gives (``soulworker.db_failures``)."""
    database_url = os.environ.get("DATABASE_URL")
    try:
        target = DatabaseTarget.of(database_url, os.environ) if database_url else None
    except psycopg.ProgrammingError:  # a URL libpq cannot parse names no target
        target = None
    if target is None:
        # No DATABASE_URL: the embedded database of `soulworker import`, whose address says
        # nothing to the person running it.
        return f"cannot reach the database: {connect_failure_reason(exc)}"
    failure = describe_connection_failure(exc, target)
    return f"cannot reach the database at {target.describe()}: {failure.reason}; {failure.hint}"


if __name__ == "__main__":
    sys.exit(main())
