"""Stream an export from Supabase Storage to a local file, in constant memory (docs/pipeline.md).

``download_export`` GETs ``{SUPABASE_URL}/storage/v1/object/{bucket}/{object}`` with the
service key and writes the body to a private temp file in 1 MiB batches. A dropped
connection, a timeout, a 5xx or a 429 is retried by one tenacity policy, and every retry
*resumes*: it asks for ``Range: bytes=N-`` with ``If-Range: <ETag>``, so a 4 GB download that
drops at 3 GB fetches the last gigabyte only. When the object changed meanwhile (the server
answers 200 instead of 206, or a different ETag or size) the file is truncated and the
download starts over from zero: a file is never stitched from two versions of an object.

Supabase answers most errors with HTTP 400 and the real status as a string in a JSON body,
so failures are classified by ``statusCode``/``code`` in the body, not by the status line:
``storage.answers`` reads an answer, and ``storage.errors`` holds what each failure becomes.

Two secrets rules hold everywhere here: the key is sent in headers only and never appears in
an exception message, a log line, or the ``repr`` of ``StorageConfig``; and redirects are
never followed, because httpx2 would carry the ``apikey`` header to wherever they point.

Before the body is read, the free disk space is checked against the bytes still to come
(``check_disk_space``): an export that cannot fit fails at once instead of after writing
gigabytes. Not enough free space now is transient (other jobs' files go, another worker may
have room); more than the whole disk is permanent (no retry on this deployment can help).

The file is not fsynced: it is a scratch copy on an ephemeral disk read back by the same
process moments later through the page cache, and after a crash the job restarts from the
download stage anyway, so an fsync would cost seconds on a multi-GB export and protect nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import errno
import ipaddress
import json
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlsplit

import httpx2
import structlog
import tenacity

from soulworker import __version__
from soulworker.storage.answers import (
    ERROR_BODY_MAX_BYTES,
    AnswerReason,
    StorageAnswer,
    describe_transport_failure,
    read_limited,
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

if TYPE_CHECKING:
    from soulworker.settings import Settings

log = structlog.get_logger("soulworker.storage")

DEFAULT_MAX_EXPORT_BYTES = 8 * 1024**3
"""``SOULWORKER_MAX_EXPORT_BYTES`` (docs/hostile-uploads.md): larger than any real export seen
(1.8 GB)."""

USER_AGENT = f"soulworker/{__version__}"
"""Never browser-like: Supabase refuses ``sb_secret_`` keys from browser User-Agents (401)."""

WRITE_BATCH_BYTES = 1024 * 1024
"""Bytes gathered per disk write. Writes run in a thread while the next batch arrives, so
at most two batches (2 MiB) are in memory; 1 MiB keeps thread hops rare (measured: larger
batches are no faster on loopback)."""

DISK_RESERVE_BYTES = 256 * 1024 * 1024
"""Free disk left over when an export is admitted: room for the parse's own scratch files (the
duplicate registry of a huge export: ~40 MB per million conversations), other jobs' small
files and the system. An export that needs more than the free space minus this waits."""

DEFAULT_TIMEOUT = httpx2.Timeout(connect=10.0, read=60.0, write=30.0, pool=30.0)
"""connect: a healthy Storage host accepts within seconds; read: the longest silence
between body bytes tolerated before resuming; write: requests are headers only; pool: wait
for a connection of a shared client."""

DEFAULT_RETRY_AFTER_CAP_SECONDS = 60.0
"""Honour ``Retry-After`` up to a minute; longer waits are better spent as a job-level retry."""

DEFAULT_WAIT: Callable[[tenacity.RetryCallState], float] = tenacity.wait_exponential_jitter(
    initial=1.0, max=30.0, jitter=1.0
)
"""1 s, 2 s, 4 s … capped at 30 s, plus up to 1 s of jitter so workers do not retry in step."""

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})

ProgressCallback = Callable[[int, int | None], Awaitable[None]]
"""``await progress(bytes_done, total_or_None)``; ``bytes_done`` drops to 0 on a restart."""


class DownloadObserver(Protocol):
    """Follows what reaches the file, for a reader that parses while the download runs
    (``soulworker.growing_file.GrowingFile``). Called on the event loop; must not block."""

    def total_known(self, total: int | None) -> None:
        """The object's declared size, once a response says it."""

    def written(self, size: int) -> None:
        """The file now holds ``size`` bytes, all written (a resume only ever adds)."""

    def restarted(self) -> None:
        """The file is about to be truncated: the object changed and the download starts over."""


