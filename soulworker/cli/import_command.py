"""``soulworker import PATH``: the whole pipeline on a local export (see :mod:`soulworker.local`).

Exit codes: 0 the import succeeded, 1 it failed (the job's own message is printed), 2 bad usage
(no such file) or no database to run on, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from soulworker.cli.common import CommandError

LOCAL_EXTRA_MODULES = frozenset({"rich"})
"""What ``soulworker[local]`` brings that only this command imports (the daemon's image leaves
it out; docs/dependencies.md)."""

LOCAL_EXTRA_MISSING = (
    "soulworker import needs the 'local' extra, which the daemon does not install: "
    "pip install 'soulworker[local]'"
)

DEFAULT_OUT_DIR = Path("soulprint")
"""Where the markdown files go: a folder named for what it holds, in the current directory."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "import",
        help="run the whole pipeline on a local export and write the soulprint as markdown",
        description=(
            "Import a ChatGPT export (.zip or conversations.json) for one person through the "
            "same job code the daemon runs, and write SOUL.md, IDENTITY.md, USER.md, AGENTS.md, "
            "TOOLS.md and MEMORY.md. Uses DATABASE_URL when set (the job's rows stay there; "
            "other jobs and workers there are left alone), "
            "otherwise a temporary embedded PostgreSQL. Without ANTHROPIC_API_KEY (or with "
            "--dry-run) everything but the model calls runs, and their cost is estimated."
        ),
    )
    parser.add_argument("path", type=Path, metavar="PATH", help="the export file")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT_DIR,
        metavar="DIR",
        help=f"folder for the markdown files (default ./{DEFAULT_OUT_DIR})",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="make no model calls, even with a key; print what they would cost",
    )
    parser.add_argument(
        "--keep-db",
        action="store_true",
        help="keep the embedded database's directory afterwards (ignored with DATABASE_URL)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: the pipeline and rich take ~0.4 s to import, which every other command
    # (and `soulworker --help`) would otherwise pay.
    try:
        from soulworker.local.run import LocalImportError, LocalImportRequest, run_local_import
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in LOCAL_EXTRA_MODULES:
            raise
        raise CommandError(LOCAL_EXTRA_MISSING, 2) from None

    request = LocalImportRequest(
        export=args.path, out_dir=args.out, dry_run=args.dry_run, keep_db=args.keep_db
    )
    try:
        return run_local_import(request, environ=os.environ)
    except LocalImportError as exc:
        raise CommandError(str(exc), exc.exit_code) from None
