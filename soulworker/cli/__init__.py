"""The ``soulworker`` command: thin wrappers that parse arguments and call the library.

Every command reads the same settings from the environment. Exit codes: 0 success, 1 the command
failed (a database error, a job in the wrong state), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
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
    except psycopg.OperationalError as exc:
        first_line = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        return fail(f"cannot reach the database: {first_line}", 1)
    except psycopg.Error as exc:
        # Only the primary message: the rest of a database error may quote row data.
        primary = exc.diag.message_primary if exc.diag else None
        return fail(f"database error: {redact_text(primary or type(exc).__name__)}", 1)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
