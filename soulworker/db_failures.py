"""Why a connection to Postgres failed, in words an operator can act on.

libpq explains a failed connection in one sentence buried in a longer text (``connection failed:
connection to server at "h" (1.2.3.4), port 5432 failed: Connection refused``, plus an indented
"Is the server running…" line). :func:`describe_connection_failure` keeps the useful part (secrets
masked) and says what to do about it, knowing how Supabase's ways in fail (docs/platform.md):
the direct host is IPv6-only, the pooler wants the user ``postgres.<project ref>``. ``soulworker
doctor`` and every other command describe a failed connection with it, so a change in how
libpq or Supabase phrase one is made here once.

:class:`DatabaseTarget` is where ``DATABASE_URL`` points, without the user or password: what a
finding may name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from soulworker.db import CONNECT_TIMEOUT_SECONDS
from soulworker.logs import redacted_line

_SUPABASE_DIRECT_HOST = re.compile(r"^db\.[a-z0-9]+\.supabase\.co$")
"""Supabase's direct database host, ``db.<project ref>.supabase.co``."""


@dataclass(frozen=True)
class DatabaseTarget:
    """Where DATABASE_URL points, without the user or password."""

    host: str
    port: str
    dbname: str
    sslmode: str

    @classmethod
    def of(cls, database_url: str, environ: Mapping[str, str]) -> DatabaseTarget:
        """The target of ``database_url``, with libpq's ``PG*`` variables in ``environ`` (and
        libpq's defaults) filling what the URL leaves out."""
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

    @property
    def is_supabase_direct_host(self) -> bool:
        """Any of the hosts is Supabase's direct host (IPv6-only without the IPv4 add-on)."""
        return any(_SUPABASE_DIRECT_HOST.match(host.strip()) for host in self.host.split(","))


@dataclass(frozen=True)
class ConnectionFailure:
    """A failed connection: libpq's ``reason`` (first useful line, secrets masked) and a
    ``hint`` saying what to do."""

    reason: str
    hint: str


def is_connection_failure(exc: BaseException) -> bool:
    """True for a connection that could not be made or was lost: libpq's own errors carry no
    SQLSTATE, while a server's answer to a statement (a timeout, a cancel) does."""
    return isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None


def describe_connection_failure(
    exc: BaseException,
    target: DatabaseTarget,
    *,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
) -> ConnectionFailure:
    """What went wrong connecting to ``target`` and what to do (``connect_timeout``: the time
    limit the connection had, named in the hint for a timeout)."""
    reason = connect_failure_reason(exc)
    return ConnectionFailure(
        reason, connect_failure_hint(reason, target, connect_timeout=connect_timeout)
    )


def connect_failure_reason(exc: BaseException) -> str:
    """The useful part of a libpq connection error, secrets masked.

    The part after the last ``failed:`` is the reason. Multi-host URLs repeat it per host; the
    last one is kept.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = []
    for line in lines:
        if line.startswith(("Is the server", "HINT")):
            continue
        reasons.append(line.rsplit("failed:", 1)[-1].strip() or line)
    reason = reasons[-1] if reasons else type(exc).__name__
    return redacted_line(reason)


def connect_failure_hint(
    reason: str, target: DatabaseTarget, *, connect_timeout: float = CONNECT_TIMEOUT_SECONDS
) -> str:
    """What to do about a failed connection, by what libpq said."""
    text = reason.lower()
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
    if target.is_supabase_direct_host:
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
            f"no answer within {connect_timeout:g} s: check the host, the port and any "
            "firewall or IP allow-list (Supabase: Network Restrictions)"
        )
    if "unreachable" in text:
        return (
            "the host is not reachable from this network (an IPv6 address on an IPv4-only "
            "host?); on Render use Supabase's session pooler"
        )
    return "check DATABASE_URL (host, port, user, password, database name)"


def _is_local_host(host: str) -> bool:
    host = host.strip()
    if not host or host.startswith("/") or host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
