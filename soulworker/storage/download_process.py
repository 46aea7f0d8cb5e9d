"""The download in a process of its own, for a parse that follows it (docs/pipeline.md,
"Parsing while the export downloads").

Why a process: receiving an HTTP body in Python costs CPU on the event loop (the socket reads,
httpcore and h11 for every ~64 KB, the batching into 1 MiB writes): ~0.3 s per 100 MB at
60 MB/s, measured. While the parse follows the download, that time is taken from the parse
thread, because both need the GIL; on a 1 GB export the parse then finishes seconds after the
last byte instead of right behind it (BENCHMARKS.md, "A soulprint sooner"). In a helper process
the same ``download_export`` runs on the machine's other core and the daemon only relays what it
reports.

The download begins in the daemon at once (``download_following``); when the response declares
an export of ``SOULWORKER_DOWNLOAD_PROCESS_MIN_BYTES`` or more, a helper is started meanwhile and,
once it is ready, the daemon's part stops at its next 1 MiB batch (``HandOver``: what was received
is written out first) and the helper goes on from that offset with ``Range`` / ``If-Range``, as a
resume. So the helper's start-up (~0.3 s of imports) costs no time, and small exports, which the
tests are full of, never pay for a process.

The helper is ``python -m soulworker.storage.download_process``. Protocol, one JSON object per
line:

* parent → helper (stdin): the job first (``_HelperJob``: where Storage is, the service key, the
  validated path, the destination, the limits, the retry policy's numbers and the
  ``ResumePoint`` to go on from), then one ``ack`` line for each ``restart`` the helper announced;
* helper → parent (stdout): ``ready`` first (imported, waiting for its job), then ``total``
  (the declared size), ``written`` (bytes durable in the file), ``progress``
  (``download_export``'s own callback), ``restart`` (the file is *about* to be truncated: the
  helper waits for the ``ack`` before it truncates, so every reader has seen the new generation
  first, exactly as in-process), ``log`` (an event of the download's logger,
  logged again by the parent with the job's context), and last ``result`` or ``error`` (the job
  error's kind, message and attributes, rebuilt as the same exception by the parent).

The key goes over stdin, never on the command line (visible to every user of the machine). The
helper runs in its own session (a Ctrl-C meant for the daemon must not kill it under a job the
daemon is about to release cleanly); if the daemon dies, the helper's next line (every MiB) meets
a broken pipe and it exits. When the caller stops (a cancel, a lost lease, a progress callback
that raises), the helper is killed and reaped before the exception goes on, so nothing writes to
the file once this returns. If the helper cannot be started, the download stays in-process as
it would without a parse beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import httpx2
import structlog
import tenacity
from structlog.typing import EventDict

from soulworker.errors import TransientJobError
from soulworker.storage.download import (
    DEFAULT_WAIT,
    DISK_RESERVE_BYTES,
    DownloadObserver,
    DownloadResult,
    HandOver,
    ProgressCallback,
    ResumePoint,
    RetryPolicy,
    StorageConfig,
    download_export,
)
from soulworker.storage.errors import (
    ExportNotFound,
    ExportTooLarge,
    StorageAuthFailed,
    StorageBucketNotFound,
    StorageError,
    StorageUnavailable,
    WorkerDiskFull,
    WorkerDiskTooSmall,
)
from soulworker.storage.path import StoragePath

log = structlog.get_logger("soulworker.storage")

DOWNLOAD_PROCESS_MIN_BYTES = 64 * 1024**2
"""From this declared size on, a followed download moves to a helper process. The helper's
start (a Python with the HTTP library: 0.2–0.5 s on 2 cores) is hidden, the download going on
in-process meanwhile, but it costs a process, ~30 MB of memory and one more request, for a
saving of ~3 ms of GIL per MB: worth it only where the parse is long enough to feel it."""

HELPER_READY_SECONDS = 30.0
"""How long a starting helper may take to say it is ready before the download stays in this
process; its imports take well under a second."""

READY_LINE = b'{"ready": true}\n'

LINE_LIMIT_BYTES = 64 * 1024
"""The longest line the parent reads from the helper: its lines are short (a log event is the
longest); a longer one means the helper is broken."""

_JOB_ERRORS: dict[str, type[StorageError]] = {
    kind.__name__: kind
    for kind in (
        StorageError,
        ExportNotFound,
        StorageBucketNotFound,
        StorageAuthFailed,
        ExportTooLarge,
    )
}
"""The permanent failures the helper may report, by class name."""

_LOG_LEVELS = frozenset({"debug", "info", "warning", "error"})


class DownloadHelperFailed(TransientJobError):
    """The helper stopped without a result (killed, out of memory, a bug): transient, the next
    attempt downloads again. ``reason`` says how, for logs (``helper_exit_-9``)."""

    default_code = "download_helper_failed"

    def __init__(self, reason: str) -> None:
        super().__init__("The download stopped unexpectedly.")
        self.reason = reason


@dataclass(frozen=True)
class _HelperJob:
    """Everything the helper needs, as one JSON line on its stdin."""

    base_url: str
    service_key: str
    bucket: str
    object_name: str
    destination: str
    max_bytes: int
    disk_reserve_bytes: int
    max_attempts_without_progress: int
    max_seconds_without_progress: float
    max_attempts: int
    retry_after_cap_seconds: float
    wait: str  # "default" or "none"
    resume: dict[str, Any] | None = None  # the ``ResumePoint`` it goes on from

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> _HelperJob:
        return cls(**json.loads(line))

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts_without_progress=self.max_attempts_without_progress,
            max_seconds_without_progress=self.max_seconds_without_progress,
            max_attempts=self.max_attempts,
            wait=tenacity.wait_none() if self.wait == "none" else DEFAULT_WAIT,
            retry_after_cap_seconds=self.retry_after_cap_seconds,
        )

    def resume_point(self) -> ResumePoint | None:
        return None if self.resume is None else ResumePoint(**self.resume)


def helper_job(
    config: StorageConfig,
    path: StoragePath,
    destination: Path,
    *,
    max_bytes: int,
    retry: RetryPolicy,
    disk_reserve_bytes: int,
) -> _HelperJob | None:
    """The job line for ``download_export``'s arguments, or ``None`` for a retry policy that
    cannot cross a process (its own sleep, or waits other than the production ones and
    ``wait_none``): such a download runs in-process."""
    if retry.sleep is not asyncio.sleep:
        return None
    if retry.wait is DEFAULT_WAIT:
        wait = "default"
    elif isinstance(retry.wait, tenacity.wait_none):
        wait = "none"
    else:
        return None
    return _HelperJob(
        base_url=config.base_url,
        service_key=config.service_key,
        bucket=path.bucket,
        object_name=path.object_name,
        destination=os.fspath(destination),
        max_bytes=max_bytes,
        disk_reserve_bytes=disk_reserve_bytes,
        max_attempts_without_progress=retry.max_attempts_without_progress,
        max_seconds_without_progress=retry.max_seconds_without_progress,
        max_attempts=retry.max_attempts,
        retry_after_cap_seconds=retry.retry_after_cap_seconds,
        wait=wait,
    )


async def download_following(
    config: StorageConfig,
    path: StoragePath,
    destination: Path,
    *,
    observer: DownloadObserver,
    progress: ProgressCallback | None = None,
    max_bytes: int,
    retry: RetryPolicy,
    client: httpx2.AsyncClient | None = None,
    disk_reserve_bytes: int = DISK_RESERVE_BYTES,
    process_min_bytes: int = DOWNLOAD_PROCESS_MIN_BYTES,
    pause_for_helper: bool = False,
) -> DownloadResult:
    """``download_export`` for a download a parse follows: same arguments, result (one more
    request when handed over) and errors; the observer and ``progress`` are told what they are
    told in-process (the size once, bytes only ever growing, a restart before the truncation),
    the helper's part reporting its offset once more as its response begins.

    It begins in this process at once. When a response declares ``process_min_bytes`` or more,
    a helper is started meanwhile; once it is ready, the download hands over at its next 1 MiB
    batch (``HandOver``: every byte received is written first) and the helper goes on from
    there with one more request (``Range`` / ``If-Range``, counted as a resume). A download
    that ends first, a helper that cannot start, or a retry policy that cannot cross a process
    (``helper_job``) stay in this process to the end. ``pause_for_helper`` waits for the
    helper at the first report with bytes in the file instead of downloading meanwhile, which
    makes the hand-over certain (tests)."""
    started = time.monotonic()
    job = helper_job(
        config,
        path,
        destination,
        max_bytes=max_bytes,
        retry=retry,
        disk_reserve_bytes=disk_reserve_bytes,
    )
    handover = _HandOverWhenReady(
        progress, None if job is None else process_min_bytes, pause=pause_for_helper
    )
    try:
        try:
            return await download_export(
                config,
                path,
                destination,
                max_bytes=max_bytes,
                progress=handover.progress,
                client=client,
                retry=retry,
                disk_reserve_bytes=disk_reserve_bytes,
                observer=observer,
            )
        except HandOver as stopped:
            assert job is not None
            point = stopped.resume
            assert point is not None  # set by download_export on its way out
            process = handover.take()
            log.info("storage_download_handed_over", offset=point.offset)
            job = replace(job, resume=asdict(point))
            try:
                result = await _follow(process, job, observer, progress)
            finally:
                # Whatever ended the wait (a result, an error, a cancel), the helper is gone
                # before the caller may remove the file.
                await _reap(process)
            return replace(result, seconds=time.monotonic() - started)
    finally:
        await handover.close()


class _HandOverWhenReady:
    """The progress callback of the download's in-process part: passes every report on, starts
    the helper once a response declares a large export, and raises ``HandOver`` at the first
    report after the helper is ready. ``min_bytes`` ``None``: never hands over."""

    def __init__(
        self, progress: ProgressCallback | None, min_bytes: int | None, *, pause: bool
    ) -> None:
        self._progress = progress
        self._min_bytes = min_bytes
        self._pause = pause
        self._starting: asyncio.Task[asyncio.subprocess.Process | None] | None = None
        self._taken = False

    async def progress(self, done: int, total: int | None) -> None:
        if self._progress is not None:
            await self._progress(done, total)
        if self._min_bytes is None or total is None:
            return
        if self._starting is None:
            if total >= self._min_bytes and done < total:
                self._starting = asyncio.create_task(_start_helper(), name="download-helper")
            return
        if self._pause and 0 < done < total:
            await asyncio.shield(self._starting)
        if done < total and self._ready() is not None:
            raise HandOver()

    def _ready(self) -> asyncio.subprocess.Process | None:
        """The helper, once it has started and said it is ready; ``None`` until then, or
        when it failed to start (the download then stays in this process)."""
        starting = self._starting
        if (
            starting is None
            or not starting.done()
            or starting.cancelled()
            or starting.exception() is not None
        ):
            return None
        return starting.result()

    def take(self) -> asyncio.subprocess.Process:
        """The ready helper, now the caller's to reap."""
        process = self._ready()
        assert process is not None
        self._taken = True
        return process

    async def close(self) -> None:
        """A helper started but not taken (the download ended first, failed or was cancelled)
        is killed and reaped."""
        if self._starting is None or self._taken:
            return
        starting = self._starting
        cancelled = await _wait_out(starting)
        process = self._ready()
        if process is not None:
            await _reap(process)
        if cancelled:
            raise asyncio.CancelledError


