"""Why a connection to Postgres failed (soulworker.db_failures): libpq's reason, kept short and
free of secrets, and a hint for each way Supabase and libpq fail."""

from __future__ import annotations

import psycopg
import pytest

from soulworker.db_failures import (
    DatabaseTarget,
    connect_failure_hint,
    connect_failure_reason,
    describe_connection_failure,
    is_connection_failure,
)

LOCAL = DatabaseTarget.of("postgresql://u@127.0.0.1:5432/db", {})
DIRECT = DatabaseTarget.of("postgresql://postgres@db.abcdefgh.supabase.co:5432/postgres", {})
POOLER = DatabaseTarget.of("postgresql://u@aws-0-eu-central-1.pooler.supabase.com:5432/x", {})


@pytest.mark.parametrize(
    ("libpq_says", "reason"),
    [
        (
            'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection '
            "refused\n\tIs the server running on that host and accepting TCP/IP connections?",
            "Connection refused",
        ),
        (
            'connection failed: connection to server at "h" (1.2.3.4), port 5432 failed: FATAL:  '
            'password authentication failed for user "postgres"',
            'FATAL:  password authentication failed for user "postgres"',
        ),
        (
            # Multi-host URLs report each host; the last is the one that decided.
            "connection to server at a failed: Connection refused\nconnection to server at b "
            "failed: timeout expired\nHINT: something",
            "timeout expired",
        ),
        ("", "OperationalError"),
    ],
)
def test_the_reason_is_the_part_after_the_last_failed(libpq_says: str, reason: str) -> None:
    assert connect_failure_reason(psycopg.OperationalError(libpq_says)) == reason


def test_secrets_in_the_driver_text_are_masked_and_the_reason_is_clipped() -> None:
    said = (
        "connection failed: could not parse postgresql://postgres:hunter2secret@db.example.com/x "
        "password=hunter2secret " + "x" * 400
    )
    reason = connect_failure_reason(psycopg.OperationalError(said))
    assert "hunter2secret" not in reason
    assert len(reason) <= 160
    assert reason.endswith("…")


@pytest.mark.parametrize(
    ("reason", "target", "hint_says"),
    [
        ('FATAL:  password authentication failed for user "x"', POOLER, "user and password"),
        ("FATAL:  Tenant or user not found", POOLER, "postgres.<project ref>"),
        ('FATAL:  database "nope" does not exist', LOCAL, "database and user names"),
        ("FATAL:  sorry, too many clients already", LOCAL, "no free connections"),
        ("FATAL: Max client connections reached", POOLER, "no free connections"),
        ("Network is unreachable", DIRECT, "IPv6-only"),
        ("failed to resolve host 'db.abcdefgh.supabase.co'", DIRECT, "session pooler"),
        ("server does not support SSL, but SSL was required", LOCAL, "sslmode"),
        ("Connection refused", LOCAL, "nothing accepts connections at 127.0.0.1:5432"),
        ("failed to resolve host 'nope'", LOCAL, "does not resolve"),
        ("timeout expired", POOLER, "no answer within 10 s"),
        ("Network is unreachable", POOLER, "not reachable from this network"),
        ("something new", LOCAL, "check DATABASE_URL"),
    ],
)
def test_each_failure_has_a_hint(reason: str, target: DatabaseTarget, hint_says: str) -> None:
    assert hint_says in connect_failure_hint(reason, target)


def test_the_hint_names_the_time_limit_the_connection_had() -> None:
    failure = describe_connection_failure(
        psycopg.OperationalError("connection failed: timeout expired"), POOLER, connect_timeout=5
    )
    assert failure.reason == "timeout expired"
    assert "no answer within 5 s" in failure.hint


def test_only_a_failed_or_lost_connection_counts_as_one() -> None:
    assert is_connection_failure(psycopg.OperationalError("connection failed: refused"))
    # A statement the server cancelled is an OperationalError too, but the server answered.
    assert not is_connection_failure(psycopg.errors.QueryCanceled("canceling statement"))
    assert not is_connection_failure(psycopg.errors.UniqueViolation("duplicate key"))
    assert not is_connection_failure(OSError("refused"))


def test_supabase_direct_hosts_are_recognised_among_several() -> None:
    assert DIRECT.is_supabase_direct_host
    assert not POOLER.is_supabase_direct_host
    several = DatabaseTarget.of("host=a.example.com,db.xyz.supabase.co dbname=postgres", {})
    assert several.is_supabase_direct_host