KeyKind = Literal["secret", "jwt", "opaque"]

KEY_KIND_NAMES: dict[KeyKind, str] = {
    "jwt": "legacy service_role JWT",
    "secret": "secret key (sb_secret_…)",
    "opaque": "unrecognised format (sent like a JWT)",
}
"""Each kind of service key as an operator knows it."""


class StorageConfigError(ValueError):
    """``SUPABASE_URL`` or ``SUPABASE_SERVICE_KEY`` is unusable; raised at start-up.

    The message names the variable and the fix, never the value.
    """


@dataclass(frozen=True)
class StorageConfig:
    """Where Storage is and how to authenticate; validated on construction.

    ``base_url`` is ``SUPABASE_URL`` (``https://<ref>.supabase.co``, or the direct storage
    host ``https://<ref>.storage.supabase.co``). It must use https; plain http is accepted
    only for loopback hosts (``localhost``, ``127.0.0.0/8``, ``::1``), which is what the
    Supabase CLI and the tests use: anywhere else the key would cross the network in clear.
    Userinfo, a query or a fragment are refused; a path prefix is kept (reverse proxies).

    ``service_key`` is the legacy ``service_role`` JWT or a new ``sb_secret_…`` key. It is
    left out of ``repr``. A publishable key or the legacy ``anon`` JWT is refused: neither
    can read a private bucket, and saying so at start beats a 403 on every job.
    """

    base_url: str
    service_key: str = field(repr=False)
    timeout: httpx2.Timeout = field(default_factory=lambda: DEFAULT_TIMEOUT)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", _validated_base_url(self.base_url))
        _check_key(self.service_key)

    @classmethod
    def from_settings(cls, settings: Settings) -> StorageConfig:
        """The daemon's configuration: ``SUPABASE_URL`` and ``SUPABASE_SERVICE_KEY``
        (``StorageConfigError`` when either is unset or unusable)."""
        return cls(
            base_url=settings.supabase_url or "", service_key=settings.supabase_service_key or ""
        )

    @property
    def key_kind(self) -> KeyKind:
        """``secret`` (``sb_secret_…``), ``jwt`` (legacy) or ``opaque`` (anything else)."""
        return _key_kind(self.service_key)

    def object_url(self, path: StoragePath) -> str:
        """The download URL: the base URL followed by the validated path's URL path."""
        return self.base_url + path.url_path()

    def auth_headers(self) -> dict[str, str]:
        """The headers Supabase expects for this kind of key.

        A legacy JWT goes in ``apikey`` (for the API gateway) and as ``Authorization: Bearer``
        (Storage reads the role from it). A ``sb_secret_`` key goes in ``apikey`` only. A key
        of neither shape is sent both ways, like a JWT: the gateway accepts a Bearer that is
        identical to ``apikey`` for the new keys, so this is the choice that works for both.
        """
        headers = {"apikey": self.service_key, "User-Agent": USER_AGENT}
        if self.key_kind != "secret":
            headers["Authorization"] = f"Bearer {self.service_key}"
        return headers


