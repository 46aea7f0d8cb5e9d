"""The SQL that soulworker runs lives in ``.sql`` files, loaded here by name.

``sql/queries/<owner>/<name>.sql`` holds one statement each, named for what it does
(``claim_job``, ``heartbeat``), with psycopg ``%(name)s`` placeholders: values always travel as
parameters. The folder says which part of soulworker runs it (``jobs``, ``pipeline``,
``operator``, ``migrate``, ``exposure``, ``doctor``, ``local``, ``embeddings``); code asks for a
query by its name alone, so names are unique across folders (checked when the index is built).
``sql/migrations/NNNN_name.sql`` are applied in order by ``soulworker migrate``.

In an installed copy the files ship inside the package (``soulworker/sql``, mapped from the
repository's top-level ``sql/`` at build time); in a checkout they are read from ``sql/`` beside
the package.
"""

from __future__ import annotations

import functools
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import LiteralString


class MissingSqlFile(LookupError):
    """A query or migration name with no file behind it: a packaging or naming bug."""


@functools.cache
def sql_root() -> Traversable:
    packaged = resources.files("soulworker").joinpath("sql")
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "sql"
    if checkout.is_dir():
        return checkout
    raise MissingSqlFile("the sql/ directory is missing from this installation")


@functools.cache
def query_files() -> dict[str, Traversable]:
    """Every named query: ``name -> file``, from ``sql/queries/<owner>/<name>.sql``."""
    found: dict[str, Traversable] = {}
    for owner in sql_root().joinpath("queries").iterdir():
        if not owner.is_dir():
            continue
        for entry in owner.iterdir():
            if not entry.name.endswith(".sql"):
                continue
            name = entry.name.removesuffix(".sql")
            if name in found:
                raise MissingSqlFile(f"two SQL queries are named {name!r}")
            found[name] = entry
    return found


@functools.cache
def query(name: str) -> LiteralString:
    """The text of the query ``name`` (``sql/queries/<owner>/<name>.sql``).

    Cast to LiteralString because these files are part of the program, not input: values are
    never spliced into them, they travel as parameters.
    """
    path = query_files().get(name)
    if path is None:
        raise MissingSqlFile(f"no SQL query named {name!r}")
    text: LiteralString = path.read_text(encoding="utf-8")
    return text


def migration_files() -> list[tuple[str, str]]:
    """``(file name, text)`` of every migration, in the order they apply."""
    folder = sql_root().joinpath("migrations")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name, folder.joinpath(name).read_text(encoding="utf-8")) for name in names]
