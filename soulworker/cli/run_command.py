"""``soulworker run``: the daemon."""

from __future__ import annotations

import argparse
from typing import Any

from soulworker.cli.common import CommandError, load_settings
from soulworker.daemon import run_daemon
from soulworker.jobs.handler import DEFAULT_HANDLER, HandlerNotFound, load_handler_factory


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the worker daemon",
        description="Claim and run import jobs until SIGTERM/SIGINT.",
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="exit once no job is queued or running (batch runs, tests)",
    )
    parser.add_argument(
        "--handler",
        dest="handler_spec",
        default=DEFAULT_HANDLER,
        help="job handler factory as package.module:callable (default: the import pipeline)",
    )
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    settings.require_database_url()
    try:
        factory = load_handler_factory(args.handler_spec)
    except HandlerNotFound as exc:
        raise CommandError(str(exc), 2) from None
    return await run_daemon(settings, factory, drain=args.drain)
