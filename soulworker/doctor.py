"""``soulworker doctor``: check that this deployment can do its job, and say what to fix.

Each check is a small async function that returns an :class:`Outcome`: a status, a one-line
finding and, unless all is well, a hint saying what to do. :func:`run_doctor` runs them all
and returns a :class:`DoctorReport`; the CLI prints it as a list or as JSON.

Statuses and what they mean for the exit code (0 only when nothing failed):

* ``ok``: works as it should.
* ``warn``: works, but not as well as it could, or something looks wrong without stopping
  jobs: an unknown ``SOULWORKER_*`` variable (probably a typo), a transaction pooler (polling
  only), ``sslmode`` that may fall back to plain text, a public export bucket, migrations
  this version does not know, users' data reachable through Supabase's API beyond what its
  owner may read, little temp space, a model API that rate-limits right now.
* ``fail``: jobs would fail or never run: missing or invalid settings, an unreachable or too
  old database, pending migrations, a refused key, a missing bucket, an unknown model, no fast
  JSON parser, no usable temp space.
* ``skip``: not checked, with the reason: it depends on a check that failed (LISTEN needs the
  database), its settings are missing (already a configuration failure), or it does not apply
  (the model check when ``SOULWORKER_MODEL_STAGES=off``). A skip never changes the exit code
  by itself.

Checks are independent: each runs concurrently with the others, a failure in one never stops
another, and each has its own time limit (:data:`CHECK_TIMEOUT_SECONDS`), so doctor never
hangs on a silent host. Only ``listen``, ``migrations`` and ``exposure`` wait for ``database``.

Secrets never reach the output: findings are built from safe parts (host names, ports,
statuses, error codes); the database driver's own error text is passed through
``redact_text`` first; keys are described by their kind only.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import json
import re
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx
import ijson
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow

from soulworker import db
from soulworker.export.reader import FAST_BACKEND as FAST_JSON_BACKEND
from soulworker.export.reader import fast_json_backend_problem
from soulworker.exposure import USER_DATA_TABLES, fix_statements, inspect_exposure
from soulworker.jobs.listener import CHANNEL
from soulworker.logs import redact_text
from soulworker.migrate import migration_status
from soulworker.settings import GIB, Settings, SettingsError, unknown_variables
from soulworker.sql_files import query
from soulworker.storage.answers import STORAGE_AUTH_CODES
from soulworker.storage.download import StorageConfig, StorageConfigError
from soulworker.tempfiles import WorkspaceError, WorkspaceRoot

if TYPE_CHECKING:
    from soulworker.llm.errors import ModelError

APPLICATION_NAME = "soulworker doctor"
"""How doctor's connections show up in ``pg_stat_activity``."""

CHECK_TIMEOUT_SECONDS = 15.0
"""Time limit of one check: above every inner timeout below, so those name the real cause
first, and short enough that doctor never looks hung."""

DB_CONNECT_TIMEOUT_SECONDS = 5
"""A database that has not accepted within 5 s will not do better for the daemon (libpq's
minimum is 2 s)."""

LISTEN_WAIT_SECONDS = 3.0
"""A NOTIFY normally arrives within milliseconds; 3 s allows for a slow link."""

HTTP_CONNECT_TIMEOUT_SECONDS = 5.0
"""Storage and the model API accept connections within a second or two when healthy."""

HTTP_READ_TIMEOUT_SECONDS = 10.0
"""The probes are tiny requests; a healthy API answers well within this."""

MIN_POSTGRES_VERSION_NUM = 150000
"""The schema targets PostgreSQL 15+ (docs/contract.md) (``server_version_num`` form)."""

SECURE_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})
"""sslmodes that never fall back to plain text (libpq's default ``prefer`` does)."""

TEMP_FAIL_BELOW_BYTES = 1 * GIB
"""Below 1 GiB free even a mid-sized export (with media) cannot be downloaded: fail."""

LARGE_EXPORT_BYTES = 2 * GIB
"""A large real export: the predecessor's users had 1.1 GB and 1.8 GB ZIPs. Each running job
holds one downloaded export in the temp directory (members are streamed, never extracted), so
doctor warns when ``SOULWORKER_CONCURRENCY`` such exports would not fit at once."""

PROBE_MODEL_SYSTEM = "soulworker doctor"
PROBE_MODEL_TEXT = "Hello."
"""What ``count_tokens`` is asked to count: tiny, fixed and free of anyone's data."""

PENDING_SHOWN = 3
"""Pending migration names listed in the finding; the JSON details list them all."""

EXPOSURE_DOC = "docs/supabase-exposure.md"
"""Where the exposure check's rules and fixes are explained."""

DEFAULT_MODEL_API_HOST = "api.anthropic.com"
"""Where the SDK sends requests when ANTHROPIC_BASE_URL is unset (shown in findings)."""

ERROR_BODY_MAX_BYTES = 64 * 1024
"""A Storage error body is a small JSON object; never read more of one."""

_SUPABASE_DIRECT_HOST = re.compile(r"^db\.[a-z0-9]+\.supabase\.co$")


