"""A followed download handed over to its helper process: the same file, result, reports and
errors as in-process, against a real HTTP server that behaves like Supabase Storage, and a
helper that never outlives the download it was started for."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import structlog
import tenacity

from soulworker.errors import TransientJobError
from soulworker.storage.download import (
    DownloadResult,
    RetryPolicy,
    StorageConfig,
    download_export,
)
from soulworker.storage.download_process import DownloadHelperFailed, download_following
from soulworker.storage.errors import (
    ExportNotFound,
    ExportTooLarge,
    StorageAuthFailed,
    StorageError,
    StorageUnavailable,
)
from soulworker.storage.path import StoragePath, parse_storage_path
from soulworker.testing.storage_server import (
    FAKE_SECRET_KEY,
    FAKE_SERVICE_JWT,
    NO_SUCH_KEY,
    DropConnection,
    Respond,
    SlowBody,
    StorageServer,
)

USER = uuid.UUID("6a0c5e7d-3b2f-4c1a-9e8d-7f6a5b4c3d2e")
OBJECT = f"{USER}/1700000000000-conversations.json"
EXPORT_BYTES = 5 * 1024 * 1024 + 4321  # several 1 MiB write batches plus a partial one
FAST = RetryPolicy(wait=tenacity.wait_none(), max_attempts_without_progress=3)
HELPER_MODULE = b"soulworker.storage.download_process"


class Recorder:
    """A ``DownloadObserver`` and progress callback that records what it is told, in order.
    On a restart it also records how large the file still is: the helper must wait for the
    parent's readers before it truncates."""

    def __init__(self, destination: Path) -> None:
        self.destination = destination
        self.events: list[tuple[Any, ...]] = []
        self.size_at_restart: list[int] = []
        self.helpers_seen: set[int] = set()

    def total_known(self, total: int | None) -> None:
        self.events.append(("total", total))

    def written(self, size: int) -> None:
        self.events.append(("written", size))

    def restarted(self) -> None:
        self.size_at_restart.append(self.destination.stat().st_size)
        self.events.append(("restarted",))

    async def progress(self, done: int, total: int | None) -> None:
        self.helpers_seen |= set(helper_pids())
        self.events.append(("progress", done, total))


