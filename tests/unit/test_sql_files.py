"""The named queries: one file each, in the folder of the part that runs it, names unique."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from soulworker.sql_files import MissingSqlFile, query, query_files

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_query_sits_in_its_owners_folder_and_loads_by_name() -> None:
    root = REPO_ROOT / "sql" / "queries"
    assert not list(root.glob("*.sql")), "a query belongs to the folder of what runs it"
    files = query_files()
    assert len(files) == len(list(root.rglob("*.sql"))), "names are unique across folders"
    for name in files:
        assert query(name).strip()


def test_every_query_the_code_names_exists_and_every_file_is_used() -> None:
    asked: set[str] = set()  # query("name") calls
    mentioned: set[str] = set()  # every string in the code (a name may travel to a helper)
    for path in (REPO_ROOT / "soulworker").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                mentioned.add(node.value)
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "query"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                asked.add(node.args[0].value)
    files = set(query_files())
    assert asked <= files, sorted(asked - files)
    assert files <= mentioned, f"files no code runs: {sorted(files - mentioned)}"


def test_an_unknown_name_is_refused() -> None:
    with pytest.raises(MissingSqlFile):
        query("no_such_query")