async def _start_helper() -> asyncio.subprocess.Process | None:
    """A helper that has said it is ready (its imports done), or ``None`` when it could not
    be started: the download then stays in this process."""
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "soulworker.storage.download_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            limit=LINE_LIMIT_BYTES,
        )
    except OSError as exc:
        log.warning("download_helper_unavailable", error=type(exc).__name__)
        return None
    assert process.stdout is not None
    try:
        ready = await asyncio.wait_for(process.stdout.readline(), HELPER_READY_SECONDS)
    except (TimeoutError, ValueError):
        ready = b""
    except BaseException:
        await _reap(process)
        raise
    if ready != READY_LINE:
        log.warning("download_helper_unavailable", error="not_ready")
        await _reap(process)
        return None
    return process


async def _follow(
    process: asyncio.subprocess.Process,
    job: _HelperJob,
    observer: DownloadObserver,
    progress: ProgressCallback | None,
) -> DownloadResult:
    assert process.stdin is not None
    assert process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    stdin.write(job.encode())
    await stdin.drain()
    while True:
        try:
            line = await stdout.readline()
        except ValueError:  # a line over the limit: not our helper's
            raise DownloadHelperFailed("helper_protocol") from None
        if not line:
            code = await process.wait()
            log.warning("download_helper_stopped", exit_code=code)
            raise DownloadHelperFailed(f"helper_exit_{code}")
        kind, value = _decoded(line)
        if kind == "written":
            observer.written(value)
        elif kind == "total":
            observer.total_known(value)
        elif kind == "progress":
            if progress is not None:
                await progress(*value)
        elif kind == "restart":
            observer.restarted()
            stdin.write(b'{"ack": true}\n')
            await stdin.drain()
        elif kind == "log":
            _relay_log(value)
        elif kind == "result":
            assert isinstance(value, DownloadResult)
            return value
        else:
            raise _rebuilt_error(value)