def helper_pids(parent: int | None = None) -> list[int]:
    """The download helpers of ``parent`` (this process by default): its children whose
    command line names the helper's module."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and HELPER_MODULE in cmdline:
            pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def export_file(tmp_path: Path) -> Path:
    path = tmp_path / "export.json"
    path.write_bytes(os.urandom(EXPORT_BYTES))
    return path


@pytest.fixture
def server(export_file: Path) -> Iterator[StorageServer]:
    with StorageServer(service_key=FAKE_SERVICE_JWT) as running:
        running.put_file("imports", OBJECT, export_file)
        yield running


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    folder = tmp_path / "download"
    folder.mkdir(mode=0o700)
    return folder / "job.export"


def _path() -> StoragePath:
    return parse_storage_path(f"imports/{OBJECT}", user_id=USER)


def _config(server: StorageServer, key: str = FAKE_SERVICE_JWT) -> StorageConfig:
    return StorageConfig(base_url=server.url, service_key=key, timeout=httpx2.Timeout(5.0))


SERVE_AS_USUAL = SlowBody(piece_bytes=1 << 40, delay_seconds=0)
"""A fault that changes nothing: queued first, it lets the next fault reach the helper's
request (the first request is the in-process part's)."""


async def _following(
    server: StorageServer,
    destination: Path,
    recorder: Recorder,
    *,
    key: str = FAKE_SERVICE_JWT,
    retry: RetryPolicy = FAST,
    max_bytes: int = 1 << 30,
    path: StoragePath | None = None,
    process_min_bytes: int = 0,
    pause_for_helper: bool = True,
    progress: Any = None,
) -> DownloadResult:
    return await download_following(
        _config(server, key),
        path or _path(),
        destination,
        observer=recorder,
        progress=progress or recorder.progress,
        max_bytes=max_bytes,
        retry=retry,
        process_min_bytes=process_min_bytes,
        pause_for_helper=pause_for_helper,
    )


async def _in_process(
    server: StorageServer, destination: Path, recorder: Recorder, **arguments: Any
) -> DownloadResult:
    return await download_export(
        _config(server, arguments.get("key", FAKE_SERVICE_JWT)),
        arguments.get("path", _path()),
        destination,
        observer=recorder,
        progress=recorder.progress,
        retry=FAST,
        max_bytes=arguments.get("max_bytes", 1 << 30),
    )


def _written(recorder: Recorder) -> list[int]:
    return [event[1] for event in recorder.events if event[0] == "written"]


async def test_a_handed_over_download_gives_the_in_process_file_and_result(
    server: StorageServer, export_file: Path, destination: Path, tmp_path: Path
) -> None:
    inline = Recorder(tmp_path / "inline.export")
    expected = await _in_process(server, inline.destination, inline)

    recorder = Recorder(destination)
    result = await _following(server, destination, recorder)

    assert destination.read_bytes() == export_file.read_bytes()
    # One request more, the helper's, resuming where the in-process part stopped.
    assert result == dataclasses.replace(expected, attempts=2, resumes=1, seconds=result.seconds)
    assert len(recorder.helpers_seen) == 1
    assert not inline.helpers_seen
    [range_request] = [r for r in server.requests if r.range is not None]
    assert range_request.if_range == server.etag("imports", OBJECT)
    # What a parse following the file is told: the size once, then only ever more bytes.
    assert recorder.events.count(("total", EXPORT_BYTES)) == 1
    written = _written(recorder)
    assert written == sorted(set(written))
    assert written[-1] == EXPORT_BYTES
    assert recorder.events[-1] == ("progress", EXPORT_BYTES, EXPORT_BYTES)
    assert oct(destination.stat().st_mode & 0o777) == oct(0o600)
    assert helper_pids() == []  # reaped


async def test_a_small_export_never_starts_a_helper(
    server: StorageServer, export_file: Path, destination: Path, tmp_path: Path
) -> None:
    inline = Recorder(tmp_path / "inline.export")
    expected = await _in_process(server, inline.destination, inline)
    recorder = Recorder(destination)

    result = await _following(
        server, destination, recorder, process_min_bytes=EXPORT_BYTES + 1, pause_for_helper=False
    )

    assert destination.read_bytes() == export_file.read_bytes()
    assert result == dataclasses.replace(expected, seconds=result.seconds)
    assert recorder.events == inline.events
    assert not recorder.helpers_seen


@pytest.mark.parametrize(
    "helper_python",
    [
        pytest.param("/nonexistent/python3", id="cannot-start"),
        pytest.param("/bin/true", id="never-ready"),
    ],
)
async def test_a_helper_that_cannot_start_leaves_the_download_in_process(
    server: StorageServer,
    export_file: Path,
    destination: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    helper_python: str,
) -> None:
    inline = Recorder(tmp_path / "inline.export")
    expected = await _in_process(server, inline.destination, inline)
    # The helper is started as ``sys.executable -m …``: a Python that is gone (a deploy that
    # replaced the image under a running daemon) or a program that exits without a word.
    monkeypatch.setattr(sys, "executable", helper_python)
    recorder = Recorder(destination)

    with structlog.testing.capture_logs() as logs:
        result = await _following(server, destination, recorder)

    assert destination.read_bytes() == export_file.read_bytes()
    assert result == dataclasses.replace(expected, seconds=result.seconds)
    assert recorder.events == inline.events
    assert not recorder.helpers_seen
    assert [e["event"] for e in logs if e["event"].startswith("download_helper")] == [
        "download_helper_unavailable"
    ]


async def test_a_helper_still_starting_when_the_download_ends_is_reaped(
    server: StorageServer, export_file: Path, destination: Path
) -> None:
    recorder = Recorder(destination)
    result = await _following(server, destination, recorder, pause_for_helper=False)
    assert destination.read_bytes() == export_file.read_bytes()
    if result.resumes == 0:  # finished in-process, the usual outcome on loopback
        assert result.attempts == 1
    assert helper_pids() == []


async def test_a_dropped_connection_resumes_in_the_helper(
    server: StorageServer, export_file: Path, destination: Path
) -> None:
    server.add_fault(SERVE_AS_USUAL)
    server.add_fault(DropConnection(after_bytes=1024 * 1024 + 17))
    result = await _following(server, destination, Recorder(destination))
    assert destination.read_bytes() == export_file.read_bytes()
    assert (result.attempts, result.resumes, result.restarts) == (3, 2, 0)


async def test_a_changed_object_is_announced_before_the_helper_truncates_the_file(
    server: StorageServer, destination: Path, tmp_path: Path
) -> None:
    new = tmp_path / "new.json"
    new.write_bytes(os.urandom(EXPORT_BYTES // 2))
    server.add_fault(SERVE_AS_USUAL)
    server.add_fault(DropConnection(after_bytes=1024 * 1024 + 5, replace_with=new))
    recorder = Recorder(destination)

    result = await _following(server, destination, recorder)

    assert destination.read_bytes() == new.read_bytes()
    assert result.restarts == 1
    # The readers learned of the restart while the old bytes were all still there.
    restart = recorder.events.index(("restarted",))
    before = _written(Recorder(destination)) or [
        e[1] for e in recorder.events[:restart] if e[0] == "written"
    ]
    assert recorder.size_at_restart == [before[-1]]
    assert before[-1] > 1024 * 1024
    assert [e for e in recorder.events[restart:] if e[0] == "written"][-1] == (
        "written",
        EXPORT_BYTES // 2,
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Respond(400, NO_SUCH_KEY), ExportNotFound),
        (
            Respond(400, {"statusCode": "403", "error": "Unauthorized", "message": "no"}),
            StorageAuthFailed,
        ),
    ],
)
async def test_the_helper_s_permanent_failures_are_the_same_errors_with_the_same_details(
    server: StorageServer,
    destination: Path,
    tmp_path: Path,
    answer: Respond,
    expected: type[StorageError],
) -> None:
    server.add_fault(answer)
    with pytest.raises(StorageError) as inline:
        await _in_process(server, tmp_path / "inline.export", Recorder(tmp_path / "x"))
    server.add_fault(SERVE_AS_USUAL)
    server.add_fault(answer)
    recorder = Recorder(destination)
    with pytest.raises(StorageError) as helped:
        await _following(server, destination, recorder)

    assert recorder.helpers_seen  # the error came from the helper
    assert type(helped.value) is type(inline.value) is expected
    assert str(helped.value) == str(inline.value)
    assert helped.value.code == inline.value.code
    assert (helped.value.http_status, helped.value.storage_status, helped.value.storage_code) == (
        inline.value.http_status,
        inline.value.storage_status,
        inline.value.storage_code,
    )
    assert FAKE_SERVICE_JWT not in str(helped.value)
    assert helper_pids() == []


async def test_an_export_growing_past_the_limit_in_the_helper_is_too_large(
    server: StorageServer, destination: Path, tmp_path: Path
) -> None:
    bigger = tmp_path / "bigger.json"
    bigger.write_bytes(os.urandom(EXPORT_BYTES * 2))
    server.add_fault(SERVE_AS_USUAL)
    server.add_fault(DropConnection(after_bytes=1024, replace_with=bigger))
    with pytest.raises(ExportTooLarge) as caught:
        await _following(server, destination, Recorder(destination), max_bytes=EXPORT_BYTES)
    assert caught.value.code == "export_too_large"


async def test_retries_running_out_in_the_helper_are_storage_unavailable(
    server: StorageServer, destination: Path
) -> None:
    server.add_fault(SERVE_AS_USUAL)
    server.add_fault(Respond.server_error(503), times=10)
    with pytest.raises(StorageUnavailable) as caught:
        await _following(server, destination, Recorder(destination))
    assert type(caught.value) is StorageUnavailable
    # One in-process request, then the helper's three without progress.
    assert (caught.value.reason, caught.value.attempts) == ("http_503", 4)
    assert caught.value.code == "storage_unavailable"


async def test_a_cancel_kills_the_helper_before_it_returns(
    server: StorageServer, destination: Path
) -> None:
    server.throttle(1024 * 1024)
    recorder = Recorder(destination)
    task = asyncio.create_task(_following(server, destination, recorder))
    deadline = time.monotonic() + 30
    while len(server.requests) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    [helper] = helper_pids()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert not alive(helper)
    size = destination.stat().st_size
    await asyncio.sleep(1.2)
    assert destination.stat().st_size == size  # nothing writes to the file any more


async def test_a_progress_callback_that_raises_stops_the_helper_and_its_error_goes_on(
    server: StorageServer, destination: Path
) -> None:
    class LeaseLost(Exception):
        pass

    server.throttle(4 * 1024 * 1024)
    recorder = Recorder(destination)
    handed_over_at: list[int] = []

    async def progress(done: int, total: int | None) -> None:
        await recorder.progress(done, total)
        if len(server.requests) >= 2:
            handed_over_at.append(done)
            if len(handed_over_at) > 1:
                raise LeaseLost()

    with pytest.raises(LeaseLost):
        await _following(server, destination, recorder, progress=progress)
    [helper] = recorder.helpers_seen
    assert not alive(helper)


async def test_a_helper_killed_from_outside_is_a_transient_failure(
    server: StorageServer, destination: Path
) -> None:
    server.throttle(2 * 1024 * 1024)
    recorder = Recorder(destination)

    async def progress(done: int, total: int | None) -> None:
        await recorder.progress(done, total)
        if len(server.requests) >= 2:
            for pid in helper_pids():
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(DownloadHelperFailed) as caught:
        await _following(server, destination, recorder, progress=progress)
    assert caught.value.code == "download_helper_failed"
    assert isinstance(caught.value, TransientJobError)  # the job is retried
    assert caught.value.reason == "helper_exit_-9"


async def test_the_key_never_appears_on_the_helper_s_command_line(
    destination: Path, export_file: Path
) -> None:
    with StorageServer(service_key=FAKE_SECRET_KEY) as server:
        server.put_file("imports", OBJECT, export_file)
        recorder = Recorder(destination)
        cmdlines: list[bytes] = []

        async def progress(done: int, total: int | None) -> None:
            await recorder.progress(done, total)
            cmdlines.extend(Path(f"/proc/{pid}/cmdline").read_bytes() for pid in helper_pids())

        result = await _following(
            server, destination, recorder, key=FAKE_SECRET_KEY, progress=progress
        )
    assert result.resumes == 1
    assert cmdlines
    assert all(FAKE_SECRET_KEY.encode() not in line for line in cmdlines)


async def test_a_policy_that_cannot_cross_a_process_stays_in_process(
    server: StorageServer, export_file: Path, destination: Path
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    server.add_fault(Respond.server_error(503))
    recorder = Recorder(destination)
    result = await _following(
        server, destination, recorder, retry=dataclasses.replace(FAST, sleep=sleep)
    )
    assert destination.read_bytes() == export_file.read_bytes()
    assert (result.attempts, result.resumes) == (2, 0)
    assert waits == [0.0]  # our sleep ran: the download stayed in this process
    assert not recorder.helpers_seen


async def test_the_helper_s_log_events_are_logged_by_the_parent(
    server: StorageServer, destination: Path
) -> None:
    server.add_fault(SERVE_AS_USUAL)
    server.add_fault(Respond.server_error(503))
    with structlog.testing.capture_logs() as logs:
        await _following(server, destination, Recorder(destination))
    [retry] = [entry for entry in logs if entry["event"] == "storage_download_retry"]
    assert retry["log_level"] == "warning"
    assert retry["reason"] == "http_503"
    assert retry["bytes_done"] > 0  # the helper's: it went on from the handed-over bytes
    assert retry["storage_path"] == f"imports/{OBJECT}"


def test_a_helper_whose_daemon_died_stops_at_its_next_report(
    server: StorageServer, destination: Path, tmp_path: Path
) -> None:
    server.throttle(1024 * 1024)
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio
            from pathlib import Path
            import tenacity
            from soulworker.storage.download import RetryPolicy, StorageConfig
            from soulworker.storage.download_process import download_following
            from soulworker.storage.path import StoragePath

            class Observer:
                def total_known(self, total): pass
                def written(self, size): pass
                def restarted(self): pass

            handed_over = []

            async def progress(done, total):
                handed_over.append(done)
                if len(handed_over) == 3:  # the helper's first report after its own
                    print("downloading", flush=True)

            asyncio.run(download_following(
                StorageConfig(base_url={server.url!r}, service_key={FAKE_SERVICE_JWT!r}),
                StoragePath("imports", {OBJECT!r}),
                Path({str(destination)!r}),
                observer=Observer(),
                progress=progress,
                max_bytes=1 << 30,
                retry=RetryPolicy(wait=tenacity.wait_none()),
                process_min_bytes=0,
                pause_for_helper=True,
            ))
            """
        )
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert parent.stdout is not None
        while (line := parent.stdout.readline()) != b"downloading\n":  # past its log lines
            assert line, "the parent ended before the download began"
        [helper] = helper_pids(parent.pid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while alive(helper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(helper)
        assert destination.stat().st_size < EXPORT_BYTES  # it stopped, it did not finish
    finally:
        parent.kill()
        parent.wait()
