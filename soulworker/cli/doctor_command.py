"""``soulworker doctor``: check configuration, database, LISTEN, pooler mode, migrations,
storage, the model key, the JSON parser and temp space, and say what to fix.

Exit code 0 when no check failed (warnings allowed), 1 when one did, 2 for bad usage. The
report goes to stdout (``--json`` for scripts); the library's own log lines go to stderr and
are kept to errors, so the report stays readable.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from soulworker.logs import configure_logging

# The checks' names and time limit, written here rather than read from soulworker.doctor:
# importing the checks takes ~0.3 s (httpx2, the export reader, the Storage client) that every
# other command, each worker's start among them, would pay for its argument parser.
# tests/integration/test_start_up_imports.py keeps them equal to doctor's.
CHECK_NAMES = (
    "configuration",
    "database",
    "pooler",
    "listen",
    "migrations",
    "exposure",
    "storage",
    "model",
    "embeddings",
    "ijson",
    "temp_space",
)
CHECK_TIMEOUT_SECONDS = 15.0

DOCTOR_LOG_LEVEL = "error"
"""Doctor reports problems itself; routine library warnings would only repeat them."""


def register(subparsers: Any) -> None:
    checks = ", ".join(CHECK_NAMES)
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "doctor",
        help="check that this deployment can work, and say what to fix",
        description=(
            "Run every health check concurrently and print what each found, with a fix for "
            f"each problem. Checks: {checks}. Exit code 0 when nothing failed (warnings "
            "allowed), 1 otherwise."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--check",
        dest="only",
        action="append",
        choices=list(CHECK_NAMES),
        metavar="NAME",
        help="run only this check (and those it needs); repeatable",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=CHECK_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"time limit of each check (default {CHECK_TIMEOUT_SECONDS:g})",
    )
    parser.set_defaults(func=run)


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError("a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("a number of seconds above 0")
    return value


async def run(args: argparse.Namespace) -> int:
    from soulworker.doctor import DoctorContext, render_json, render_text, run_doctor

    context = DoctorContext.from_environ(os.environ)
    log_format = context.settings.log_format if context.settings else "auto"
    configure_logging(log_format, DOCTOR_LOG_LEVEL)
    report = await run_doctor(context, only=args.only, timeout_seconds=args.timeout)
    print(render_json(report) if args.json else render_text(report))
    return report.exit_code