class Status(enum.StrEnum):
    """How a check went; see the module docstring for what each means."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


_SEVERITY = {Status.SKIP: 0, Status.OK: 1, Status.WARN: 2, Status.FAIL: 3}


@dataclass(frozen=True)
class Outcome:
    """What one check found: ``finding`` is one line; ``hint`` says what to do (``None`` when
    there is nothing to do); ``details`` are machine-readable facts for ``--json``, never
    secrets."""

    status: Status
    finding: str
    hint: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def ok(finding: str, **details: Any) -> Outcome:
    return Outcome(Status.OK, finding, None, details)


def warn(finding: str, hint: str, **details: Any) -> Outcome:
    return Outcome(Status.WARN, finding, hint, details)


def fail(finding: str, hint: str, **details: Any) -> Outcome:
    return Outcome(Status.FAIL, finding, hint, details)


def skip(finding: str, hint: str | None = None, **details: Any) -> Outcome:
    return Outcome(Status.SKIP, finding, hint, details)


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome with its name and how long it took."""

    name: str
    status: Status
    finding: str
    hint: str | None
    details: Mapping[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "finding": self.finding,
            "hint": self.hint,
            "seconds": round(self.seconds, 3),
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class DoctorReport:
    """Every check's result, in the order the checks are declared."""

    results: tuple[CheckResult, ...]

    @property
    def healthy(self) -> bool:
        """No check failed (warnings and skips are allowed)."""
        return all(result.status is not Status.FAIL for result in self.results)

    @property
    def exit_code(self) -> int:
        """0 when healthy, 1 otherwise."""
        return 0 if self.healthy else 1

    def counts(self) -> dict[str, int]:
        return {
            status.value: sum(1 for r in self.results if r.status is status) for status in Status
        }

    def result(self, name: str) -> CheckResult:
        """The result of the check called ``name`` (``KeyError`` if it did not run)."""
        for candidate in self.results:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "checks": [result.to_json() for result in self.results],
        }


@dataclass(frozen=True)
class DoctorContext:
    """What the checks look at. ``settings`` is ``None`` when the environment does not parse
    (``settings_error`` says why); ``temp_base`` is where the private temp root lives
    (``None``: ``TMPDIR`` / the system default, as for the daemon)."""

    environ: Mapping[str, str]
    settings: Settings | None
    settings_error: str | None = None
    temp_base: Path | None = None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], *, temp_base: Path | None = None
    ) -> DoctorContext:
        try:
            settings: Settings | None = Settings.from_env(environ)
            error = None
        except SettingsError as exc:
            settings, error = None, str(exc)
        return cls(environ=environ, settings=settings, settings_error=error, temp_base=temp_base)


CheckFunction = Callable[[DoctorContext], Awaitable[Outcome]]


@dataclass(frozen=True)
class Check:
    """A named check; ``needs`` names earlier checks that must not fail for it to run."""

    name: str
    run: CheckFunction
    needs: tuple[str, ...] = ()


# --- running ----------------------------------------------------------------------------------


async def run_doctor(
    context: DoctorContext,
    *,
    only: Collection[str] | None = None,
    timeout_seconds: float = CHECK_TIMEOUT_SECONDS,
    checks: Sequence[Check] | None = None,
) -> DoctorReport:
    """Run the checks (``only`` these and what they need, when given) concurrently.

    Each check gets ``timeout_seconds``, counted from when it starts (after the checks it
    needs). A check that times out or raises fails with a safe message; the others go on.
    Raises ``ValueError`` for an unknown name in ``only``.
    """
    declared = list(checks if checks is not None else CHECKS)
    selected = _with_dependencies(declared, only)
    tasks: dict[str, asyncio.Task[CheckResult]] = {}
    for check in declared:
        if check.name not in selected:
            continue
        needed = [tasks[name] for name in check.needs if name in tasks]
        tasks[check.name] = asyncio.create_task(
            _run_one(check, context, needed, timeout_seconds), name=f"doctor-{check.name}"
        )
    results = await asyncio.gather(*tasks.values())
    return DoctorReport(tuple(results))


def _with_dependencies(declared: Sequence[Check], only: Collection[str] | None) -> set[str]:
    by_name = {check.name: check for check in declared}
    if only is None:
        return set(by_name)
    unknown = sorted(set(only) - set(by_name))
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(unknown)}")
    selected: set[str] = set()
    pending = list(only)
    while pending:
        name = pending.pop()
        if name not in selected:
            selected.add(name)
            pending.extend(by_name[name].needs)
    return selected


async def _run_one(
    check: Check,
    context: DoctorContext,
    needed: Sequence[asyncio.Task[CheckResult]],
    timeout_seconds: float,
) -> CheckResult:
    for task in needed:
        prerequisite = await task
        if prerequisite.status in (Status.FAIL, Status.SKIP):
            verb = "failed" if prerequisite.status is Status.FAIL else "was skipped"
            outcome = skip(f"skipped: the {prerequisite.name} check {verb}")
            return _result(check, outcome, 0.0)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_seconds):
            outcome = await check.run(context)
    except TimeoutError:
        outcome = fail(
            f"no answer within {timeout_seconds:g} s",
            _TIMEOUT_HINTS.get(check.name, "check the network path to this service"),
        )
    except psycopg.Error as exc:
        # The database check itself connected; this is a later query or a dropped link.
        outcome = fail(
            f"database error: {type(exc).__name__}: {_safe_text(str(exc))}",
            "run doctor again; if it persists, check the database's logs and load",
        )
    except Exception as exc:  # a check must never take the others down with it
        outcome = fail(
            f"the check itself failed: {type(exc).__name__}: {_safe_text(str(exc))}",
            "this looks like a bug in soulworker doctor; please report it with this output",
        )
    return _result(check, outcome, time.monotonic() - started)


def _result(check: Check, outcome: Outcome, seconds: float) -> CheckResult:
    return CheckResult(
        name=check.name,
        status=outcome.status,
        finding=outcome.finding,
        hint=outcome.hint,
        details=outcome.details,
        seconds=seconds,
    )


