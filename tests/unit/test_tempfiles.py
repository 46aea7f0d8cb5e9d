"""Private temp workspaces: modes, removal after a job, and stale cleanup across real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from soulworker.tempfiles import (
    ROOT_PREFIX,
    ProcessWorkspace,
    WorkspaceError,
    WorkspaceRoot,
)

REPO = Path(__file__).resolve().parents[2]

# A worker process: opens a workspace, writes a 1000-byte job file, reports, then waits.
CHILD = """
import json, sys
from pathlib import Path
from soulworker.tempfiles import WorkspaceRoot
ws = WorkspaceRoot.open(Path(sys.argv[1]))
job = ws.job_file("2f1c0a9e-0000-4000-8000-000000000001", ".zip")
path = job.__enter__()
path.write_bytes(b"x" * 1000)
print(json.dumps({"workspace": str(ws.path), "file": str(path),
                  "removed": ws.cleanup.workspaces_removed}), flush=True)
sys.stdin.readline()
job.__exit__(None, None, None)
ws.close()
"""

# Several of these run at once: each keeps checking that cleanups never take its workspace.
STRESS = """
import sys
from pathlib import Path
from soulworker.tempfiles import WorkspaceRoot
for i in range(25):
    ws = WorkspaceRoot.open(Path(sys.argv[1]))
    with ws.job_file(str(i), ".json") as path:
        path.write_bytes(b"{}")
        ws.root.clean_stale()
        assert ws.path.is_dir() and path.exists(), "a live workspace was removed"
    ws.close()
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _spawn(script: str, base: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", script, str(base)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[ProcessWorkspace]:
    with WorkspaceRoot.open(tmp_path) as ws:
        yield ws


def test_live_workspace_survives_cleanup_and_a_killed_ones_is_removed(tmp_path: Path) -> None:
    child = _spawn(CHILD, tmp_path)
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        child_dir, child_file = Path(info["workspace"]), Path(info["file"])

        with WorkspaceRoot.open(tmp_path) as mine:
            assert mine.cleanup.workspaces_removed == 0
            assert child_file.read_bytes() == b"x" * 1000  # the live worker's file survived

            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            report = mine.root.clean_stale()

            assert report.workspaces_removed == 1
            assert report.files_removed == 1
            assert report.bytes_removed == 1000
            assert not child_dir.exists()
            assert not child_dir.with_name(child_dir.name + ".lock").exists()
            assert mine.path.is_dir()  # never our own
            assert mine.root.clean_stale().workspaces_removed == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_cleanly_exiting_worker_leaves_nothing_behind(tmp_path: Path) -> None:
    child = _spawn(CHILD, tmp_path)
    assert child.stdout is not None and child.stdin is not None
    json.loads(child.stdout.readline())
    child.stdin.write("\n")
    child.stdin.flush()
    assert child.wait(timeout=10) == 0
    assert os.listdir(tmp_path / f"{ROOT_PREFIX}{os.getuid()}") == []


def test_concurrent_workers_never_remove_each_others_live_workspaces(tmp_path: Path) -> None:
    children = [_spawn(STRESS, tmp_path) for _ in range(4)]
    codes = [child.wait(timeout=60) for child in children]
    assert codes == [0, 0, 0, 0]


def test_modes_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with WorkspaceRoot.open(tmp_path) as ws, ws.job_file(uuid.uuid4(), ".zip") as path:
            assert _mode(ws.root.path) == 0o700
            assert _mode(ws.path) == 0o700
            assert _mode(path) == 0o600
            assert path.stat().st_size == 0
            assert path.suffix == ".zip"
            lock = ws.path.with_name(ws.path.name + ".lock")
            assert _mode(lock) == 0o600
    finally:
        os.umask(old)


def test_job_file_is_removed_on_exception(workspace: ProcessWorkspace) -> None:
    def use_file() -> Path:
        with workspace.job_file("job-1") as path:
            path.write_bytes(b"personal data")
            raise RuntimeError(str(path))

    with pytest.raises(RuntimeError) as caught:
        use_file()
    assert not Path(str(caught.value)).exists()


async def test_job_file_is_removed_on_cancellation(workspace: ProcessWorkspace) -> None:
    created: asyncio.Future[Path] = asyncio.get_running_loop().create_future()

    async def job() -> None:
        with workspace.job_file("job-2", ".zip") as path:
            created.set_result(path)
            await asyncio.sleep(60)

    task = asyncio.create_task(job())
    path = await created
    assert path.exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not path.exists()


def test_job_files_are_distinct_and_names_are_checked(workspace: ProcessWorkspace) -> None:
    with workspace.job_file("same") as first, workspace.job_file("same") as second:
        assert first != second
    for bad_id in ("../x", "a/b", "", "x" * 65):
        with pytest.raises(ValueError, match="job_id"), workspace.job_file(bad_id):
            pass
    for bad_suffix in ("zip", "./x", ".a/b", ".toolongsuffix12345"):
        with pytest.raises(ValueError, match="suffix"), workspace.job_file("j", bad_suffix):
            pass


def test_job_dir_is_private_and_removed_with_its_contents(workspace: ProcessWorkspace) -> None:
    with workspace.job_dir("job-3") as directory:
        assert _mode(directory) == 0o700
        (directory / "part").write_bytes(b"1")
    assert not directory.exists()


def test_close_removes_the_workspace_and_refuses_new_files(tmp_path: Path) -> None:
    ws = WorkspaceRoot.open(tmp_path)
    with ws.job_file("j") as leftover:
        pass
    (ws.path / "stray").write_bytes(b"left by a crash mid-job")
    ws.close()
    ws.close()  # idempotent
    assert ws.closed
    assert not ws.path.exists()
    assert not leftover.exists()
    with pytest.raises(RuntimeError, match="closed"), ws.job_file("j"):
        pass


def test_abandoned_entries_are_removed_and_foreign_ones_left_alone(tmp_path: Path) -> None:
    root = WorkspaceRoot.ensure(tmp_path)
    orphan_dir = root.path / "w-123-0123456789abcdef"  # no lock file: its owner is gone
    orphan_dir.mkdir()
    (orphan_dir / "job.zip").write_bytes(b"12345")
    orphan_lock = root.path / "w-456-fedcba9876543210.lock"  # died before making its dir
    orphan_lock.write_bytes(b"pid 456\n")
    foreign_file = root.path / "notes.txt"
    foreign_file.write_bytes(b"not ours")
    foreign_dir = root.path / "w-not-a-workspace"
    foreign_dir.mkdir()

    report = root.clean_stale()

    assert (report.workspaces_removed, report.files_removed, report.bytes_removed) == (1, 1, 5)
    assert not orphan_dir.exists()
    assert not orphan_lock.exists()
    assert foreign_file.exists()
    assert foreign_dir.exists()


def test_refuses_a_symlinked_root(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / f"{ROOT_PREFIX}{os.getuid()}").symlink_to(elsewhere)
    with pytest.raises(WorkspaceError, match="not a plain directory"):
        WorkspaceRoot.open(tmp_path)


def test_refuses_a_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / f"{ROOT_PREFIX}{os.getuid()}").write_bytes(b"")
    with pytest.raises(WorkspaceError, match="not a plain directory"):
        WorkspaceRoot.ensure(tmp_path)


def test_refuses_a_root_writable_by_others(tmp_path: Path) -> None:
    root = tmp_path / f"{ROOT_PREFIX}{os.getuid()}"
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(WorkspaceError, match="writable by other users"):
        WorkspaceRoot.ensure(tmp_path)


def test_tightens_a_root_that_is_only_readable_by_others(tmp_path: Path) -> None:
    root = tmp_path / f"{ROOT_PREFIX}{os.getuid()}"
    root.mkdir()
    root.chmod(0o755)
    assert WorkspaceRoot.ensure(tmp_path).path == root
    assert _mode(root) == 0o700


@pytest.mark.skipif(os.getuid() != 0, reason="only root can make a directory owned by another")
def test_refuses_a_root_owned_by_someone_else(tmp_path: Path) -> None:
    root = tmp_path / f"{ROOT_PREFIX}{os.getuid()}"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(WorkspaceError, match="belongs to another user"):
        WorkspaceRoot.ensure(tmp_path)


def test_default_base_is_the_system_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # forget the cached gettempdir()
    with WorkspaceRoot.open() as ws:
        assert ws.root.path == tmp_path / f"{ROOT_PREFIX}{os.getuid()}"
