"""``soulworker doctor`` against real parts: a real PostgreSQL, the fake Supabase Storage and the
fake Messages API (both real HTTP servers on 127.0.0.1).

The main setups run ``python -m soulworker doctor`` as a real subprocess with a clean
environment, as an operator would: a healthy one (exit 0) and each broken one, with the hint
and exit code it must give. Rarer cases (a publishable key, a public bucket, a host that never
answers, a check that crashes) call the library in-process, which is the same code without the
process start-up cost.

Every run also checks that no secret (storage key, model key, database password) reaches the
output.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from soulworker import doctor
from soulworker.db_failures import DatabaseTarget, connect_failure_hint
from soulworker.doctor import (
    Check,
    DoctorContext,
    DoctorReport,
    Outcome,
    Status,
    render_text,
    run_doctor,
)
from soulworker.doctor.api_exposure import USER_DATA_TABLES
from soulworker.doctor.database import LISTEN_WAIT_SECONDS
from soulworker.migrate import migrate
from soulworker.settings import Settings
from soulworker.sql_files import migration_files
from soulworker.storage.buckets import classify_bucket_response
from soulworker.testing import messages_api as model_faults
from soulworker.testing.messages_api import FakeMessagesAPI
from soulworker.testing.storage_server import (
    FAKE_SECRET_KEY,
    FAKE_SERVICE_JWT,
    Respond,
    StorageServer,
)
from tests.supabase import SupabaseDatabase, supabase_database

pytestmark = pytest.mark.db

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_KEY = "sk-ant-api03-DOCTORTEST-0123456789abcdefghij"
BUCKET = "imports"
COUNT_TOKENS = "/v1/messages/count_tokens"
DEFAULT_QUICK_MODEL = Settings().quick_pass_model
# A legacy key shaped exactly like the real one but signed differently: the configuration
# check accepts it (role service_role), only Storage can tell it is wrong.
WRONG_SERVICE_JWT = FAKE_SERVICE_JWT.rsplit(".", 1)[0] + ".another-signature-entirely"
WRONG_SECRET_KEY = "sb_secret_wrongWrongWrongWrong0123456789"


def _jwt_part(claims: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()


# The project's public anon key: a JWT like the service key, but it cannot read private buckets.
ANON_JWT = ".".join(
    [
        _jwt_part({"alg": "HS256", "typ": "JWT"}),
        _jwt_part({"iss": "supabase", "ref": "fakeproject", "role": "anon"}),
        "fake-signature-not-checked",
    ]
)
# Variables of the machine running the tests that must not leak into doctor's environment.
_FOREIGN_PREFIXES = ("SOULWORKER_", "ANTHROPIC_", "SUPABASE_", "DATABASE_URL", "PG", "TMPDIR")
SUBPROCESS_TIMEOUT_SECONDS = 60


@pytest.fixture
def storage() -> Iterator[StorageServer]:
    with StorageServer(service_key=[FAKE_SERVICE_JWT, FAKE_SECRET_KEY]) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def messages() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as server:
        yield server


@pytest.fixture
def temp_base(tmp_path: Path) -> Path:
    base = tmp_path / "tmp"
    base.mkdir()
    return base


@pytest.fixture
def services_env(
    storage: StorageServer, messages: FakeMessagesAPI, temp_base: Path
) -> dict[str, str]:
    """Healthy storage and model settings, with a DATABASE_URL where nothing listens: for
    cases that never reach the database (creating a test database costs time)."""
    return {
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed_port()}/unused",
        "SUPABASE_URL": storage.url,
        "SUPABASE_SERVICE_KEY": FAKE_SERVICE_JWT,
        "ANTHROPIC_API_KEY": MODEL_KEY,
        "ANTHROPIC_BASE_URL": messages.base_url,
        "TMPDIR": str(temp_base),
    }


@pytest.fixture
def healthy_env(services_env: dict[str, str], database_url: str) -> dict[str, str]:
    """The daemon's variables for a setup where every check should pass."""
    return {**services_env, "DATABASE_URL": database_url}