_TIMEOUT_HINTS = {
    "database": "check the host and port in DATABASE_URL and any firewall or IP allow-list",
    "listen": "the database accepted LISTEN but did not deliver; see the pooler check",
    "migrations": "the database is very slow to answer; check its load",
    "exposure": "the database is very slow to answer; check its load",
    "storage": "check SUPABASE_URL and that this machine can reach it (outbound HTTPS)",
    "model": "check that this machine can reach the model API (ANTHROPIC_BASE_URL)",
    "temp_space": "the temp directory is very slow (a network filesystem?); point TMPDIR at a "
    "local disk",
}


def _safe_text(text: str, limit: int = 160) -> str:
    """First line of ``text`` with secret-shaped parts masked, clipped to ``limit``."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = redact_text(first)
    return first if len(first) <= limit else first[: limit - 1] + "…"


# --- 1. configuration ---------------------------------------------------------------------------


async def check_configuration(context: DoctorContext) -> Outcome:
    """Settings parse; the daemon's required variables are set; the storage key is usable;
    no ``SOULWORKER_*`` variable is unknown (a typo would be silently ignored)."""
    if context.settings is None:
        return fail(
            context.settings_error or "the settings could not be read",
            "fix that variable; `soulworker settings --markdown` lists every setting, its "
            "default and what it accepts",
        )
    settings = context.settings
    problems: list[Outcome] = []
    missing = _missing_variables(settings)
    if missing:
        problems.append(
            fail(
                f"missing {', '.join(missing)}",
                "set them in the service's environment (Render: Environment, as secrets)",
            )
        )
    key_kind = None
    key_hint = (
        "copy the service_role key (legacy) or a secret key (sb_secret_…) from the Supabase "
        "dashboard: Project Settings → API Keys"
    )
    if settings.supabase_url and settings.supabase_service_key:
        try:
            key_kind = _storage_config(settings).key_kind
        except StorageConfigError as exc:
            problems.append(fail(str(exc), key_hint))
        if key_kind == "opaque":
            problems.append(
                warn(
                    "SUPABASE_SERVICE_KEY is neither a JWT (eyJ…) nor a secret key (sb_secret_…)",
                    key_hint,
                )
            )
    unknown = unknown_variables(context.environ)
    if unknown:
        problems.append(
            warn(
                f"unknown variable(s) ignored: {', '.join(unknown)}",
                "check the spelling; `soulworker settings` lists every valid name",
            )
        )
    details: dict[str, Any] = {
        "missing": missing,
        "unknown": unknown,
        "storage_key_kind": key_kind,
        "model_stages": settings.model_stages,
    }
    if problems:
        return _merge(problems, details)
    stages = (
        f"model stages on ({settings.quick_pass_model})"
        if settings.model_stages
        else "model stages off"
    )
    return ok(
        f"required variables set; storage key: {_KEY_KIND_NAMES.get(key_kind or '', 'unknown')}; "
        f"{stages}",
        **details,
    )


_KEY_KIND_NAMES = {
    "jwt": "legacy service_role JWT",
    "secret": "secret key (sb_secret_…)",
    "opaque": "unrecognised format (sent like a JWT)",
}


def _missing_variables(settings: Settings) -> list[str]:
    missing = []
    if not settings.database_url:
        missing.append("DATABASE_URL")
    if not settings.supabase_url:
        missing.append("SUPABASE_URL")
    if not settings.supabase_service_key:
        missing.append("SUPABASE_SERVICE_KEY")
    if settings.model_stages and not settings.anthropic_api_key:
        missing.append("ANTHROPIC_API_KEY (or set SOULWORKER_MODEL_STAGES=off)")
    return missing


def _merge(outcomes: Sequence[Outcome], details: Mapping[str, Any]) -> Outcome:
    """Several findings of one check as one line, the most severe status first."""
    ordered = sorted(outcomes, key=lambda o: -_SEVERITY[o.status])
    hints: list[str] = []
    for outcome in ordered:
        if outcome.hint and outcome.hint not in hints:
            hints.append(outcome.hint)
    return Outcome(
        status=ordered[0].status,
        finding="; ".join(o.finding for o in ordered),
        hint="; ".join(hints) or None,
        details=details,
    )


def _storage_config(settings: Settings) -> StorageConfig:
    """The daemon's Storage configuration; ``StorageConfigError`` when unusable or unset."""
    return StorageConfig(
        base_url=settings.supabase_url or "", service_key=settings.supabase_service_key or ""
    )


# --- 2. database ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseTarget:
    """Where DATABASE_URL points, without the user or password."""

    host: str
    port: str
    dbname: str
    sslmode: str

    @classmethod
    def of(cls, database_url: str, environ: Mapping[str, str]) -> DatabaseTarget:
        params = conninfo_to_dict(database_url)
        return cls(
            host=str(params.get("host") or environ.get("PGHOST") or "localhost"),
            port=str(params.get("port") or environ.get("PGPORT") or "5432"),
            dbname=str(params.get("dbname") or environ.get("PGDATABASE") or "(default)"),
            sslmode=str(params.get("sslmode") or environ.get("PGSSLMODE") or "prefer"),
        )

    def describe(self) -> str:
        return f"{self.host}:{self.port}/{self.dbname}"

    @property
    def is_local(self) -> bool:
        """A Unix socket or a loopback address: no network in between, TLS adds nothing."""
        return all(_is_local_host(host) for host in self.host.split(","))


def _is_local_host(host: str) -> bool:
    host = host.strip()
    if not host or host.startswith("/") or host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _open_connection(settings: Settings) -> psycopg.AsyncConnection[DictRow]:
    """A dedicated autocommit connection with doctor's short connect timeout."""
    kwargs = db.connect_kwargs(settings, APPLICATION_NAME)
    kwargs["connect_timeout"] = DB_CONNECT_TIMEOUT_SECONDS
    return await psycopg.AsyncConnection.connect(
        settings.require_database_url(), autocommit=True, **kwargs
    )


