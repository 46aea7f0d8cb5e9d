"""Applied migrations change in comment lines only; earlier texts databases recorded stay valid."""

from __future__ import annotations

from soulworker.migrate import EARLIER_REVISIONS, checksum, statements_checksum
from soulworker.sql_files import migration_files


def test_earlier_revisions_differ_from_the_files_in_comment_lines_only() -> None:
    files = dict(migration_files())
    assert EARLIER_REVISIONS
    for name, revisions in EARLIER_REVISIONS.items():
        text = files[name]
        for earlier in revisions:
            assert statements_checksum(text) == earlier.statements_checksum, name
            assert earlier.text_checksum != checksum(text), f"{name}: not an earlier text"


def test_the_statements_checksum_ignores_comment_lines_and_nothing_else() -> None:
    text = "-- a comment\ncreate table t (x int);\n  -- indented comment\n"
    assert statements_checksum(text) == statements_checksum("create table t (x int);")
    assert statements_checksum(text) != statements_checksum("create table t (x bigint);")
    assert statements_checksum("select '--';") != statements_checksum("select 1;")