def without_model(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the model stages off: for cases about something else, it spares each run
    the second the SDK takes to import (the healthy and model cases keep them on)."""
    trimmed = {k: v for k, v in env.items() if k != "ANTHROPIC_API_KEY"}
    return {**trimmed, "SOULWORKER_MODEL_STAGES": "off"}


def closed_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class DoctorRun:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.stdout)
        return parsed

    def check(self, name: str) -> dict[str, Any]:
        for entry in self.report["checks"]:
            if entry["name"] == name:
                return dict(entry)
        raise AssertionError(f"no {name} check in the report")

    def status(self, name: str) -> str:
        return str(self.check(name)["status"])


def run_cli(env: Mapping[str, str], *args: str, cwd: Path) -> DoctorRun:
    """``python -m soulworker doctor ARGS`` with only ``env`` plus a clean base environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    base["PYTHONPATH"] = str(REPO_ROOT)
    completed = subprocess.run(
        [sys.executable, "-m", "soulworker", "doctor", *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )
    return DoctorRun(completed.returncode, completed.stdout, completed.stderr)


def secrets_of(env: Mapping[str, str]) -> list[str]:
    found = [env.get("SUPABASE_SERVICE_KEY", ""), env.get("ANTHROPIC_API_KEY", "")]
    if env.get("DATABASE_URL"):
        found.append(str(conninfo_to_dict(env["DATABASE_URL"]).get("password") or ""))
    return [secret for secret in found if secret]


def assert_no_secrets(run: DoctorRun, env: Mapping[str, str]) -> None:
    for secret in secrets_of(env):
        assert secret not in run.stdout
        assert secret not in run.stderr


# --- the setups, as a subprocess -----------------------------------------------------------


def test_a_healthy_setup_passes_every_check(
    healthy_env: dict[str, str],
    storage: StorageServer,
    messages: FakeMessagesAPI,
    tmp_path: Path,
) -> None:
    run = run_cli(healthy_env, "--json", cwd=tmp_path)

    assert run.exit_code == 0, run.stdout + run.stderr
    report = run.report
    assert report["healthy"] is True
    assert [c["name"] for c in report["checks"]] == list(doctor.CHECK_NAMES)
    for entry in report["checks"]:
        # Free space depends on the machine: a small disk may warn, never fail.
        expected = {"ok", "warn"} if entry["name"] == "temp_space" else {"ok"}
        if entry["name"] == "embeddings":
            # Off by default (and this server has no pgvector): test_embeddings_doctor.py.
            expected = {"skip"}
        assert entry["status"] in expected, entry
    assert run.check("database")["details"]["server_version_num"] >= 150000
    assert run.check("migrations")["details"]["applied"] == len(migration_files())
    latest = migration_files()[-1][0].removesuffix(".sql")
    assert run.check("migrations")["finding"].endswith(f"(latest {latest})")
    assert run.check("listen")["details"]["latency_ms"] < LISTEN_WAIT_SECONDS * 1000
    # The storage probe is the authenticated bucket request, sent the way a JWT must be.
    bucket_requests = [r for r in storage.requests if r.path == f"/storage/v1/bucket/{BUCKET}"]
    assert len(bucket_requests) == 1
    assert bucket_requests[0].auth == "jwt"
    assert bucket_requests[0].status == 200
    # The model probe is one free token count with the quick-pass model; nothing generated.
    assert [r.path for r in messages.requests] == [COUNT_TOKENS]
    assert messages.requests[0].body["model"] == DEFAULT_QUICK_MODEL
    assert run.check("model")["details"]["input_tokens"][DEFAULT_QUICK_MODEL] > 0
    # The temp check used the private root under TMPDIR and left nothing behind in it.
    root = Path(run.check("temp_space")["details"]["path"])
    assert root.parent == Path(healthy_env["TMPDIR"])
    assert list(root.iterdir()) == []
    assert_no_secrets(run, healthy_env)


def test_the_readable_report_lists_each_check_with_a_fix_for_each_problem(
    healthy_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**without_model(healthy_env), "SOULWORKER_TRANSACTION_POOLER": "true"}

    run = run_cli(env, cwd=tmp_path)

    assert run.exit_code == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    pooler = next(i for i, line in enumerate(lines) if line.split()[1:2] == ["pooler"])
    assert lines[pooler].startswith("WARN")
    assert "poll only, prepared statements off" in lines[pooler]
    assert lines[pooler + 1].strip().startswith("fix:")
    assert "session pooler" in lines[pooler + 1]
    listen = next(line for line in lines if line.split()[1:2] == ["listen"])
    assert listen.startswith("WARN")
    assert "skipped" in listen
    database = next(line for line in lines if line.split()[1:2] == ["database"])
    assert database.startswith("OK")
    assert lines[-1].endswith("healthy")
    assert_no_secrets(run, env)


def test_a_transaction_pooler_warns_skips_listen_and_still_passes(
    healthy_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**healthy_env, "SOULWORKER_TRANSACTION_POOLER": "true"}

    run = run_cli(env, "--json", cwd=tmp_path)

    assert run.exit_code == 0, run.stdout
    pooler = run.check("pooler")
    assert pooler["status"] == "warn"
    assert pooler["details"]["transaction_pooler"] is True
    assert "SOULWORKER_TRANSACTION_POOLER=true" in pooler["finding"]
    assert "5432" in pooler["hint"]
    listen = run.check("listen")
    assert listen["status"] == "warn"
    assert "skipped" in listen["finding"]
    assert "latency_ms" not in listen["details"]
    assert run.status("migrations") == "ok"


def test_an_unreachable_database_fails_and_the_other_checks_still_run(
    services_env: dict[str, str], tmp_path: Path
) -> None:
    port = closed_port()
    env = {
        **services_env,
        "DATABASE_URL": f"postgresql://postgres:hunter2secret@127.0.0.1:{port}/x",
    }

    started = time.monotonic()
    run = run_cli(env, "--json", cwd=tmp_path)

    assert run.exit_code == 1
    assert time.monotonic() - started < doctor.CHECK_TIMEOUT_SECONDS
    database = run.check("database")
    assert database["status"] == "fail"
    assert f"127.0.0.1:{port}" in database["finding"]
    assert "refused" in database["finding"].lower()
    assert "host and port" in database["hint"]
    for dependent in ("listen", "migrations"):
        assert run.status(dependent) == "skip"
        assert "database check failed" in run.check(dependent)["finding"]
    # Independence: everything that does not need the database was still checked.
    for independent in ("configuration", "pooler", "storage", "model", "ijson"):
        assert run.status(independent) == "ok", run.check(independent)
    assert "hunter2secret" not in run.stdout + run.stderr
    assert_no_secrets(run, env)


def test_an_empty_database_fails_on_migrations_with_the_command_to_run(
    healthy_env: dict[str, str], empty_database_url: str, tmp_path: Path
) -> None:
    env = {**without_model(healthy_env), "DATABASE_URL": empty_database_url}

    run = run_cli(env, "--json", cwd=tmp_path)

    assert run.exit_code == 1
    migrations = run.check("migrations")
    assert migrations["status"] == "fail"
    assert "soulworker migrate" in migrations["hint"]
    expected = [name for name, _ in migration_files()]
    assert migrations["details"]["pending"] == expected
    assert expected[0] in migrations["finding"]
    assert run.status("database") == "ok"
    assert run.status("listen") == "ok"


@pytest.mark.parametrize(
    ("wrong_key", "kind"),
    [(WRONG_SERVICE_JWT, "legacy service_role JWT"), (WRONG_SECRET_KEY, "secret key")],
)
def test_a_wrong_storage_key_is_reported_as_refused(
    healthy_env: dict[str, str], storage: StorageServer, tmp_path: Path, wrong_key: str, kind: str
) -> None:
    env = {**without_model(healthy_env), "SUPABASE_SERVICE_KEY": wrong_key}

    run = run_cli(env, "--json", cwd=tmp_path)

    assert run.exit_code == 1
    result = run.check("storage")
    assert result["status"] == "fail"
    assert "refused SUPABASE_SERVICE_KEY" in result["finding"]
    assert kind in result["finding"]
    assert "service_role" in result["hint"]
    assert "sb_secret_" in result["hint"]
    assert [r.auth for r in storage.requests] == ["wrong_key"]
    assert run.status("configuration") == "ok"
    assert_no_secrets(run, env)


def test_a_missing_bucket_is_named_with_how_to_fix_it(
    healthy_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**without_model(healthy_env), "SOULWORKER_STORAGE_BUCKETS": f"{BUCKET},archive"}

    run = run_cli(env, "--json", cwd=tmp_path)

    assert run.exit_code == 1
    result = run.check("storage")
    assert result["status"] == "fail"
    assert "'archive' does not exist" in result["finding"]
    assert "SOULWORKER_STORAGE_BUCKETS" in result["hint"]
    assert result["details"]["found"] == [BUCKET]
    assert result["details"]["missing"] == ["archive"]


def test_a_wrong_model_key_is_reported_with_the_variable_to_fix(
    healthy_env: dict[str, str], messages: FakeMessagesAPI, tmp_path: Path
) -> None:
    messages.script(model_faults.unauthorized(path=COUNT_TOKENS))

    run = run_cli(healthy_env, "--json", cwd=tmp_path)

    assert run.exit_code == 1
    result = run.check("model")
    assert result["status"] == "fail"
    assert "refused ANTHROPIC_API_KEY" in result["finding"]
    assert "ANTHROPIC_API_KEY" in result["hint"]
    # One request: doctor reports what the API said instead of retrying a refused key.
    assert len(messages.requests) == 1
    assert_no_secrets(run, healthy_env)


def test_model_stages_off_skips_the_model_check_and_needs_no_key(
    healthy_env: dict[str, str], messages: FakeMessagesAPI, tmp_path: Path
) -> None:
    env = without_model(healthy_env)

    run = run_cli(env, "--json", cwd=tmp_path)

    assert run.exit_code == 0, run.stdout
    assert run.status("model") == "skip"
    assert "SOULWORKER_MODEL_STAGES=off" in run.check("model")["finding"]
    assert run.status("configuration") == "ok"
    assert messages.requests == []


def test_check_selects_one_check_and_what_it_needs(
    healthy_env: dict[str, str], messages: FakeMessagesAPI, tmp_path: Path
) -> None:
    run = run_cli(healthy_env, "--json", "--check", "listen", cwd=tmp_path)

    assert run.exit_code == 0
    assert [c["name"] for c in run.report["checks"]] == ["database", "listen"]
    assert messages.requests == []


# --- exposure through Supabase's API ------------------------------------------------------------


@pytest.fixture
def migrated_supabase(pg_server: str, supabase_api_roles: None) -> Iterator[SupabaseDatabase]:
    """A database prepared like a Supabase project and migrated by its owner."""
    with supabase_database(pg_server) as db:

        async def apply() -> None:
            conn = await psycopg.AsyncConnection.connect(
                db.owner_url, autocommit=True, row_factory=dict_row
            )
            try:
                await migrate(conn)
            finally:
                await conn.close()

        asyncio.run(apply())
        yield db


def as_owner(db: SupabaseDatabase, *statements: str) -> None:
    """Run ``statements`` as the tables' owner, as an operator in the SQL editor would."""
    with psycopg.connect(db.owner_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def user_sees(db: SupabaseDatabase, role: str, statement: str) -> int | str:
    """How many rows ``statement`` (a count) finds as ``role``, or ``denied``."""
    with psycopg.connect(db.admin_url) as conn:
        try:
            conn.execute(f"set role {role}".encode())
            row = conn.execute(statement.encode()).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return "denied"
        finally:
            conn.rollback()
    assert row is not None
    return int(row[0])


def test_an_exposed_supabase_table_is_a_warning_with_the_sql_that_fixes_it(
    services_env: dict[str, str], migrated_supabase: SupabaseDatabase, tmp_path: Path
) -> None:
    db = migrated_supabase
    env = {**without_model(services_env), "DATABASE_URL": db.owner_url}

    healthy = run_cli(env, "--json", "--check", "exposure", cwd=tmp_path)
    assert healthy.status("exposure") == "ok", healthy.check("exposure")
    assert healthy.check("exposure")["details"]["fix_sql"] == []
    assert set(healthy.check("exposure")["details"]["tables"]) == set(USER_DATA_TABLES)

    # What a dashboard toggle, a copied tutorial snippet or a hand-written policy can do.
    as_owner(
        db,
        "alter table user_profiles disable row level security",
        "grant select on user_profiles, conversation_chunks to anon",
        "grant select (content) on import_job_artifacts to anon",
        "grant truncate on user_profiles to authenticated",
        "create policy everyone on conversation_chunks for select to authenticated using (true)",
        "grant execute on function import_job_profile_failed(uuid, uuid, text) to authenticated",
        "insert into user_profiles (user_id, soul_md) values (gen_random_uuid(), 'private')",
        "insert into conversation_chunks (user_id, conversation_id, content, created_at) "
        "values (gen_random_uuid(), 'c', 'private text', now())",
    )
    assert user_sees(db, "anon", "select count(*) from user_profiles") == 1
    assert user_sees(db, "authenticated", "select count(*) from conversation_chunks") == 1

    run = run_cli(env, "--json", "--check", "exposure", cwd=tmp_path)

    assert run.exit_code == 0, "a warning, not a failure: jobs still run"
    exposure = run.check("exposure")
    assert exposure["status"] == "warn"
    for problem in (
        "row level security is off on user_profiles",
        "anon can read user_profiles",
        "anon can read conversation_chunks",
        "anon can read import_job_artifacts",
        "policy 'everyone' lets every user read every row of conversation_chunks",
        "authenticated holds TRUNCATE on user_profiles",
        "authenticated can execute import_job_profile_failed",
    ):
        assert problem in exposure["finding"]
    fixes = exposure["details"]["fix_sql"]
    assert "docs/supabase-exposure.md" in exposure["hint"]
    assert all(statement in exposure["hint"] for statement in fixes)
    assert "alter table public.user_profiles enable row level security;" in fixes

    # The SQL it gives is the fix: run as the owner, it closes everything again.
    as_owner(db, *fixes)
    fixed = run_cli(env, "--json", "--check", "exposure", cwd=tmp_path)
    assert fixed.status("exposure") == "ok", fixed.check("exposure")
    assert user_sees(db, "anon", "select count(*) from user_profiles") == "denied"
    assert user_sees(db, "anon", "select count(*) from conversation_chunks") == "denied"
    assert user_sees(db, "authenticated", "select count(*) from user_profiles") == 0
    # The over-wide policy now shows a user their own rows only (nobody's, without a JWT).
    assert user_sees(db, "authenticated", "select count(*) from conversation_chunks") == 0
    assert_no_secrets(run, env)


async def test_exposure_is_ok_without_a_supabase_auth_schema(
    healthy_env: dict[str, str], temp_base: Path
) -> None:
    report = await doctor_for(healthy_env, temp_base, only=["exposure"])

    result = report.result("exposure")
    assert result.status is Status.OK
    assert "no Supabase auth schema" in result.finding
    assert result.details["supabase"] is False


@pytest.mark.usefixtures("supabase_api_roles")
async def test_the_apps_own_row_level_security_passes_the_exposure_check(
    services_env: dict[str, str], pg_server: str, temp_base: Path
) -> None:
    with supabase_database(pg_server, app_tables=True) as db:
        conn = await psycopg.AsyncConnection.connect(
            db.owner_url, autocommit=True, row_factory=dict_row
        )
        try:
            await migrate(conn)
        finally:
            await conn.close()
        env = {**without_model(services_env), "DATABASE_URL": db.owner_url}

        report = await doctor_for(env, temp_base, only=["exposure"])

    result = report.result("exposure")
    assert result.status is Status.OK, result
    # The app's chunks table keeps its grants to authenticated: row level security (with no
    # policy of the app's for users) decides, and none of them bypasses it.
    assert "TRUNCATE" not in result.details["tables"]["conversation_chunks"]["authenticated"]
    assert result.details["tables"]["conversation_chunks"]["authenticated"]


# --- rarer cases, in-process ---------------------------------------------------------------


async def doctor_for(
    env: Mapping[str, str], temp_base: Path, *, only: list[str] | None = None, **kwargs: Any
) -> DoctorReport:
    return await run_doctor(
        DoctorContext.from_environ(env, temp_base=temp_base), only=only, **kwargs
    )


@pytest.mark.parametrize(
    ("key", "expected"),
    [("sb_publishable_abcdefghijklmnop", "publishable"), (ANON_JWT, "anon key")],
)
async def test_a_key_that_cannot_read_private_buckets_fails_configuration(
    services_env: dict[str, str], storage: StorageServer, temp_base: Path, key: str, expected: str
) -> None:
    env = {**services_env, "SUPABASE_SERVICE_KEY": key}

    report = await doctor_for(env, temp_base, only=["configuration", "storage"])

    configuration = report.result("configuration")
    assert configuration.status is Status.FAIL
    assert expected in configuration.finding
    assert configuration.hint is not None
    assert "sb_secret_" in configuration.hint
    assert key not in configuration.finding
    assert report.result("storage").status is Status.SKIP
    assert storage.requests == []


async def test_an_unknown_soulworker_variable_is_a_warning(
    services_env: dict[str, str], temp_base: Path
) -> None:
    env = {**services_env, "SOULWORKER_CONCURENCY": "4"}

    report = await doctor_for(env, temp_base, only=["configuration"])

    result = report.result("configuration")
    assert result.status is Status.WARN
    assert "SOULWORKER_CONCURENCY" in result.finding
    assert report.healthy


async def test_an_invalid_setting_fails_but_local_checks_still_run(
    services_env: dict[str, str], temp_base: Path
) -> None:
    env = {**services_env, "SOULWORKER_CONCURRENCY": "zero"}

    report = await doctor_for(env, temp_base)

    configuration = report.result("configuration")
    assert configuration.status is Status.FAIL
    assert "SOULWORKER_CONCURRENCY" in configuration.finding
    assert report.exit_code == 1
    for name in ("database", "storage", "model"):
        assert report.result(name).status is Status.SKIP
    assert report.result("ijson").status is Status.OK
    assert report.result("temp_space").status in (Status.OK, Status.WARN)


async def test_a_public_bucket_is_a_warning(
    services_env: dict[str, str], storage: StorageServer, temp_base: Path
) -> None:
    storage.create_bucket(BUCKET, public=True)

    report = await doctor_for(services_env, temp_base, only=["storage"])

    result = report.result("storage")
    assert result.status is Status.WARN
    assert "public" in result.finding
    assert result.hint is not None
    assert "private" in result.hint


async def test_storage_that_is_down_fails_with_its_status(
    services_env: dict[str, str], storage: StorageServer, temp_base: Path
) -> None:
    storage.add_bucket_fault(Respond.server_error(503))

    report = await doctor_for(services_env, temp_base, only=["storage"])

    result = report.result("storage")
    assert result.status is Status.FAIL
    assert "HTTP 503" in result.finding
    assert result.hint is not None
    assert "try again" in result.hint


async def test_a_supabase_url_without_storage_behind_it_is_told_apart(
    services_env: dict[str, str], storage: StorageServer, temp_base: Path
) -> None:
    env = {**services_env, "SUPABASE_URL": storage.url + "/not-supabase"}

    report = await doctor_for(env, temp_base, only=["storage"])

    result = report.result("storage")
    assert result.status is Status.FAIL
    assert "HTTP 404" in result.finding
    assert result.hint is not None
    assert "without a path" in result.hint


async def test_an_unknown_model_names_the_setting_to_change(
    services_env: dict[str, str], messages: FakeMessagesAPI, temp_base: Path
) -> None:
    env = {**services_env, "SOULWORKER_QUICK_PASS_MODEL": "claude-nonexistent-9"}
    messages.script(model_faults.not_found(path=COUNT_TOKENS))

    report = await doctor_for(env, temp_base, only=["model"])

    result = report.result("model")
    assert result.status is Status.FAIL
    assert "claude-nonexistent-9" in result.finding
    assert result.hint is not None
    assert "SOULWORKER_QUICK_PASS_MODEL" in result.hint
    assert [r.body["model"] for r in messages.requests] == ["claude-nonexistent-9"]


async def test_a_distinct_full_pass_model_is_checked_too(
    services_env: dict[str, str], messages: FakeMessagesAPI, temp_base: Path
) -> None:
    env = {**services_env, "SOULWORKER_FULL_PASS_MODEL": "claude-other-1"}
    messages.script(
        model_faults.not_found(
            path=COUNT_TOKENS, when=lambda r: r.body["model"] != DEFAULT_QUICK_MODEL
        )
    )

    report = await doctor_for(env, temp_base, only=["model"])

    result = report.result("model")
    assert result.status is Status.FAIL
    assert "claude-other-1" in result.finding
    assert result.hint is not None
    assert "SOULWORKER_FULL_PASS_MODEL" in result.hint
    assert [r.body["model"] for r in messages.requests] == [DEFAULT_QUICK_MODEL, "claude-other-1"]


async def test_an_unreachable_model_api_is_told_apart_from_a_wrong_key(
    services_env: dict[str, str], temp_base: Path
) -> None:
    env = {**services_env, "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{closed_port()}"}

    report = await doctor_for(env, temp_base, only=["model"])

    result = report.result("model")
    assert result.status is Status.FAIL
    assert "cannot reach the model API" in result.finding
    assert result.hint is not None
    assert "ANTHROPIC_BASE_URL" in result.hint


async def test_a_rate_limited_model_key_is_only_a_warning(
    services_env: dict[str, str], messages: FakeMessagesAPI, temp_base: Path
) -> None:
    messages.script(model_faults.rate_limited(retry_after=30, path=COUNT_TOKENS))

    report = await doctor_for(services_env, temp_base, only=["model"])

    result = report.result("model")
    assert result.status is Status.WARN
    assert "429" in result.finding
    assert len(messages.requests) == 1


async def test_a_host_that_never_answers_cannot_hang_doctor(
    healthy_env: dict[str, str], temp_base: Path
) -> None:
    # Accepts connections (the kernel's backlog) but never reads or answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        env = {**healthy_env, "SUPABASE_URL": f"http://127.0.0.1:{silent.getsockname()[1]}"}

        started = time.monotonic()
        report = await doctor_for(env, temp_base, only=["storage", "database"], timeout_seconds=0.5)
        elapsed = time.monotonic() - started

    result = report.result("storage")
    assert result.status is Status.FAIL
    assert "no answer within 0.5 s" in result.finding
    assert elapsed < 5
    assert report.result("database").status is Status.OK


async def test_a_check_that_crashes_fails_alone_and_never_leaks_what_it_held(
    temp_base: Path,
) -> None:
    async def crashes(context: DoctorContext) -> Outcome:
        raise RuntimeError(f"boom with {MODEL_KEY} inside")

    async def fine(context: DoctorContext) -> Outcome:
        return doctor.ok("fine")

    checks = [
        Check("crashes", crashes),
        Check("after", fine, needs=("crashes",)),
        Check("fine", fine),
    ]

    report = await doctor_for({}, temp_base, checks=checks)

    crashed = report.result("crashes")
    assert crashed.status is Status.FAIL
    assert "RuntimeError" in crashed.finding
    assert MODEL_KEY not in crashed.finding
    assert report.result("after").status is Status.SKIP
    assert report.result("fine").status is Status.OK
    assert "FAIL  crashes" in render_text(report)


async def test_listen_is_skipped_when_turned_off(
    healthy_env: dict[str, str], temp_base: Path
) -> None:
    env = {**healthy_env, "SOULWORKER_LISTEN": "off"}

    report = await doctor_for(env, temp_base, only=["listen", "pooler"])

    assert report.result("listen").status is Status.SKIP
    assert "SOULWORKER_LISTEN=off" in report.result("listen").finding
    assert report.result("pooler").status is Status.OK
    assert "poll only" in report.result("pooler").finding


async def test_an_unknown_check_name_is_refused() -> None:
    with pytest.raises(ValueError, match="nonsense"):
        await run_doctor(DoctorContext.from_environ({}), only=["nonsense"])


# --- pure decisions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("postgresql://u@127.0.0.1:5432/db", True),
        ("postgresql://u@localhost/db", True),
        ("postgresql://u@[::1]:5432/db", True),
        ("host=/var/run/postgresql dbname=db", True),
        ("postgresql://u@aws-0-eu-central-1.pooler.supabase.com:5432/postgres", False),
        ("postgresql://u@10.0.0.5:5432/db", False),
    ],
)
def test_which_database_hosts_count_as_local(url: str, local: bool) -> None:
    assert DatabaseTarget.of(url, {}).is_local is local


def test_sslmode_comes_from_the_url_or_pgsslmode() -> None:
    remote = "postgresql://u@db.example.com/db"
    assert DatabaseTarget.of(remote, {}).sslmode == "prefer"
    assert DatabaseTarget.of(remote, {"PGSSLMODE": "require"}).sslmode == "require"
    assert DatabaseTarget.of(remote + "?sslmode=verify-full", {}).sslmode == "verify-full"


def test_a_direct_supabase_host_gets_the_ipv4_hint() -> None:
    target = DatabaseTarget.of("postgresql://postgres@db.abcdefgh.supabase.co:5432/postgres", {})
    hint = connect_failure_hint("Network is unreachable", target)
    assert "session pooler" in hint
    assert "IPv4" in hint


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, {"id": "imports", "public": False}, "found"),
        (
            400,
            {"statusCode": "404", "code": "NoSuchBucket", "error": "Bucket not found"},
            "missing",
        ),
        (400, {"statusCode": "404", "error": "Bucket not found", "message": "x"}, "missing"),
        (400, {"statusCode": "400", "code": "InvalidJWT", "error": "InvalidJWT"}, "key_refused"),
        (400, {"statusCode": "403", "error": "Unauthorized", "message": "x"}, "key_refused"),
        (401, {"message": "Invalid API key"}, "key_refused"),
        (404, {"statusCode": "404", "error": "Not Found", "message": "Route"}, "other"),
        (503, {"statusCode": "503", "code": "InternalError"}, "other"),
    ],
)
def test_bucket_answers_are_classified_by_the_body_not_the_status_line(
    status: int, body: dict[str, Any], verdict: str
) -> None:
    assert classify_bucket_response(status, json.dumps(body).encode()) == verdict