def _database_settings(context: DoctorContext) -> Settings | Outcome:
    if context.settings is None:
        return skip("skipped: the settings could not be read (see configuration)")
    if not context.settings.database_url:
        return skip("skipped: DATABASE_URL is not set (see configuration)")
    return context.settings


async def check_database(context: DoctorContext) -> Outcome:
    """Connect with a short timeout; PostgreSQL 15+; TLS when the host is remote."""
    settings = _database_settings(context)
    if isinstance(settings, Outcome):
        return settings
    target = DatabaseTarget.of(settings.require_database_url(), context.environ)
    try:
        conn = await _open_connection(settings)
    except psycopg.OperationalError as exc:
        reason = connect_failure_reason(exc)
        return fail(
            f"cannot connect to {target.describe()}: {reason}",
            connect_failure_hint(reason, target),
            target=target.describe(),
        )
    try:
        cur = await conn.execute(query("server_version"))
        row = await cur.fetchone()
        ssl_in_use = bool(conn.pgconn.ssl_in_use)
    finally:
        await conn.close()
    assert row is not None
    version_num, version = int(row["num"]), str(row["version"]).split(" ")[0]
    details = {
        "target": target.describe(),
        "server_version": version,
        "server_version_num": version_num,
        "ssl": ssl_in_use,
        "sslmode": target.sslmode,
    }
    where = f"PostgreSQL {version} at {target.describe()}"
    if version_num < MIN_POSTGRES_VERSION_NUM:
        return fail(
            f"{where} is too old",
            "soulworker needs PostgreSQL 15 or newer; upgrade the database",
            **details,
        )
    if not target.is_local and (target.sslmode not in SECURE_SSLMODES or not ssl_in_use):
        encrypted = "encrypted" if ssl_in_use else "NOT encrypted"
        return warn(
            f"{where}; sslmode={target.sslmode} may fall back to plain text (this connection "
            f"is {encrypted})",
            "append ?sslmode=require to DATABASE_URL (or verify-full with Supabase's CA "
            "certificate)",
            **details,
        )
    tls = ", TLS" if ssl_in_use else ""
    return ok(f"{where}{tls}", **details)