@dataclass(frozen=True)
class RetryPolicy:
    """The one retry policy of a download: what "bounded" means, and how long to wait.

    Attempts are counted *without progress*: a request that brought new bytes resets the
    count, so a flaky link that drops every few hundred MB still finishes a big export,
    while a dead one gives up after ``max_attempts_without_progress`` requests or
    ``max_seconds_without_progress`` seconds. ``max_attempts`` caps all requests so an object
    that changes on every attempt cannot loop forever. ``wait`` is the backoff (tests pass
    ``tenacity.wait_none()``); a ``Retry-After`` header lengthens a wait up to
    ``retry_after_cap_seconds``. ``sleep`` is how waiting happens (tests record it).
    """

    max_attempts_without_progress: int = 6
    """Six requests in a row with no new byte: about a minute of backoff, then the queue's
    own (longer) job retry takes over."""
    max_seconds_without_progress: float = 300.0
    """Five minutes without a new byte is an outage, not a hiccup."""
    max_attempts: int = 100
    """Hard cap on requests per download, whatever the progress."""
    wait: Callable[[tenacity.RetryCallState], float] = DEFAULT_WAIT
    retry_after_cap_seconds: float = DEFAULT_RETRY_AFTER_CAP_SECONDS
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


DEFAULT_RETRY_POLICY = RetryPolicy()
"""The production policy."""


@dataclass(frozen=True)
class DownloadResult:
    """What a finished download did. ``attempts`` counts HTTP requests; ``resumes`` those
    that continued with ``Range``; ``restarts`` the times the object changed and the file
    was started over."""

    bytes_written: int
    etag: str | None
    content_type: str | None
    attempts: int
    resumes: int
    restarts: int
    seconds: float

    @property
    def mib_per_second(self) -> float:
        """Average throughput, for logs and benchmarks."""
        return self.bytes_written / (1024 * 1024) / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ResumePoint:
    """Where a download handed over (``HandOver``) stands, for whoever goes on with it: the
    file holds the first ``offset`` bytes of the object that ``etag`` / ``last_modified``
    name, and the counters of the requests made so far."""

    offset: int
    total: int | None
    etag: str | None
    last_modified: str | None
    content_type: str | None
    attempts: int
    resumes: int
    restarts: int


_RESUME_CARRIES = tuple(f.name for f in fields(ResumePoint) if f.name != "offset")
"""What a resume point takes from a download's state (all but the offset, the sink's)."""


class HandOver(Exception):
    """Raised by a progress callback to stop the download where it is so that another
    (a helper process, ``download_process``) can go on from there: ``download_export`` writes
    out every byte received, sets ``resume`` and lets it through."""

    def __init__(self) -> None:
        super().__init__("hand over")
        self.resume: ResumePoint | None = None


async def download_export(
    config: StorageConfig,
    path: StoragePath,
    destination: Path,
    *,
    max_bytes: int = DEFAULT_MAX_EXPORT_BYTES,
    progress: ProgressCallback | None = None,
    client: httpx2.AsyncClient | None = None,
    retry: RetryPolicy = DEFAULT_RETRY_POLICY,
    disk_reserve_bytes: int = DISK_RESERVE_BYTES,
    observer: DownloadObserver | None = None,
    resume_from: ResumePoint | None = None,
) -> DownloadResult:
    """Download ``path`` into ``destination`` (created 0600 or truncated; never a symlink).

    ``progress`` is awaited when a response starts, each time a 1 MiB batch reached the
    file, on a restart (with 0) and at the end; the caller throttles its own database
    writes. Exceptions it raises (a lost lease, a cancel) propagate at once and are never
    retried. ``client`` lets the caller share a connection pool; without one a client is
    made and closed here. ``retry`` bounds and paces retries (tests pass a fast one).
    ``disk_reserve_bytes`` is the free space that must remain once the export is written.
    ``observer`` is told each time bytes reach the file, the declared size, and a restart
    (before the file is truncated), so a parse can follow the download. ``resume_from`` goes on
    with a download another one handed over (``HandOver``): the file is kept up to its
    ``offset`` and the next request asks for the rest with ``Range`` / ``If-Range``.

    Raises ``ExportNotFound``, ``StorageBucketNotFound``, ``StorageAuthFailed``,
    ``ExportTooLarge`` or ``StorageError`` (all permanent) as Storage's answer demands,
    ``StorageUnavailable`` (transient) when retries ran out, ``WorkerDiskFull`` (transient)
    when the local disk has no room for the export now or filled up, and
    ``WorkerDiskTooSmall`` (permanent) when the export is larger than the whole disk. On
    failure ``destination`` holds a partial file; removing it is the caller's job
    (``ProcessWorkspace.job_file`` does).
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    own_client = client is None
    http = client or httpx2.AsyncClient(timeout=config.timeout, follow_redirects=False)
    try:
        async with _FileSink(destination, observer, resume_from) as sink:
            run = _Download(
                config=config,
                path=path,
                sink=sink,
                client=http,
                max_bytes=max_bytes,
                progress=progress,
                policy=retry,
                disk_reserve_bytes=disk_reserve_bytes,
                resume_from=resume_from,
            )
            return await run.run()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise WorkerDiskFull(
                "The worker ran out of disk space while downloading the export."
            ) from None
        raise
    finally:
        if own_client:
            await http.aclose()


class _Retryable(Exception):
    """A failure worth another request. ``reason`` is short and free of secrets."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _RangeNotSatisfiable(Exception):
    """Storage says the requested range starts at or past the end of the object."""

    def __init__(self, total: int | None) -> None:
        super().__init__("range not satisfiable")
        self.total = total


