"""Private temp files for jobs, and removal of what dead workers left behind
(docs/hostile-uploads.md).

Layout, under ``TMPDIR`` (``tempfile.gettempdir()``)::

    soulworker-<uid>/               0700, owned by this uid; refused if a symlink, someone
                                    else's, or writable by group/others
        w-<pid>-<random>.lock       0600, flock(LOCK_EX) held by a live worker process
        w-<pid>-<random>/           0700, that process's workspace
            job-<job id>-<random>.zip   0600, one export being imported

Several worker processes (and, on a shared disk, several instances) use the same root. A
workspace belongs to whoever holds its lock file's ``flock``; the kernel drops the lock when
the process dies, however it dies (SIGKILL included). So at start-up a process removes every
workspace whose lock it *can* take (its owner is dead) and never one whose lock is held.

Creation order makes this race-free: the lock file is created, locked and checked to still
be on disk *before* the workspace directory exists, and a cleaner unlinks a lock file only
after removing the directory while holding that lock. Hence a workspace directory without a
lock file is always an abandoned one. ``flock`` locks are per open file description, so a
process never "takes" its own lock by opening the file again; they work on local
filesystems (Render's ephemeral disk), not reliably on NFS.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

ROOT_PREFIX = "soulworker-"
"""The root is ``$TMPDIR/soulworker-<uid>``: one per user, so users never share a directory."""

DIR_MODE = 0o700
"""Directories: only the worker's user may list or enter them."""

FILE_MODE = 0o600
"""Files: exports are personal data; only the worker's user may read them."""

LOCK_SUFFIX = ".lock"
"""A workspace ``w-…`` is owned by whoever holds the flock on ``w-….lock`` beside it."""

CREATE_ATTEMPTS = 20
"""Tries to create a workspace whose lock a concurrent cleaner removed underneath us (each
retry uses a new random name; more than a couple means something else is wrong)."""

_WORKSPACE_RE = re.compile(r"w-[0-9]+-[0-9a-f]{16}")
_JOB_ID_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
_SUFFIX_RE = re.compile(r"(\.[A-Za-z0-9_-]{1,15})?")


class WorkspaceError(RuntimeError):
    """The temp root is unsafe or unusable; raised at start-up with what an operator must do."""


@dataclass(frozen=True)
class CleanupReport:
    """What a stale-workspace cleanup removed (abandoned workspaces, their files and bytes)."""

    workspaces_removed: int = 0
    files_removed: int = 0
    bytes_removed: int = 0

    def __add__(self, other: CleanupReport) -> CleanupReport:
        return CleanupReport(
            self.workspaces_removed + other.workspaces_removed,
            self.files_removed + other.files_removed,
            self.bytes_removed + other.bytes_removed,
        )