def connect_failure_reason(exc: BaseException) -> str:
    """The useful part of a libpq connection error, secrets masked.

    libpq says ``connection failed: connection to server at "h" (1.2.3.4), port 5432 failed:
    Connection refused`` (plus an indented second line); the part after the last ``failed:``
    is the reason. Multi-host URLs repeat it per host; the last one is kept.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = []
    for line in lines:
        if line.startswith(("Is the server", "HINT")):
            continue
        reasons.append(line.rsplit("failed:", 1)[-1].strip() or line)
    reason = reasons[-1] if reasons else type(exc).__name__
    return _safe_text(reason)


def connect_failure_hint(reason: str, target: DatabaseTarget) -> str:
    """What to do about a failed connection, by what libpq said."""
    text = reason.lower()
    direct_supabase = any(
        _SUPABASE_DIRECT_HOST.match(host.strip()) for host in target.host.split(",")
    )
    if "password authentication failed" in text or "authentication failed" in text:
        return (
            "check the user and password in DATABASE_URL (Supabase's pooler user is "
            "postgres.<project ref>)"
        )
    if "tenant or user not found" in text:
        return "Supabase's pooler does not know this user: it must be postgres.<project ref>"
    if "does not exist" in text:
        return "check the database and user names in DATABASE_URL"
    if any(s in text for s in ("too many", "max client connections", "connection slots")):
        return (
            "the database has no free connections: lower SOULWORKER_CONCURRENCY or the number "
            "of instances, or raise the pooler's pool size"
        )
    if direct_supabase:
        return (
            "db.<ref>.supabase.co is IPv6-only unless the IPv4 add-on is enabled, and Render is "
            "IPv4-only: use the session pooler (aws-0-<region>.pooler.supabase.com:5432, user "
            "postgres.<ref>) from the dashboard's Connect button, and check the project ref"
        )
    if "ssl" in text:
        return (
            "the server and DATABASE_URL disagree about TLS: check sslmode (Supabase supports "
            "require)"
        )
    if "refused" in text:
        return (
            f"nothing accepts connections at {target.host}:{target.port}: check the host and "
            "port in DATABASE_URL and that the database is running"
        )
    if any(s in text for s in ("translate host name", "name or service not known", "resolve")):
        return "the host name in DATABASE_URL does not resolve: check its spelling"
    if "timeout" in text or "timed out" in text:
        return (
            f"no answer within {DB_CONNECT_TIMEOUT_SECONDS} s: check the host, the port and any "
            "firewall or IP allow-list (Supabase: Network Restrictions)"
        )
    if "unreachable" in text:
        return (
            "the host is not reachable from this network (an IPv6 address on an IPv4-only "
            "host?); on Render use Supabase's session pooler"
        )
    return "check DATABASE_URL (host, port, user, password, database name)"


# --- 3. pooler mode ------------------------------------------------------------------------------


async def check_pooler(context: DoctorContext) -> Outcome:
    """Whether DATABASE_URL is a transaction-mode pooler, and what that means for the daemon."""
    settings = _database_settings(context)
    if isinstance(settings, Outcome):
        return settings
    mode = db.database_mode(settings)
    target = DatabaseTarget.of(settings.require_database_url(), context.environ)
    details = {
        "transaction_pooler": mode.transaction_pooler,
        "listen": mode.listen,
        "mode": mode.describe(),
    }
    if mode.transaction_pooler:
        why = (
            "SOULWORKER_TRANSACTION_POOLER=true"
            if settings.transaction_pooler == "true"
            else f"port {db.SUPABASE_TRANSACTION_POOLER_PORT}"
        )
        finding = f"transaction-mode pooler ({why}): poll only, prepared statements off"
        hint = (
            "jobs are still found by polling every "
            f"{settings.poll_seconds:g} s; for instant pickup use Supabase's session pooler "
            "(port 5432), where LISTEN works"
        )
        if settings.listen == "on":
            finding += "; SOULWORKER_LISTEN=on cannot work through it"
            hint = "set SOULWORKER_LISTEN=auto; " + hint
        return warn(finding, hint, **details)
    if not mode.listen:
        return ok(
            f"session connection to {target.host}:{target.port}; poll only (SOULWORKER_LISTEN=off)",
            **details,
        )
    return ok(
        f"session connection to {target.host}:{target.port}: LISTEN + poll, prepared statements on",
        **details,
    )


# --- 4. LISTEN/NOTIFY ---------------------------------------------------------------------------


async def check_listen(context: DoctorContext) -> Outcome:
    """LISTEN on a private channel on one connection, NOTIFY from another, wait for it."""
    settings = _database_settings(context)
    if isinstance(settings, Outcome):
        return settings
    mode = db.database_mode(settings)
    if mode.transaction_pooler:
        return warn(
            "skipped: LISTEN does not work through a transaction pooler; the daemon polls "
            f"every {settings.poll_seconds:g} s instead",
            "use Supabase's session pooler (port 5432) so a new job wakes a worker at once",
            listen=False,
        )
    if not mode.listen:
        return skip(
            f"skipped: SOULWORKER_LISTEN=off (the daemon polls every {settings.poll_seconds:g} s)",
            listen=False,
        )
    # A channel of its own: a NOTIFY on the real channel would wake every worker for nothing.
    channel = f"soulworker_doctor_{secrets.token_hex(6)}"
    payload = secrets.token_hex(8)
    listener = await _open_connection(settings)
    try:
        await listener.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
        sender = await _open_connection(settings)
        try:
            started = time.monotonic()
            await sender.execute(query("notify"), {"channel": channel, "payload": payload})
        finally:
            await sender.close()
        async for notify in listener.notifies(timeout=LISTEN_WAIT_SECONDS):
            if notify.channel == channel and notify.payload == payload:
                latency_ms = round((time.monotonic() - started) * 1000, 1)
                return ok(
                    f"a NOTIFY arrived in {latency_ms:g} ms; workers listen on channel {CHANNEL!r}",
                    latency_ms=latency_ms,
                    channel=CHANNEL,
                )
    finally:
        await listener.close()
    return fail(
        f"LISTEN was accepted but no NOTIFY arrived within {LISTEN_WAIT_SECONDS:g} s",
        "this connection does not deliver notifications (a transaction pooler on another "
        "port?): set SOULWORKER_TRANSACTION_POOLER=true or SOULWORKER_LISTEN=off to poll only, "
        "or use Supabase's session pooler (port 5432)",
    )


# --- 5. migrations -------------------------------------------------------------------------------


async def check_migrations(context: DoctorContext) -> Outcome:
    """Every migration file applied; none changed after it was applied; none unknown."""
    settings = _database_settings(context)
    if isinstance(settings, Outcome):
        return settings
    conn = await _open_connection(settings)
    try:
        status = await migration_status(conn)
    finally:
        await conn.close()
    files, pending, changed, unknown = status.files, status.pending, status.changed, status.unknown
    details = {
        "files": len(files),
        "applied": len(files) - len(pending),
        "pending": pending,
        "changed": changed,
        "unknown": unknown,
    }
    if pending:
        what = (
            "the schema is not installed"
            if len(pending) == len(files)
            else f"{len(pending)} of {len(files)} migrations not applied"
        )
        shown = ", ".join(pending[:PENDING_SHOWN])
        if len(pending) > PENDING_SHOWN:
            shown += f" and {len(pending) - PENDING_SHOWN} more"
        return fail(
            f"{what} (pending: {shown})",
            "run `soulworker migrate` (on Render it is the pre-deploy command)",
            **details,
        )
    problems: list[Outcome] = []
    if unknown:
        problems.append(
            warn(
                f"the database has migrations this version does not know: {', '.join(unknown)}",
                "a newer soulworker migrated this database; deploy that version instead of "
                "this one",
            )
        )
    if changed:
        problems.append(
            warn(
                f"changed after they were applied: {', '.join(changed)}",
                "applied migrations are never re-run: put schema changes in a new file",
            )
        )
    if problems:
        return _merge(problems, details)
    latest = files[-1][0] if files else "none"
    return ok(f"all {len(files)} migrations applied (latest {latest})", **details)


# --- 5b. exposure through Supabase's API -------------------------------------------------------


async def check_exposure(context: DoctorContext) -> Outcome:
    """On Supabase: the tables with users' data have row level security on, give ``anon``
    nothing and ``authenticated`` nothing that row level security cannot restrict; no
    soulworker function is callable by either. Each finding comes with the SQL that fixes it."""
    settings = _database_settings(context)
    if isinstance(settings, Outcome):
        return settings
    conn = await _open_connection(settings)
    try:
        report = await inspect_exposure(conn)
    finally:
        await conn.close()
    if not report.supabase:
        return ok(
            "no Supabase auth schema: no API roles can reach this database's tables",
            supabase=False,
        )
    if not report.roles_present:
        return warn(
            "the auth schema exists but the anon or authenticated role does not",
            "nothing to fix for soulworker; this is not how a Supabase project looks",
            supabase=True,
        )
    problems = report.problems()
    fixes = fix_statements(report)
    details = {
        "supabase": True,
        "tables": {
            table.name: {
                "row_security": table.row_security,
                "anon": list(table.anon_privileges),
                "authenticated": list(table.authenticated_privileges),
                "open_policies": list(table.open_policies),
            }
            for table in report.tables
        },
        "callable_functions": [f.signature for f in report.functions],
        "problems": problems,
        "fix_sql": fixes,
    }
    if problems:
        return warn(
            "; ".join(problems),
            f"run in the Supabase SQL editor: {' '.join(fixes)} (why: {EXPOSURE_DOC})",
            **details,
        )
    checked = ", ".join(table.name for table in report.tables) or "none of " + ", ".join(
        USER_DATA_TABLES
    )
    return ok(
        f"row level security on and nothing for anon: {checked}; soulworker's functions are not "
        "callable through the API",
        **details,
    )


# --- 6. storage ----------------------------------------------------------------------------------


async def check_storage(context: DoctorContext) -> Outcome:
    """An authenticated ``GET /storage/v1/bucket/{id}`` per allowed bucket: proves the key
    works for this project and that each bucket exists (and is private)."""
    settings = context.settings
    if settings is None:
        return skip("skipped: the settings could not be read (see configuration)")
    if not settings.supabase_url or not settings.supabase_service_key:
        return skip("skipped: SUPABASE_URL or SUPABASE_SERVICE_KEY is not set (see configuration)")
    try:
        config = _storage_config(settings)
    except StorageConfigError:
        return skip("skipped: SUPABASE_URL or SUPABASE_SERVICE_KEY is invalid (see configuration)")
    host = urlsplit(config.base_url).netloc
    key_name = _KEY_KIND_NAMES[config.key_kind]
    timeout = httpx.Timeout(HTTP_READ_TIMEOUT_SECONDS, connect=HTTP_CONNECT_TIMEOUT_SECONDS)
    found: list[str] = []
    public: list[str] = []
    missing: list[str] = []
    # Redirects are never followed: the client would carry the key's headers to wherever
    # they point.
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        for bucket in settings.storage_buckets:
            url = f"{config.base_url}/storage/v1/bucket/{quote(bucket, safe='')}"
            try:
                status, body = await _get_small(client, url, config.auth_headers())
            except httpx.TimeoutException:
                return fail(
                    f"Supabase Storage at {host} did not answer in time (connect "
                    f"{HTTP_CONNECT_TIMEOUT_SECONDS:g} s, read {HTTP_READ_TIMEOUT_SECONDS:g} s)",
                    "check SUPABASE_URL and that this machine can reach it (outbound HTTPS)",
                    host=host,
                )
            except httpx.HTTPError as exc:
                return fail(
                    f"cannot reach Supabase Storage at {host} ({_http_error_name(exc)})",
                    "check SUPABASE_URL (https://<project ref>.supabase.co) and outbound network "
                    "access",
                    host=host,
                )
            verdict = classify_bucket_response(status, body)
            if verdict == "found":
                found.append(bucket)
                if _is_public_bucket(body):
                    public.append(bucket)
            elif verdict == "missing":
                missing.append(bucket)
            elif verdict == "key_refused":
                return fail(
                    f"Supabase Storage at {host} refused SUPABASE_SERVICE_KEY ({key_name})",
                    "use the service_role key (legacy) or a secret key (sb_secret_…) of the same "
                    "project as SUPABASE_URL",
                    host=host,
                    http_status=status,
                )
            else:
                return fail(
                    f"unexpected answer from {host}: {_describe_storage_answer(status, body)}",
                    _storage_answer_hint(status),
                    host=host,
                    http_status=status,
                )
    details = {
        "host": host,
        "key_kind": config.key_kind,
        "found": found,
        "missing": missing,
        "public": public,
    }
    if missing:
        verb = "does" if len(missing) == 1 else "do"
        return fail(
            f"key accepted, but {_buckets(missing)} {verb} not exist",
            "create it as a private bucket in Supabase Storage, or fix SOULWORKER_STORAGE_BUCKETS",
            **details,
        )
    if public:
        verb = "is" if len(public) == 1 else "are"
        return warn(
            f"key accepted; {_buckets(public)} {verb} public: anyone with a link can download "
            "exports",
            "make the bucket private in Supabase Storage (the worker reads it with its key)",
            **details,
        )
    verb = "exists and is" if len(found) == 1 else "exist and are"
    return ok(f"key accepted ({key_name}); {_buckets(found)} {verb} private", **details)


def _buckets(names: Sequence[str]) -> str:
    """``bucket 'a'`` or ``buckets 'a', 'b'``."""
    noun = "bucket" if len(names) == 1 else "buckets"
    return f"{noun} {', '.join(repr(name) for name in names)}"


async def _get_small(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str]
) -> tuple[int, bytes]:
    # auth_headers() carries soulworker's User-Agent: a browser-like one gets sb_secret_ keys
    # refused.
    async with client.stream("GET", url, headers=headers) as response:
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk[: ERROR_BODY_MAX_BYTES - len(body)]
            if len(body) >= ERROR_BODY_MAX_BYTES:
                break
        return response.status_code, bytes(body)


def _http_error_name(exc: httpx.HTTPError) -> str:
    return {
        "ConnectError": "connection failed",
        "RemoteProtocolError": "the connection dropped",
        "ReadError": "the connection dropped",
    }.get(type(exc).__name__, type(exc).__name__)


def _storage_error_body(body: bytes) -> tuple[int | None, set[str], str]:
    """``(statusCode, {code, error}, message)`` of a Storage or gateway error body."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, set(), ""
    if not isinstance(parsed, dict):
        return None, set(), ""
    raw = parsed.get("statusCode")
    storage_status = int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None
    codes = {str(v) for v in (parsed.get("code"), parsed.get("error")) if isinstance(v, str)}
    message = parsed.get("message")
    return storage_status, codes, message if isinstance(message, str) else ""