@dataclass
class _State:
    total: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    attempts: int = 0
    resumes: int = 0
    restarts: int = 0
    failures_since_progress: int = 0


class _Download:
    """One download: the retry loop around single requests, sharing one ``_State``."""

    def __init__(
        self,
        *,
        config: StorageConfig,
        path: StoragePath,
        sink: _FileSink,
        client: httpx2.AsyncClient,
        max_bytes: int,
        progress: ProgressCallback | None,
        policy: RetryPolicy,
        disk_reserve_bytes: int,
        resume_from: ResumePoint | None = None,
    ) -> None:
        self._config = config
        self._disk_reserve_bytes = disk_reserve_bytes
        self._path = path
        self._url = config.object_url(path)
        self._sink = sink
        self._client = client
        self._max_bytes = max_bytes
        self._progress = progress
        self._policy = policy
        self._state = _State()
        if resume_from is not None:
            carried = {name: getattr(resume_from, name) for name in _RESUME_CARRIES}
            self._state = _State(**carried)

    async def run(self) -> DownloadResult:
        started = time.monotonic()
        state = self._state
        log.info(
            "storage_download_started", storage_path=str(self._path), offset=self._sink.written
        )
        retrying = tenacity.AsyncRetrying(
            stop=self._should_stop,
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Retryable),
            sleep=self._policy.sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._attempt_tracking_progress()
        except HandOver as handover:
            await self._sink.flush()
            carried = {name: getattr(state, name) for name in _RESUME_CARRIES}
            handover.resume = ResumePoint(offset=self._sink.written, **carried)
            raise
        except _Retryable as exc:
            log.warning(
                "storage_download_gave_up",
                storage_path=str(self._path),
                reason=exc.reason,
                attempts=state.attempts,
                bytes_done=self._sink.written,
            )
            raise StorageUnavailable(
                "Supabase Storage is not answering properly right now (last error: "
                f"{describe_transport_failure(exc.reason)}, after {state.attempts} attempts).",
                reason=exc.reason,
                attempts=state.attempts,
            ) from None
        seconds = time.monotonic() - started
        result = DownloadResult(
            bytes_written=self._sink.written,
            etag=state.etag,
            content_type=state.content_type,
            attempts=state.attempts,
            resumes=state.resumes,
            restarts=state.restarts,
            seconds=seconds,
        )
        log.info(
            "storage_download_finished",
            storage_path=str(self._path),
            bytes=result.bytes_written,
            seconds=round(seconds, 3),
            mib_per_second=round(result.mib_per_second, 1),
            attempts=result.attempts,
            resumes=result.resumes,
            restarts=result.restarts,
        )
        return result

    # -- tenacity hooks ------------------------------------------------------------------

    def _should_stop(self, retry_state: tenacity.RetryCallState) -> bool:
        state, policy = self._state, self._policy
        return (
            state.failures_since_progress >= policy.max_attempts_without_progress
            or time.monotonic() - self._sink.last_write_at >= policy.max_seconds_without_progress
            or retry_state.attempt_number >= policy.max_attempts
        )

    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        base = float(self._policy.wait(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return max(base, min(exc.retry_after, self._policy.retry_after_cap_seconds))
        return base

    def _log_retry(self, retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        log.warning(
            "storage_download_retry",
            storage_path=str(self._path),
            reason=exc.reason if isinstance(exc, _Retryable) else type(exc).__name__,
            attempt=retry_state.attempt_number,
            wait_seconds=round(retry_state.upcoming_sleep, 3),
            bytes_done=self._sink.written,
        )

    # -- one request ---------------------------------------------------------------------

    async def _attempt_tracking_progress(self) -> None:
        state = self._state
        written_before = self._sink.written_ever
        try:
            await self._attempt()
        except _Retryable:
            if self._sink.written_ever > written_before:
                state.failures_since_progress = 1  # this attempt brought bytes: a fresh start
            else:
                state.failures_since_progress += 1
            raise

    async def _attempt(self) -> None:
        state, sink = self._state, self._sink
        offset = sink.written
        validator = state.etag if _is_strong_etag(state.etag) else state.last_modified
        if offset > 0 and validator is None:
            # Without a validator a resumed body could belong to a newer object: start over.
            await self._restart("no_validator")
            offset = 0
        request_headers = self._config.auth_headers()
        request_headers["Accept-Encoding"] = "identity"
        if offset > 0 and validator is not None:
            request_headers["Range"] = f"bytes={offset}-"
            request_headers["If-Range"] = validator
            state.resumes += 1
        state.attempts += 1
        try:
            async with self._client.stream(
                "GET",
                self._url,
                headers=request_headers,
                timeout=self._config.timeout,
                follow_redirects=False,
            ) as response:
                await self._handle(response, offset)
        except (
            httpx2.TimeoutException,
            httpx2.NetworkError,
            httpx2.RemoteProtocolError,
            httpx2.ProxyError,
        ) as exc:
            # Keep what arrived intact: the next request resumes right after it.
            await sink.flush()
            raise _Retryable(type(exc).__name__) from exc

    async def _handle(self, response: httpx2.Response, offset: int) -> None:
        state = self._state
        status = response.status_code
        if status not in (200, 206):
            body = await read_limited(response, ERROR_BODY_MAX_BYTES)
            try:
                raise _classify(status, body, response.headers)
            except _RangeNotSatisfiable as exc:
                total = exc.total if exc.total is not None else state.total
                if offset > 0 and total == offset:
                    # Everything had arrived; only the end of the stream was lost.
                    state.total = total
                    return
                await self._restart("range_not_satisfiable")
                raise _Retryable("range_not_satisfiable") from None
        headers = response.headers
        if status == 206:
            content_range = _parse_content_range(headers.get("content-range"))
            if content_range is None or content_range[0] != offset:
                await self._restart("bad_content_range")
                raise _Retryable("bad_content_range")
            total = content_range[1]
            etag = headers.get("etag")
            if offset > 0 and (
                (state.etag is not None and etag is not None and etag != state.etag)
                or (state.total is not None and total is not None and total != state.total)
            ):
                # The server ignored If-Range for a changed object: never mix two versions.
                await self._restart("object_changed")
                raise _Retryable("object_changed")
        else:
            if offset > 0:
                # 200 to a Range + If-Range request: the object changed (or the server does
                # not do ranges). This body is the whole current object: start over with it.
                await self._restart("full_body_instead_of_range")
            total = _parse_int(headers.get("content-length"))
        if offset == 0 or status == 200:
            state.etag = headers.get("etag")
            state.last_modified = headers.get("last-modified")
            state.content_type = headers.get("content-type")
            state.total = total
            self._sink.total_known(total)
        if total is not None and total > self._max_bytes:
            raise _too_large(self._max_bytes, total)
        if total is not None:
            check_disk_space(
                self._sink.path.parent, total - self._sink.written, self._disk_reserve_bytes
            )
        await self._report()
        await self._stream_body(response)

    async def _stream_body(self, response: httpx2.Response) -> None:
        state, sink = self._state, self._sink
        async for chunk in response.aiter_raw():
            if sink.received + len(chunk) > self._max_bytes:
                raise _too_large(self._max_bytes, None)
            if await sink.add(chunk):
                await self._report()
        await sink.flush()
        if state.total is not None and sink.written != state.total:
            if sink.written < state.total:
                raise _Retryable("premature_end")
            await self._restart("length_mismatch")
            raise _Retryable("length_mismatch")
        if state.total is None:
            state.total = sink.written
        await self._report()

    async def _restart(self, reason: str) -> None:
        state = self._state
        log.warning(
            "storage_download_restarting",
            storage_path=str(self._path),
            reason=reason,
            bytes_discarded=self._sink.received,
        )
        await self._sink.reset()
        state.restarts += 1
        state.total = state.etag = state.last_modified = state.content_type = None
        await self._report()

    async def _report(self) -> None:
        if self._progress is not None:
            await self._progress(self._sink.written, self._state.total)


def check_disk_space(directory: Path, needed: int, reserve: int) -> None:
    """Raises unless ``needed`` more bytes fit in ``directory``'s file system, ``reserve``
    bytes to spare: ``WorkerDiskTooSmall`` if not even the empty disk could hold them,
    ``WorkerDiskFull`` if only the space free now is short."""
    usage = shutil.disk_usage(directory)
    wanted = needed + reserve
    if wanted <= usage.free:
        return
    log.warning(
        "storage_download_no_disk_space",
        needed_bytes=needed,
        reserve_bytes=reserve,
        free_bytes=usage.free,
        disk_bytes=usage.total,
    )
    if wanted > usage.total:
        raise WorkerDiskTooSmall(
            f"The export ({_human_bytes(needed)}) is larger than this service's workers can "
            "hold on disk. Please contact support."
        )
    raise WorkerDiskFull(
        f"The worker does not have enough free disk space for this export "
        f"({_human_bytes(needed)}) right now."
    )


def open_destination(path: Path, *, keep: int = 0) -> IO[bytes]:
    """The download's file, created 0600, never through a symlink, unbuffered, positioned to
    write after its first ``keep`` bytes (anything past them is cut: 0 truncates it)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    file = os.fdopen(os.open(path, flags | (os.O_TRUNC if keep == 0 else 0), 0o600), "wb", 0)
    if keep:
        if os.fstat(file.fileno()).st_size < keep:
            file.close()
            raise ValueError("the file is shorter than the download it should go on with")
        file.truncate(keep)
        file.seek(keep)
    return file


class _FileSink:
    """The destination file, written in batches by a worker thread while the next batch is
    being received (one write in flight at a time, so at most two batches are in memory).

    ``received`` counts bytes taken from the network, ``written`` those in the file; a resume
    continues from ``written`` after a ``flush``. ``written_ever`` and ``last_write_at`` never
    go back on a restart: they measure progress for the retry policy.
    """

    def __init__(
        self,
        path: Path,
        observer: DownloadObserver | None = None,
        resume_from: ResumePoint | None = None,
    ) -> None:
        self.path = path
        self._observer = observer
        self._keep = 0 if resume_from is None else resume_from.offset
        self._file: IO[bytes] | None = None
        self._pending = bytearray()
        self._in_flight: asyncio.Future[None] | None = None
        self._in_flight_bytes = 0
        self.written = 0
        self.written_ever = 0
        self.last_write_at = time.monotonic()

    async def __aenter__(self) -> _FileSink:
        self._file = open_destination(self.path, keep=self._keep)
        self.written = self.written_ever = self._keep
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Never close the file under a write still running in its thread.
        if self._in_flight is not None:
            await asyncio.wait([self._in_flight])
            self._in_flight = None
        if self._file is not None:
            file, self._file = self._file, None
            # Off the loop: ext4 starts writing back the dirty pages of a file that was
            # truncated and rewritten when it is closed (auto_da_alloc), which held the event
            # loop for ~0.17 s at the end of a 1 GB download.
            await asyncio.to_thread(file.close)

    @property
    def received(self) -> int:
        return self.written + self._in_flight_bytes + len(self._pending)

    async def add(self, chunk: bytes) -> bool:
        """Take ``chunk``; hand a full batch to the writer thread. Returns whether a previous
        batch reached the file meanwhile."""
        self._pending += chunk
        if len(self._pending) < WRITE_BATCH_BYTES:
            return False
        completed = await self._wait_for_write()
        self._start_write()
        return completed

    async def flush(self) -> None:
        """Write everything received so far and wait until it is in the file."""
        await self._wait_for_write()
        if self._pending:
            self._start_write()
            await self._wait_for_write()

    async def reset(self) -> None:
        """Drop everything received so far: the file is truncated to zero."""
        await self._wait_for_write()
        self._pending.clear()
        if self._observer is not None:
            # Before the truncation: a reader that raced it sees the new generation after its
            # read and throws that read away (``growing_file``).
            self._observer.restarted()
        await asyncio.to_thread(self._truncate)
        self.written = 0

    def _start_write(self) -> None:
        batch, self._pending = self._pending, bytearray()
        self._in_flight_bytes = len(batch)
        self._in_flight = asyncio.ensure_future(asyncio.to_thread(self._write_all, batch))

    async def _wait_for_write(self) -> bool:
        if self._in_flight is None:
            return False
        in_flight = self._in_flight
        # Clear the slot only once the write is over: if this task is cancelled while
        # waiting, ``__aexit__`` still sees the write and waits for it before closing.
        await asyncio.wait([in_flight])
        self._in_flight = None
        size, self._in_flight_bytes = self._in_flight_bytes, 0
        in_flight.result()  # a write error (ENOSPC) surfaces here
        self.written += size
        self.written_ever += size
        self.last_write_at = time.monotonic()
        if self._observer is not None:
            self._observer.written(self.written)
        return True

    def total_known(self, total: int | None) -> None:
        if self._observer is not None:
            self._observer.total_known(total)

    def _write_all(self, data: bytearray) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:
            count = self._file.write(view)
            view = view[count or 0 :]

    def _truncate(self) -> None:
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()


# -- response classification ---------------------------------------------------------------


def _classify(status: int, body: bytes, headers: httpx2.Headers) -> Exception:
    """Turn an error response into the exception it calls for (raised by the caller).

    What the answer means is ``storage.answers``' reading, shared with ``soulworker doctor``;
    what each meaning becomes for a download is decided here.
    """
    answer = StorageAnswer.parse(status, body)
    reason = answer.reason

    def permanent(kind: type[StorageError], message: str) -> StorageError:
        return kind(
            message,
            http_status=status,
            storage_status=answer.storage_status,
            storage_code=answer.code,
        )

    if reason.transient:
        said = 429 if reason is AnswerReason.RATE_LIMITED else answer.effective_status
        return _Retryable(
            f"http_{said}", retry_after=_parse_retry_after(headers.get("retry-after"))
        )
    if reason is AnswerReason.BUCKET_NOT_FOUND:
        return permanent(
            StorageBucketNotFound,
            "The storage bucket for exports does not exist. This is a server configuration "
            "problem: an operator must check the Supabase project and SOULWORKER_STORAGE_BUCKETS.",
        )
    # A 404 that is not Storage's own (NO_SUCH_ROUTE) fails the job as a missing export too, as
    # it always has; `soulworker doctor` is where an operator learns that SUPABASE_URL has no
    # Storage behind it.
    if reason in (AnswerReason.NOT_FOUND, AnswerReason.NO_SUCH_ROUTE):
        return permanent(
            ExportNotFound,
            "The export file was not found in storage: the upload may have failed or the file "
            "was deleted. Please upload the export again.",
        )
    if reason is AnswerReason.KEY_REFUSED:
        return permanent(
            StorageAuthFailed,
            "Supabase Storage refused the worker's key. An operator must check "
            "SUPABASE_SERVICE_KEY (the service_role key or an sb_secret_ key).",
        )
    if reason is AnswerReason.RANGE_NOT_SATISFIABLE:
        return _RangeNotSatisfiable(_parse_unsatisfied_total(headers.get("content-range")))
    if reason is AnswerReason.TOO_LARGE:
        return permanent(ExportTooLarge, "The export is too large to import.")
    if reason is AnswerReason.REDIRECT:
        return permanent(
            StorageError,
            f"Supabase Storage answered with a redirect (HTTP {status}), which the worker does "
            "not follow. An operator must check SUPABASE_URL.",
        )
    code = answer.code
    shown = f"HTTP {answer.effective_status}" + (f", {code}" if code else "")
    return permanent(
        StorageError,
        f"Supabase Storage refused the download ({shown}). Please try the import again; "
        "if it keeps failing, contact support.",
    )


def _too_large(limit: int, size: int | None) -> ExportTooLarge:
    what = "larger" if size is None else f"{_human_bytes(size)}, larger"
    return ExportTooLarge(
        f"The export is {what} than the {_human_bytes(limit)} this service can import. "
        "Please contact support."
    )


# -- small parsers ---------------------------------------------------------------------------


def _parse_int(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _parse_content_range(value: str | None) -> tuple[int, int | None] | None:
    """``bytes 100-199/1000`` → ``(100, 1000)``; ``bytes 100-199/*`` → ``(100, None)``."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if match is None:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _parse_unsatisfied_total(value: str | None) -> int | None:
    """``bytes */1000`` (a 416's Content-Range) → ``1000``."""
    match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", value or "")
    return int(match.group(1)) if match else None


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds or an HTTP date), or ``None``."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_strong_etag(etag: str | None) -> bool:
    """If-Range needs a strong validator (RFC 9110 §13.1.5); ``W/"…"`` is weak."""
    return etag is not None and not etag.startswith("W/")


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# -- configuration checks ----------------------------------------------------------------------


def _validated_base_url(base_url: str) -> str:
    problem = "SUPABASE_URL must look like https://<project>.supabase.co"
    if not isinstance(base_url, str) or not base_url.strip():
        raise StorageConfigError(f"{problem} (it is empty)")
    try:
        parts = urlsplit(base_url.strip())
        host = parts.hostname
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        raise StorageConfigError(problem) from None
    if parts.scheme not in ("https", "http") or not host:
        raise StorageConfigError(problem)
    if parts.username is not None or parts.password is not None:
        raise StorageConfigError(f"{problem}, without a user name or password in it")
    if parts.query or parts.fragment:
        raise StorageConfigError(f"{problem}, without a query or fragment")
    if parts.scheme == "http" and not _is_loopback(host):
        raise StorageConfigError(
            "SUPABASE_URL must use https (plain http is allowed only for localhost)"
        )
    return base_url.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _key_kind(key: str) -> KeyKind:
    if key.startswith("sb_secret_"):
        return "secret"
    if key.startswith("eyJ") and key.count(".") == 2:
        return "jwt"
    return "opaque"


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise StorageConfigError("SUPABASE_SERVICE_KEY is empty")
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise StorageConfigError(
            "SUPABASE_SERVICE_KEY contains spaces or unprintable characters; paste it again"
        )
    if key.startswith("sb_publishable_"):
        raise StorageConfigError(
            "SUPABASE_SERVICE_KEY is a publishable key; use a secret key (sb_secret_…)"
        )
    if _key_kind(key) == "jwt" and _jwt_role(key) == "anon":
        raise StorageConfigError(
            "SUPABASE_SERVICE_KEY is the anon key; use the service_role key or a secret key"
        )


def _jwt_role(token: str) -> str | None:
    """The ``role`` claim of a JWT, read without verifying it (only to catch a wrong key)."""
    payload = token.split(".")[1]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    role = decoded.get("role") if isinstance(decoded, dict) else None
    return role if isinstance(role, str) else None