def _decoded(line: bytes) -> tuple[str, Any]:
    """One line from the helper as ``(kind, value)``, checked before anything acts on it; a
    line that is not one of ours is ``DownloadHelperFailed``."""
    try:
        message = json.loads(line)
        [(kind, value)] = message.items()
        if kind == "written":
            return kind, _count(value)
        if kind == "total":
            return kind, None if value is None else _count(value)
        if kind == "progress":
            done, total = value
            return kind, (_count(done), None if total is None else _count(total))
        if kind in ("log", "error") and isinstance(value, dict):
            return kind, value
        if kind == "result":
            return kind, DownloadResult(**value)
        if kind == "restart":
            return kind, None
    except (ValueError, TypeError, AttributeError):
        pass
    raise DownloadHelperFailed("helper_protocol")


def _count(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("not a byte count")
    return value


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Kills the helper if it still runs and waits until it is gone, even through a cancel
    (the cancel is raised again once it is): nothing may write to the file afterwards."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    if await _wait_out(asyncio.ensure_future(process.wait())):
        raise asyncio.CancelledError


async def _wait_out(future: asyncio.Future[Any]) -> bool:
    """Waits until ``future`` is done, even through cancels of the waiting task (a helper
    must never be left running unseen); returns whether a cancel arrived meanwhile, for the
    caller to raise once it has cleaned up."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:  # noqa: S110 - its outcome is the caller's to read
            pass
    return cancelled


def _relay_log(event: dict[str, Any]) -> None:
    level = event.pop("level", "info")
    name = event.pop("event", "storage_download_event")
    if level not in _LOG_LEVELS or not isinstance(name, str):
        return
    getattr(log, level)(name, **event)


def _rebuilt_error(error: dict[str, Any]) -> Exception:
    kind, message = error.get("kind"), str(error.get("message", ""))
    attrs = error.get("attrs", {})
    if kind in _JOB_ERRORS:
        return _JOB_ERRORS[kind](
            message,
            http_status=attrs.get("http_status"),
            storage_status=attrs.get("storage_status"),
            storage_code=attrs.get("storage_code"),
        )
    if kind == "StorageUnavailable":
        return StorageUnavailable(
            message, reason=str(attrs.get("reason")), attempts=int(attrs.get("attempts", 0))
        )
    if kind == "WorkerDiskFull":
        return WorkerDiskFull(message)
    if kind == "WorkerDiskTooSmall":
        return WorkerDiskTooSmall(message)
    log.warning("download_helper_failed", error=str(kind))
    return DownloadHelperFailed(f"helper_{kind}")


# -- the helper's side ----------------------------------------------------------------------


class _Reporter:
    """The helper's observer, progress callback and log sink: lines to the parent.

    ``restarted`` blocks until the parent's ack: ``_FileSink.reset`` truncates the file right
    after it returns, and the parent's readers must have seen the new generation first. The
    helper's loop has nothing else to run meanwhile (the download is what waits)."""

    def __init__(self, out: BinaryIO, acks: BinaryIO) -> None:
        self._out = out
        self._acks = acks

    def send(self, message: dict[str, Any]) -> None:
        self._out.write(json.dumps(message).encode() + b"\n")
        self._out.flush()

    def total_known(self, total: int | None) -> None:
        self.send({"total": total})

    def written(self, size: int) -> None:
        self.send({"written": size})

    def restarted(self) -> None:
        self.send({"restart": True})
        if not self._acks.readline():
            raise BrokenPipeError("the parent went away")

    async def progress(self, done: int, total: int | None) -> None:
        self.send({"progress": [done, total]})

    def log_event(self, _: object, __: str, event: EventDict) -> EventDict:
        """The last structlog processor: the event goes to the parent, not to a stream here."""
        self.send({"log": {key: _plain(value) for key, value in event.items()}})
        raise structlog.DropEvent


def _plain(value: object) -> object:
    return value if isinstance(value, int | float | str | bool | None) else str(value)


async def run_helper(job: _HelperJob, reporter: _Reporter) -> None:
    """Runs the download and reports how it ended (``result`` or ``error``)."""
    config = StorageConfig(base_url=job.base_url, service_key=job.service_key)
    path = StoragePath(job.bucket, job.object_name)
    try:
        result = await download_export(
            config,
            path,
            Path(job.destination),
            max_bytes=job.max_bytes,
            progress=reporter.progress,
            retry=job.policy(),
            disk_reserve_bytes=job.disk_reserve_bytes,
            observer=reporter,
            resume_from=job.resume_point(),
        )
    except (StorageError, StorageUnavailable, WorkerDiskFull, WorkerDiskTooSmall) as exc:
        attrs = {name: getattr(exc, name) for name in _ERROR_ATTRIBUTES if hasattr(exc, name)}
        reporter.send({"error": {"kind": type(exc).__name__, "message": str(exc), "attrs": attrs}})
        return
    reporter.send({"result": asdict(result)})


_ERROR_ATTRIBUTES = ("http_status", "storage_status", "storage_code", "reason", "attempts")


def main() -> None:  # pragma: no cover - exercised through a real subprocess in the tests
    """Entry point of the helper (``python -m soulworker.storage.download_process``)."""
    sys.stdout.buffer.write(READY_LINE)  # imported: it can take over at once
    sys.stdout.buffer.flush()
    job = _HelperJob.decode(sys.stdin.buffer.readline())
    reporter = _Reporter(sys.stdout.buffer, sys.stdin.buffer)
    structlog.configure(
        processors=[structlog.processors.add_log_level, reporter.log_event],
        cache_logger_on_first_use=False,
    )
    try:
        asyncio.run(run_helper(job, reporter))
    except BrokenPipeError:
        os._exit(0)  # the parent is gone; nothing to report to
    except Exception as exc:  # a bug: the parent reports a transient failure by its kind
        with contextlib.suppress(OSError):
            reporter.send({"error": {"kind": type(exc).__name__}})
        os._exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