class WorkspaceRoot:
    """``$TMPDIR/soulworker-<uid>``: verified private, shared by this user's worker processes."""

    def __init__(self, path: Path) -> None:
        """Wrap an already verified root; use ``ensure`` or ``open`` instead."""
        self.path = path

    @classmethod
    def ensure(cls, base: Path | None = None) -> WorkspaceRoot:
        """Create the root under ``base`` (default ``tempfile.gettempdir()``) or verify it.

        Raises ``WorkspaceError`` if the root is a symlink or not a directory, belongs to
        another user, or is writable by group or others (then its contents cannot be
        trusted); a root that is merely readable by others is tightened to 0700.
        """
        parent = Path(base) if base is not None else Path(tempfile.gettempdir())
        path = parent / f"{ROOT_PREFIX}{os.getuid()}"
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise WorkspaceError(
                f"The temp directory {path} is not a plain directory (a symlink or a file?); "
                "remove it or point TMPDIR elsewhere."
            ) from exc
        try:
            info = os.fstat(fd)
            if info.st_uid != os.getuid():
                raise WorkspaceError(
                    f"The temp directory {path} belongs to another user; remove it or point "
                    "TMPDIR elsewhere."
                )
            if info.st_mode & 0o022:
                raise WorkspaceError(
                    f"The temp directory {path} is writable by other users, so its contents "
                    "cannot be trusted; remove it or point TMPDIR elsewhere."
                )
            if stat.S_IMODE(info.st_mode) != DIR_MODE:
                os.fchmod(fd, DIR_MODE)
        finally:
            os.close(fd)
        return cls(path)

    @classmethod
    def open(cls, base: Path | None = None) -> ProcessWorkspace:
        """Ensure the root, create and lock this process's workspace, then remove the
        workspaces of dead processes. The report is on ``ProcessWorkspace.cleanup``."""
        root = cls.ensure(base)
        workspace = root.create_workspace()
        workspace.cleanup = root.clean_stale()
        return workspace

    def create_workspace(self) -> ProcessWorkspace:
        """A new locked workspace for this process (see the module docstring for the order)."""
        for _ in range(CREATE_ATTEMPTS):
            name = f"w-{os.getpid()}-{secrets.token_hex(8)}"
            lock_path = self.path / f"{name}{LOCK_SUFFIX}"
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(lock_path, flags, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # A cleaner may have locked and unlinked the new file before our flock.
                if os.stat(lock_path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                    raise FileNotFoundError(lock_path)
            except (BlockingIOError, FileNotFoundError):
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            os.write(fd, f"pid {os.getpid()}\n".encode())
            workspace_path = self.path / name
            os.mkdir(workspace_path, DIR_MODE)
            os.chmod(workspace_path, DIR_MODE)  # exact mode whatever the umask
            return ProcessWorkspace(self, workspace_path, lock_path, fd)
        raise WorkspaceError(f"Could not create a workspace in {self.path}; check the disk.")

    def clean_stale(self) -> CleanupReport:
        """Remove every workspace whose owner is dead; never one whose lock is held."""
        names: set[str] = set()
        for entry in os.scandir(self.path):
            name = entry.name.removesuffix(LOCK_SUFFIX)
            if _WORKSPACE_RE.fullmatch(name):
                names.add(name)
        report = CleanupReport()
        for name in sorted(names):
            report += self._remove_if_abandoned(name)
        return report

    def _remove_if_abandoned(self, name: str) -> CleanupReport:
        lock_path = self.path / f"{name}{LOCK_SUFFIX}"
        try:
            fd: int | None = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None  # no lock file: abandoned by construction (locks are made first)
        except OSError:
            return CleanupReport()  # not a lock file we made (a symlink?): leave it alone
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return CleanupReport()  # a live process holds it
            report = _remove_tree(self.path / name)
            if fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock_path)
            return report
        finally:
            if fd is not None:
                os.close(fd)


class ProcessWorkspace:
    """This process's private directory; its lock is held until ``close`` or process exit.

    ``cleanup`` reports what ``WorkspaceRoot.open`` removed of dead workers' leftovers.
    """

    def __init__(self, root: WorkspaceRoot, path: Path, lock_path: Path, lock_fd: int) -> None:
        self.root = root
        self.path = path
        self.cleanup = CleanupReport()
        self._lock_path = lock_path
        self._lock_fd: int | None = lock_fd

    @property
    def closed(self) -> bool:
        return self._lock_fd is None

    @contextlib.contextmanager
    def job_file(self, job_id: object, suffix: str = "") -> Iterator[Path]:
        """A new empty file, mode 0600, named after ``job_id``; removed when the block exits,
        whether normally, by an exception or by cancellation.

        ``job_id`` (a uuid) must print as ``[A-Za-z0-9-]{1,64}``; ``suffix`` is empty or
        like ``.zip``. Two calls never return the same path.
        """
        path = self.path / f"job-{_job_name(job_id)}-{secrets.token_hex(4)}{_suffix(suffix)}"
        self._check_open()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # exact mode whatever the umask
        finally:
            os.close(fd)
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @contextlib.contextmanager
    def job_dir(self, job_id: object) -> Iterator[Path]:
        """A new empty directory, mode 0700, for a job that needs several files; removed
        with its contents when the block exits."""
        self._check_open()
        path = self.path / f"job-{_job_name(job_id)}-{secrets.token_hex(4)}.d"
        os.mkdir(path, DIR_MODE)
        os.chmod(path, DIR_MODE)
        try:
            yield path
        finally:
            _remove_tree(path)

    def close(self) -> None:
        """Remove the workspace and its lock file, then release the lock. Idempotent."""
        if self._lock_fd is None:
            return
        _remove_tree(self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._lock_path)
        os.close(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> ProcessWorkspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("the workspace is closed")


async def remove_file(path: Path) -> None:
    """Remove ``path`` (if it is still there) in a worker thread: unlinking a file of several
    GB frees its extents synchronously, which took 0.2-0.35 s of the event loop under the
    write-back of a large download. ``job_file``'s own removal then finds nothing to do."""
    await asyncio.to_thread(_unlink_if_present, path)


def _unlink_if_present(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _job_name(job_id: object) -> str:
    text = str(job_id)
    if not _JOB_ID_RE.fullmatch(text):
        raise ValueError("job_id must print as 1-64 letters, digits or '-'")
    return text


def _suffix(suffix: str) -> str:
    if not _SUFFIX_RE.fullmatch(suffix):
        raise ValueError("suffix must be empty or like '.zip'")
    return suffix


def _remove_tree(path: Path) -> CleanupReport:
    """Remove ``path`` and everything below it (symlinks are removed, never followed) and
    report what went; a path that is already gone reports nothing."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return CleanupReport()
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        # os.walk lists symlinks to directories among dirnames; they are entries too.
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in filenames + links:
            with contextlib.suppress(FileNotFoundError):
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
    shutil.rmtree(path, onerror=_ignore_missing)
    return CleanupReport(1, files, size)


def _ignore_missing(
    function: object, path: str, exc_info: tuple[type[BaseException], BaseException, object]
) -> None:
    """``shutil.rmtree`` error hook: another cleaner removing the same tree is fine."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]
