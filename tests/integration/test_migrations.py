"""``soulworker migrate``: on an empty database, twice, at once, and on the predecessor's shapes."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import DictRow, dict_row

from soulworker.migrate import EARLIER_REVISIONS, migrate, migration_status, pending_migrations
from soulworker.sql_files import migration_files

SQL_DIR = Path(__file__).parent / "sql"
USER_1 = uuid.UUID("11111111-1111-1111-1111-111111111111")
USER_2 = uuid.UUID("22222222-2222-2222-2222-222222222222")
USER_3 = uuid.UUID("33333333-3333-3333-3333-333333333333")

pytestmark = pytest.mark.db


async def _connect(url: str) -> psycopg.AsyncConnection[DictRow]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)


async def _scalar(
    conn: psycopg.AsyncConnection[DictRow], statement: str, *params: object
) -> object:
    cur = await conn.execute(statement, params or None)
    row = await cur.fetchone()
    assert row is not None
    return next(iter(row.values()))


async def _run_file(conn: psycopg.AsyncConnection[DictRow], name: str) -> None:
    await conn.execute((SQL_DIR / name).read_text())


async def test_twice_on_an_empty_database(empty_database_url: str) -> None:
    conn = await _connect(empty_database_url)
    try:
        assert await pending_migrations(conn) == [name for name, _ in migration_files()]
        first = await migrate(conn, default_max_attempts=5)
        second = await migrate(conn, default_max_attempts=5)
        assert first.applied == [name for name, _ in migration_files()]
        assert second.applied == []
        assert second.already_applied == first.applied
        assert await pending_migrations(conn) == []
        for table in (
            "import_jobs",
            "user_profiles",
            "conversation_chunks",
            "import_job_artifacts",
            "import_jobs_overview",
        ):
            assert await _scalar(conn, "select to_regclass(%s) is not null", table)
        # The setting became the column default that web-app inserts get.
        job_max = await _scalar(
            conn,
            "insert into import_jobs (user_id, storage_path) values (%s, 'imports/x') "
            "returning max_attempts",
            uuid.uuid4(),
        )
        assert job_max == 5
        # No pgvector here: no embedding column, and nothing failed because of it.
        assert not await _scalar(
            conn,
            "select exists (select 1 from information_schema.columns "
            "where table_name = 'conversation_chunks' and column_name = 'embedding')",
        )
    finally:
        await conn.close()


async def test_concurrent_runs_are_serialized(empty_database_url: str) -> None:
    conns = [await _connect(empty_database_url) for _ in range(3)]
    try:
        reports = await asyncio.gather(*(migrate(conn) for conn in conns))
        applied = [name for report in reports for name in report.applied]
        assert sorted(applied) == sorted(name for name, _ in migration_files())
        count = await _scalar(conns[0], "select count(*) from soulworker_migrations")
        assert count == len(migration_files())
    finally:
        for conn in conns:
            await conn.close()


async def test_second_active_job_for_a_user_is_a_unique_violation(
    conn: psycopg.AsyncConnection[DictRow],
) -> None:
    user = uuid.uuid4()
    insert = "insert into import_jobs (user_id, storage_path) values (%s, %s) returning id"
    first = await _scalar(conn, insert, user, f"imports/{user}/a.zip")
    with pytest.raises(pg_errors.UniqueViolation) as caught:
        await conn.execute(insert, (user, f"imports/{user}/b.zip"))
    assert caught.value.diag.constraint_name == "import_jobs_one_active_per_user"
    # Once the first is finished, the user may import again.
    await conn.execute(
        "update import_jobs set status = 'failed', finished_at = now() where id = %s", (first,)
    )
    await conn.execute(insert, (user, f"imports/{user}/b.zip"))


async def test_insert_notifies_listeners(conn: psycopg.AsyncConnection[DictRow]) -> None:
    await conn.execute("listen import_jobs")
    job_id = await _scalar(
        conn,
        "insert into import_jobs (user_id, storage_path) values (%s, 'imports/x') returning id",
        uuid.uuid4(),
    )
    payloads = [note.payload async for note in conn.notifies(timeout=2, stop_after=1)]
    assert payloads == [str(job_id)]


async def _prepare_like_supabase(conn: psycopg.AsyncConnection[DictRow]) -> None:
    """The auth schema and Supabase's default privileges for this connection's role."""
    await _run_file(conn, "supabase_auth.sql")
    await _run_file(conn, "supabase_default_privileges.sql")


@pytest.mark.usefixtures("supabase_api_roles")
async def test_on_the_predecessors_database(empty_database_url: str) -> None:
    conn = await _connect(empty_database_url)
    try:
        await _prepare_like_supabase(conn)
        await _run_file(conn, "predecessor_schema.sql")
        report = await migrate(conn)
        assert report.applied

        # The legacy import_jobs is carried aside with every row; the new table is empty.
        legacy = await conn.execute(
            "select status, total_chunks, error from import_jobs_legacy order by created_at"
        )
        assert [row["status"] for row in await legacy.fetchall()] == [
            "completed",
            "failed",
            "pending",
        ]
        assert await _scalar(conn, "select count(*) from import_jobs") == 0
        assert await _scalar(conn, "select to_regclass('import_jobs_legacy_user_id_idx')")

        # user_profiles keeps its rows and columns; 'failed' is now allowed.
        profiles = await conn.execute(
            "select user_id, import_status, ai_name, soul_md, import_cost_json, memory_md, "
            "full_pass_status from user_profiles order by user_id"
        )
        rows = await profiles.fetchall()
        assert [(r["user_id"], r["import_status"], r["ai_name"]) for r in rows] == [
            (USER_1, "complete", "Nova"),
            (USER_2, "quick_ready", "Ember"),
            (USER_3, "locked", None),
        ]
        assert rows[0]["import_cost_json"] == '{"total_cost_usd": 0.08}', "text column kept"
        await conn.execute(
            "update user_profiles set import_status = 'failed' where user_id = %s", (USER_3,)
        )

        # conversation_chunks keeps its rows and gains the idempotency columns.
        assert await _scalar(conn, "select count(*) from conversation_chunks") == 25
        for column in ("import_job_id", "chunk_index", "token_count"):
            assert await _scalar(
                conn,
                "select exists (select 1 from information_schema.columns "
                "where table_name = 'conversation_chunks' and column_name = %s)",
                column,
            )
        # Its existing user_id index is reused rather than duplicated.
        assert not await _scalar(conn, "select to_regclass('conversation_chunks_user_id_idx')")

        # The result is usable: a job for a user with a legacy pending job can be inserted
        # (the legacy row no longer counts) and the profile functions work on the old table.
        job_id = await _scalar(
            conn,
            "insert into import_jobs (user_id, storage_path) values (%s, %s) returning id",
            USER_2,
            f"imports/{USER_2}/export.zip",
        )
        await conn.execute(
            "select import_job_profile_failed(%s, %s, 'The export was not found.')",
            (USER_3, job_id),
        )
        status = await _scalar(
            conn, "select import_status from user_profiles where user_id = %s", USER_3
        )
        assert status == "failed"

        # Running it again changes nothing.
        again = await migrate(conn)
        assert again.applied == []
        assert await _scalar(conn, "select count(*) from import_jobs_legacy") == 3
    finally:
        await conn.close()


@pytest.mark.usefixtures("supabase_api_roles")
async def test_row_level_security_with_supabase_auth(empty_database_url: str) -> None:
    conn = await _connect(empty_database_url)
    try:
        await _prepare_like_supabase(conn)
        own, other = uuid.uuid4(), uuid.uuid4()
        await conn.execute("insert into auth.users (id) values (%s), (%s)", (own, other))
        await migrate(conn)
        await conn.execute(
            "insert into import_jobs (user_id, storage_path) values (%s, 'imports/o')", (other,)
        )

        async with conn.transaction():
            await conn.execute("set local role authenticated")
            await conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (str(own),))
            await conn.execute(
                "insert into import_jobs (user_id, storage_path) values (%s, %s)",
                (own, f"imports/{own}/x.zip"),
            )
            visible = await conn.execute("select user_id from import_jobs")
            assert [row["user_id"] for row in await visible.fetchall()] == [own]

        for forbidden, expected in [
            (
                "insert into import_jobs (user_id, storage_path) values (%(other)s, 'imports/x')",
                pg_errors.InsufficientPrivilege,
            ),
            (
                "insert into import_jobs (user_id, storage_path, priority) "
                "values (%(own)s, 'imports/y', 100)",
                pg_errors.InsufficientPrivilege,
            ),
            ("update import_jobs set status = 'succeeded'", pg_errors.InsufficientPrivilege),
            ("delete from import_jobs", pg_errors.InsufficientPrivilege),
            ("select * from import_job_artifacts", pg_errors.InsufficientPrivilege),
        ]:
            with pytest.raises(expected):
                async with conn.transaction():
                    await conn.execute("set local role authenticated")
                    await conn.execute(
                        "select set_config('request.jwt.claim.sub', %s, true)", (str(own),)
                    )
                    await conn.execute(forbidden, {"own": own, "other": other})

        # Nothing soulworker made is open to API clients: not the operator view (every user's
        # jobs), not the migrations table, not the functions that move jobs and profiles.
        for role in ("anon", "authenticated"):
            for forbidden in (
                "select * from import_jobs_overview",
                "delete from soulworker_migrations",
                f"select cancel_import_job('{other}')",
                f"select retry_import_job('{other}')",
                f"select import_job_profile_failed('{other}', '{other}', 'x')",
            ):
                with pytest.raises(pg_errors.InsufficientPrivilege):
                    async with conn.transaction():
                        await conn.execute(f"set local role {role}")
                        await conn.execute(forbidden)

        # Deleting a user deletes their jobs.
        await conn.execute("delete from auth.users where id = %s", (own,))
        assert await _scalar(conn, "select count(*) from import_jobs where user_id = %s", own) == 0
    finally:
        await conn.close()


async def _tables_of_soulworker(conn: psycopg.AsyncConnection[DictRow]) -> list[str]:
    cur = await conn.execute(
        "select relname from pg_class where relnamespace = current_schema()::regnamespace "
        "and relkind = 'r' order by relname"
    )
    return [row["relname"] for row in await cur.fetchall()]


async def _waiting_for_a_lock(conn: psycopg.AsyncConnection[DictRow], pid: int) -> bool:
    cur = await conn.execute(
        "select wait_event_type = 'Lock' as waiting from pg_stat_activity where pid = %s", (pid,)
    )
    row = await cur.fetchone()
    return bool(row and row["waiting"])


async def test_a_migrate_with_nothing_to_do_takes_no_table_lock(database_url: str) -> None:
    """Workers keep running during a deploy: a re-run with nothing pending must not queue an
    exclusive lock in front of them. A transaction holds EXCLUSIVE locks on every table (which
    conflict with every mode stronger than ACCESS SHARE) while migrate runs."""
    conn = await _connect(database_url)
    blocker = await psycopg.AsyncConnection.connect(database_url, row_factory=dict_row)
    try:
        tables = await _tables_of_soulworker(blocker)
        assert {"import_jobs", "user_profiles", "soulworker_migrations"} <= set(tables)
        await blocker.execute(
            sql.SQL("lock table {} in exclusive mode").format(
                sql.SQL(", ").join(sql.Identifier(table) for table in tables)
            )
        )

        # The same settings as the last deploy: nothing to change, nothing waited for.
        report = await migrate(conn, default_max_attempts=3)
        assert report.applied == []
        assert report.already_applied == [name for name, _ in migration_files()]

        # A changed setting is something to change: that run waits for the lock, as it must,
        # and completes once the conflicting transaction ends.
        changing = asyncio.create_task(migrate(conn, default_max_attempts=4))
        observer = await _connect(database_url)
        try:
            for _ in range(500):
                if await _waiting_for_a_lock(observer, conn.info.backend_pid):
                    break
                assert not changing.done(), "migrate changed the default without the lock"
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the changing migrate never waited for the table lock")
            await blocker.rollback()
            await changing
            cur = await observer.execute(
                "insert into import_jobs (user_id, storage_path) values (%s, 'imports/x') "
                "returning max_attempts",
                (uuid.uuid4(),),
            )
            row = await cur.fetchone()
            assert row is not None and row["max_attempts"] == 4
        finally:
            await observer.close()
    finally:
        await blocker.close()
        await conn.close()


async def test_a_database_migrated_before_a_comment_edit_sees_no_change(database_url: str) -> None:
    """Databases recorded the checksums of the texts they applied; a later edit of comment lines
    only (EARLIER_REVISIONS) is not a change, and anything else still is."""
    conn = await _connect(database_url)
    try:
        for name, revisions in EARLIER_REVISIONS.items():
            await conn.execute(
                "update soulworker_migrations set checksum = %s where name = %s",
                (revisions[0].text_checksum, name),
            )
        status = await migration_status(conn)
        report = await migrate(conn)
        assert (status.changed, report.changed_since_applied, report.applied) == ([], [], [])

        edited = next(iter(EARLIER_REVISIONS))
        await conn.execute(
            "update soulworker_migrations set checksum = %s where name = %s",
            ("0" * 64, edited),
        )
        assert (await migration_status(conn)).changed == [edited]
    finally:
        await conn.close()