def classify_bucket_response(status: int, body: bytes) -> str:
    """``found``, ``missing``, ``key_refused`` or ``other`` for a bucket endpoint answer.

    Supabase Storage answers errors with HTTP 400 and the real status as a string in the body
    (``{"statusCode": "404", "code": "NoSuchBucket", "error": "Bucket not found"}``); a wrong
    JWT is 400 ``InvalidJWT`` (or ``"403"``/``Unauthorized`` in older versions); the API gateway
    answers a wrong key with a plain 401 ``{"message": "Invalid API key"}``.
    """
    if status == 200:
        return "found"
    storage_status, codes, message = _storage_error_body(body)
    if "NoSuchBucket" in codes or "Bucket not found" in codes:
        return "missing"
    if (
        status in (401, 403)
        or storage_status in (401, 403)
        or codes & STORAGE_AUTH_CODES
        or "invalid api key" in message.lower()
    ):
        return "key_refused"
    if status == 400 and storage_status == 404:
        return "missing"
    return "other"


def _is_public_bucket(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(parsed, dict) and parsed.get("public") is True


def _describe_storage_answer(status: int, body: bytes) -> str:
    storage_status, codes, _ = _storage_error_body(body)
    shown = f"HTTP {status}"
    if storage_status is not None and storage_status != status:
        shown += f" (status {storage_status} in the body)"
    safe_codes = sorted(c for c in codes if re.fullmatch(r"[A-Za-z0-9_. -]{1,40}", c))
    if safe_codes:
        shown += f", {'/'.join(safe_codes)}"
    return shown


def _storage_answer_hint(status: int) -> str:
    if 300 <= status < 400:
        return "SUPABASE_URL redirects: use the project's final https URL (no path)"
    if status == 429 or status >= 500:
        return "Storage is unavailable right now; try again in a minute (status.supabase.com)"
    if status == 404:
        return (
            "there is no Storage API at SUPABASE_URL: it must be the project URL, "
            "https://<project ref>.supabase.co, without a path"
        )
    return "check SUPABASE_URL and SUPABASE_SERVICE_KEY"


# --- 7. model key --------------------------------------------------------------------------------


async def check_model(context: DoctorContext) -> Outcome:
    """One free ``count_tokens`` call per configured model: proves the key and the model ids
    without generating anything."""
    settings = context.settings
    if settings is None:
        return skip("skipped: the settings could not be read (see configuration)")
    if not settings.model_stages:
        return skip("skipped: SOULWORKER_MODEL_STAGES=off (no model calls are made)")
    if not settings.anthropic_api_key:
        return skip("skipped: ANTHROPIC_API_KEY is not set (see configuration)")
    # The SDK takes a second to import: only this check pays for it, never other commands.
    from soulworker.llm.client import ModelClient, ModelClientConfig
    from soulworker.llm.errors import ModelError
    from soulworker.llm.retry import RetryPolicy

    host = DEFAULT_MODEL_API_HOST
    if settings.anthropic_base_url:
        host = urlsplit(settings.anthropic_base_url).netloc
    config = ModelClientConfig(
        api_key=settings.anthropic_api_key,
        base_url=settings.anthropic_base_url,
        request_timeout_seconds=HTTP_READ_TIMEOUT_SECONDS,
        connect_timeout_seconds=HTTP_CONNECT_TIMEOUT_SECONDS,
        max_concurrent_calls=1,
        # One request: doctor reports what the API says now instead of waiting out backoff.
        retry=RetryPolicy(max_attempts=1),
    )
    models = _models_to_check(settings)
    counted: dict[str, int] = {}
    async with ModelClient(config) as client:
        for model, variable in models.items():
            try:
                counted[model] = await client.count_tokens(
                    model=model, system=PROBE_MODEL_SYSTEM, content=PROBE_MODEL_TEXT
                )
            except ModelError as exc:
                return model_failure(exc, model=model, variable=variable, host=host)
    names = ", ".join(models)
    return ok(f"key accepted by {host}; model {names} known", host=host, input_tokens=counted)


def _models_to_check(settings: Settings) -> dict[str, str]:
    """Each distinct model id with the variable that sets it."""
    models = {settings.quick_pass_model: "SOULWORKER_QUICK_PASS_MODEL"}
    models.setdefault(settings.full_pass_model, "SOULWORKER_FULL_PASS_MODEL")
    return models


def model_failure(exc: ModelError, *, model: str, variable: str, host: str) -> Outcome:
    """The outcome for a failed probe, by what the API said (the key is never echoed)."""
    from soulworker.llm.errors import (
        ModelAuthFailed,
        ModelRequestRejected,
        ModelSpendLimit,
        ModelUnavailable,
    )

    details = {"host": host, "model": model, "status_code": exc.status_code, "code": exc.code}
    if isinstance(exc, ModelAuthFailed) and exc.code == "model_permission_denied":
        return fail(
            f"the key may not use model {model!r} (HTTP 403)",
            "check the key's workspace and its model access in the Anthropic console",
            **details,
        )
    if isinstance(exc, ModelAuthFailed):
        return fail(
            f"{host} refused ANTHROPIC_API_KEY (HTTP {exc.status_code})",
            "create or copy a key in the Anthropic console (API keys) and set ANTHROPIC_API_KEY",
            **details,
        )
    if isinstance(exc, ModelRequestRejected) and exc.code == "model_not_found":
        return fail(
            f"{host} does not know model {model!r}",
            f"set {variable} to a current model id (default: claude-haiku-5-5)",
            **details,
        )
    if isinstance(exc, ModelSpendLimit):
        return fail(
            "the model API account has reached its spend limit or is out of credit",
            "raise the limit or add credit in the Anthropic console",
            **details,
        )
    if isinstance(exc, ModelUnavailable) and exc.code in ("model_connection", "model_timeout"):
        return fail(
            f"cannot reach the model API at {host}",
            "check outbound network access and ANTHROPIC_BASE_URL (unset means api.anthropic.com)",
            **details,
        )
    if isinstance(exc, ModelUnavailable) and exc.status_code == 429:
        return warn(
            f"{host} accepted the key but is rate-limiting it right now (HTTP 429)",
            "nothing to fix if this passes; the daemon waits and retries",
            **details,
        )
    if isinstance(exc, ModelUnavailable):
        shown = f" (HTTP {exc.status_code})" if exc.status_code else ""
        return fail(
            f"the model API at {host} is unavailable right now{shown}",
            "try again in a minute (status.anthropic.com)",
            **details,
        )
    shown = f" (HTTP {exc.status_code})" if exc.status_code else ""
    return fail(
        f"{host} rejected the token-count request for {model!r}{shown}",
        f"check {variable} and ANTHROPIC_BASE_URL",
        **details,
    )


# --- 8. fast JSON parser -------------------------------------------------------------------------


async def check_ijson(context: DoctorContext) -> Outcome:
    """ijson's C backend (yajl2_c) is usable: the export reader's own check, so the two can
    never disagree."""
    problem = fast_json_backend_problem()
    backend = str(getattr(ijson, "backend_name", "unknown"))
    if problem is None:
        return ok(f"ijson uses the {FAST_JSON_BACKEND} C backend", backend=backend)
    return fail(
        f"ijson's {FAST_JSON_BACKEND} backend is missing; parsing would be about 10× slower",
        "reinstall ijson from a binary wheel (pip install --force-reinstall --only-binary=ijson "
        "ijson) or install libyajl2",
        backend=backend,
    )


# --- 9. temp space -------------------------------------------------------------------------------


async def check_temp_space(context: DoctorContext) -> Outcome:
    """The private temp root can be created and used, and has room for the exports."""
    concurrency = context.settings.concurrency if context.settings else 2
    warn_below = max(TEMP_FAIL_BELOW_BYTES, concurrency * LARGE_EXPORT_BYTES)
    try:
        root = WorkspaceRoot.ensure(context.temp_base)
        workspace = root.create_workspace()
        try:
            with workspace.job_file("doctor", ".probe") as probe:
                probe.write_bytes(b"soulworker doctor\n")
        finally:
            workspace.close()
    except WorkspaceError as exc:
        return fail(str(exc), "fix the temp directory as said, or set TMPDIR to a private one")
    except OSError as exc:
        return fail(
            f"cannot write to the temp directory: {exc.strerror or type(exc).__name__}",
            "set TMPDIR to a writable local directory",
        )
    free = shutil.disk_usage(root.path).free
    details = {
        "path": str(root.path),
        "free_bytes": free,
        "warn_below_bytes": warn_below,
        "fail_below_bytes": TEMP_FAIL_BELOW_BYTES,
    }
    where = f"{root.path}: {_gib(free)} free"
    if free < TEMP_FAIL_BELOW_BYTES:
        return fail(
            f"{where}, under the {_gib(TEMP_FAIL_BELOW_BYTES)} minimum",
            "free disk space or set TMPDIR to a larger disk: each running job downloads its "
            "export there",
            **details,
        )
    if free < warn_below:
        return warn(
            f"{where}: {concurrency} large exports ({_gib(LARGE_EXPORT_BYTES)} each) would not fit",
            "free disk space, use a larger disk (TMPDIR), or lower SOULWORKER_CONCURRENCY",
            **details,
        )
    return ok(where, **details)


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


# --- the list ------------------------------------------------------------------------------------

CHECKS: tuple[Check, ...] = (
    Check("configuration", check_configuration),
    Check("database", check_database),
    Check("pooler", check_pooler),
    Check("listen", check_listen, needs=("database",)),
    Check("migrations", check_migrations, needs=("database",)),
    Check("exposure", check_exposure, needs=("database",)),
    Check("storage", check_storage),
    Check("model", check_model),
    Check("ijson", check_ijson),
    Check("temp_space", check_temp_space),
)
"""Every check, in the order they are reported."""

CHECK_NAMES: tuple[str, ...] = tuple(check.name for check in CHECKS)


# --- output --------------------------------------------------------------------------------------

STATUS_LABELS = {Status.OK: "OK", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.SKIP: "SKIP"}
"""Words rather than symbols: readable in any terminal encoding and easy to grep."""


def render_text(report: DoctorReport) -> str:
    """The report as a readable list: one line per check, a ``fix:`` line under each problem,
    and a summary line."""
    width = max((len(r.name) for r in report.results), default=0)
    lines = []
    for result in report.results:
        label = STATUS_LABELS[result.status].ljust(4)
        lines.append(f"{label}  {result.name.ljust(width)}  {result.finding}")
        if result.hint and result.status is not Status.OK:
            lines.append(f"{' ' * 4}  {' ' * width}  fix: {result.hint}")
    counts = report.counts()
    summary = (
        f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failed, "
        f"{counts['skip']} skipped"
    )
    verdict = "healthy" if report.healthy else "NOT healthy: fix the FAIL lines above"
    lines.append("")
    lines.append(f"{summary}: {verdict}")
    return "\n".join(lines)


def render_json(report: DoctorReport) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False)
