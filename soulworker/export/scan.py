"""Runs the structure guard in a helper process, ahead of the parser, for large exports.

Why a process: the guard (``export.guard``) has to look at every byte, and in CPython that costs
about 1.5-2 ms per MB (one ``translate`` pass plus escape handling), a quarter of what ijson
itself needs. Threads cannot share that work (neither ijson nor the byte operations release the
GIL), but a second process can: it reads the same file, decompresses the same members, runs the
same ``StructureGuard`` several times faster than ijson parses, and tells the reader how far the
stream is safe. The reader then hands ijson only bytes the helper has cleared, so the guarantee
is unchanged and the parse thread pays ~1 µs per read instead of the guard's cost.

Protocol: the parent writes one line (``ScanJob.encode``) to the helper's stdin; the helper writes
16-byte records ``<stream index, status, offset>`` to stdout:

* ``SAFE``: every byte before ``offset`` is safe (sent every ``REPORT_BYTES``, or with every
  read when relaying);
* ``END``: the stream ended after ``offset`` bytes, all safe;
* ``REFUSED_DEPTH`` / ``REFUSED_KEY``: the byte at ``offset`` must not be parsed;
* ``SOURCE_ERROR``: the helper could not read past ``offset``. The parent meets the same damage
  itself and reports it: ``verdict`` raises ``ScanStoppedAtDamage`` for bytes past that point,
  and the reader reads on without parsing until the damage shows.

Offsets count the bytes the guard sees: the stream without its leading UTF-8 BOM. The helper exits
after the last stream or its first refusal, and dies with a broken pipe if the parent goes away.

Relaying (ZIP exports): decompressing is a third of what reading a ZIP costs, and the helper has to
decompress every member anyway to check it. So for a ZIP it also sends the bytes it read: after
the ``SAFE`` record for a read comes a ``DATA`` record whose third field is a length, followed by
that many bytes of the stream exactly as read (a BOM included). The parser reads those
(``export.relay.RelayedStream``) instead of decompressing the member a second time; the CRC is
checked by the helper, which reports ``SOURCE_ERROR`` instead of ``END`` when it fails. Every
relayed byte was checked before it was sent, and a refusal's record comes before the data that
holds the refused byte, so the parser's guarantee is the one it has without relaying. Measured
through the daemon on a 100 MB ZIP export (6 interleaved pairs): the job took 2.03 s with
relaying against 2.59 s without.

Following a download (``ScanJob.growing``; docs/pipeline.md, "Parsing while the export
downloads"): the file is still being written, so the helper must not read past what the download
has made durable, and it cannot wait on the parent's condition. The parent keeps the helper's
stdin open after the job line and a small thread (``ScanProcess._forward``) sends it ``<size,
finished>`` records as the download publishes; the helper reads no further than the last size
and reports every read as ``SAFE`` before it waits for the next record, so the parser, which
reads up to the newest bytes, never waits on the helper for bytes it could not have seen. When
the download restarts, fails or the reader closes, the parent closes the helper's stdin: the
helper ends as it does when its parent goes away. A ZIP read as it arrives is walked from its
local headers with the reader's own code (``zip_stream``): the same conversation files, numbered
alike; those whose size is in the local header are relayed, the others only guarded.

The helper starts in ~30 ms; until it has got ahead, the parser's chunks are checked in-process
(``RemoteGuard``), so start-up costs little. If the helper cannot be started, the reader uses
the in-process guard throughout; if it dies after taking over, the job fails with a transient
error (a retry starts a new one).

Measured (200 MB generated export, 2 cores): reader with helper 97 % of bare ``ijson.items``
throughput on plain JSON and on ZIP shards, the parse thread's CPU time equal to bare ijson's;
with the in-process guard 78-82 %. The helper itself uses ~0.3 s of CPU per 200 MB of JSON
(plus decompression for ZIP and gzip) on another core.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import IO, TYPE_CHECKING, BinaryIO, Literal, NamedTuple, Protocol, cast

from soulworker.errors import TransientJobError
from soulworker.export.guard import Refusal, StructureGuard, depth_refusal, key_refusal
from soulworker.export.sniff import UTF8_BOM

if TYPE_CHECKING:
    from soulworker.growing_file import GrowingFile

# The helper imports as little as it can (zipfile and gzip only when it needs them, nothing
# for subprocesses or JSON): its start-up time is time the parser spends guarding in-process.

SAFE, END, REFUSED_DEPTH, REFUSED_KEY, SOURCE_ERROR, DATA = range(6)
_RECORD = struct.Struct("<IIQ")
_GROWTH = struct.Struct("<QB")  # following a download: bytes in the file, whether that is all

RELAYED_KINDS = frozenset({"zip"})
"""Export kinds whose bytes the helper relays to the parser (see "Relaying"). A gzip body would
gain the same, but its streaming ratio check reads the compressed position of the parser's own
decompressor."""

PIPE_BYTES = 1024 * 1024
"""The pipe's capacity (Linux): how far the helper can run ahead of the parser when relaying."""

SCAN_READ_SIZE = 256 * 1024
"""The helper's read size: large reads keep its per-call overhead negligible."""

REPORT_BYTES = 1024 * 1024
"""How often the helper reports progress; the parser waits at most this far behind it."""


DEFAULT_STALL_SECONDS = 60.0
"""Longest the parser waits for the helper's next record before giving up on it. The helper
reads a local file and reports at least every ``REPORT_BYTES``, so even on a loaded machine a
silence of a minute means it is stuck (stopped, swapped out, wedged on a broken disk): the job
fails as transient, and a retry starts a new helper."""

WAIT_POLL_SECONDS = 0.25
"""While waiting for the helper, how often the parser checks whether it was told to stop."""

DAMAGE_SEARCH_BYTES = 4 * SCAN_READ_SIZE
"""How far past the helper's last good offset the reader looks for the damage that stopped it.
The helper met it within one of its reads (a CRC at a member's end, a broken deflate block, a
cut-off body), and both processes decompress the same data, so the reader meets it within
``SCAN_READ_SIZE``; the rest is slack. Finding nothing there means the helper failed for its own
reasons, which is transient."""


class ScanStoppedAtDamage(Exception):
    """The helper could not read its stream past ``offset`` (``SOURCE_ERROR``), and the parser
    has asked about bytes beyond it. Those bytes were never checked, so they must not be parsed:
    the reader reads on without parsing to meet the damage itself and report it properly."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"the export check stopped at byte {offset}")
        self.offset = offset


class ScanJob(NamedTuple):
    """What the helper scans: the file, its kind, and for a ZIP the members' indexes in
    ``ZipFile.infolist()`` (indexes, not names: names can repeat inside an archive)."""

    path: str
    kind: str  # "json" | "gzip" | "zip"
    max_depth: int
    max_key_bytes: int
    members: tuple[int, ...] = ()
    growing: bool = False  # the file is still being downloaded: see "Following a download"

    def encode(self) -> bytes:
        """One line for the helper's stdin (NUL-separated: a path cannot contain NUL)."""
        fields = [self.path, self.kind, str(self.max_depth), str(self.max_key_bytes)]
        fields.append(",".join(str(member) for member in self.members))
        fields.append("1" if self.growing else "0")
        return "\0".join(fields).encode("utf-8") + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> ScanJob:
        path, kind, depth, key, members, growing = line.rstrip(b"\n").decode("utf-8").split("\0")
        indexes = tuple(int(member) for member in members.split(",") if member)
        return cls(path, kind, int(depth), int(key), indexes, growing == "1")


class ByteSource(Protocol):
    """What the reader and the helper read from: a file, a ``GzipFile`` body, a ZIP member, or
    a member relayed by the helper."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class _FollowedFile:
    """The export file while the parent's download still writes it (the helper's side of
    "Following a download"): reads stop at the size the parent last sent on ``control``, and
    wait for its next record past it. The parent closing ``control`` before the download is
    finished (a restart, a failure, a stop) ends the helper like a parent gone away."""

    def __init__(self, path: str, control: BinaryIO) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._control = control
        self._available = 0
        self._finished = False
        self._position = 0

    def read(self, size: int = -1, /) -> bytes:
        while self._position >= self._available and not self._finished:
            record = self._control.read(_GROWTH.size)
            if len(record) < _GROWTH.size:
                raise BrokenPipeError("the parent stopped following the download")
            self._available, finished = _GROWTH.unpack(record)
            self._finished = bool(finished)
        count = self._available - self._position
        if count <= 0:
            return b""
        if size >= 0:
            count = min(count, size)
        data = self._file.read(count)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        """Moves forward past bytes not needed (a ZIP member not read); the next read waits
        until the download has written past ``offset``."""
        if whence != os.SEEK_SET:
            raise OSError("only absolute seeks")
        self._position = self._file.seek(offset)
        return self._position

    def close(self) -> None:
        self._file.close()


def run_scan(job: ScanJob, out: BinaryIO, control: BinaryIO | None = None) -> None:
    """The helper's work: guard every stream of ``job`` and report to ``out``; for a file still
    being downloaded, the sizes written so far come on ``control`` (the helper's stdin)."""
    if job.growing:
        assert control is not None
        if job.kind == "gzip":
            import gzip  # here, not at the top: only gzip jobs pay for it

            def open_body() -> ByteSource:
                followed = cast(IO[bytes], _FollowedFile(job.path, control))
                body: ByteSource = gzip.GzipFile(fileobj=followed, mode="rb")
                return body

            _scan_stream(job, 0, open_body, out)
        elif job.kind == "zip":
            _scan_arriving_zip(job, _FollowedFile(job.path, control), out)
        else:
            _scan_stream(job, 0, partial(_FollowedFile, job.path, control), out)
        return
    with open(job.path, "rb") as raw:
        if job.kind == "zip":
            import zipfile  # here, not at the top: only ZIP jobs pay for it

            archive = zipfile.ZipFile(raw)
            every = archive.infolist()
            infos = [every[member] for member in job.members]
            archive.filelist = infos  # the other entries (media) are never needed here
            archive.NameToInfo = {}
            del every
            for index, info in enumerate(infos):
                if not _scan_stream(job, index, partial(archive.open, info), out):
                    return
        elif job.kind == "gzip":
            import gzip  # here, not at the top: only gzip jobs pay for it

            _scan_stream(job, 0, partial(gzip.GzipFile, fileobj=raw, mode="rb"), out)
        else:
            _scan_stream(job, 0, partial(_open_binary, job.path), out)


def _scan_arriving_zip(job: ScanJob, followed: _FollowedFile, out: BinaryIO) -> None:
    """A ZIP still downloading, walked from its local headers exactly as the reader walks it
    (``zip_stream``; the same code, on the same bytes, so the streams are numbered alike): each
    conversation file is guarded, and relayed when its size is in its local header (the reader
    then skips its data; a member with a data descriptor the reader inflates itself, because
    only inflating finds its end). Where this walk stops (a layout that cannot stream), the
    reader's stops too."""
    from soulworker.export.zip_members import member_key  # here: only these jobs need them
    from soulworker.export.zip_stream import LocalHeaderWalker, NeedsWholeFile

    walker = LocalHeaderWalker(followed, max_entries=sys.maxsize)  # the reader keeps the cap
    index = 0
    last_key = None
    try:
        while (entry := walker.next_entry()) is not None:
            placed = None if entry.is_dir else member_key(entry.name)
            if placed is None:
                walker.skip(entry)
                continue
            if last_key is not None and placed[0] <= last_key:
                return
            last_key = placed[0]
            opener = partial(walker.open, entry)
            if not _scan_stream(job, index, opener, out, relay=entry.sizes_known):
                return
            index += 1
    except NeedsWholeFile:
        return


def _open_binary(path: str) -> ByteSource:
    return open(path, "rb")


def _scan_stream(
    job: ScanJob,
    index: int,
    opener: Callable[[], ByteSource],
    out: BinaryIO,
    *,
    relay: bool | None = None,
) -> bool:
    """Guards one stream; returns whether the next stream should be scanned. ``relay``: whether
    its bytes are sent too (by default, for the ``RELAYED_KINDS``)."""
    guard = StructureGuard(job.max_depth, job.max_key_bytes)
    if relay is None:
        relay = job.kind in RELAYED_KINDS
    fed = reported = 0
    first = True
    try:
        source = opener()
        try:
            while True:
                data = source.read(SCAN_READ_SIZE)
                if not data:
                    break
                read = data
                if first:
                    first = False
                    if data.startswith(UTF8_BOM):
                        data = data[len(UTF8_BOM) :]
                refusal = guard.check(data)
                if refusal is not None:
                    status = REFUSED_KEY if refusal.kind == "key" else REFUSED_DEPTH
                    if relay:  # the bytes before the refused one are safe, and are sent
                        _send(out, index, SAFE, fed + refusal.index, flush=False)
                        _send(out, index, status, fed + refusal.index, flush=False)
                        _send_data(out, index, read)
                    else:
                        _send(out, index, status, fed + refusal.index)
                    return False
                fed += len(data)
                if relay:
                    _send(out, index, SAFE, fed, flush=False)
                    _send_data(out, index, read)
                elif fed - reported >= REPORT_BYTES or job.growing:
                    # Following a download, the parser reads up to the newest bytes: each read
                    # is reported before the helper waits for more.
                    _send(out, index, SAFE, fed)
                    reported = fed
        finally:
            source.close()
    except BrokenPipeError:
        raise
    except Exception:  # damaged data: the parent meets it too and reports it properly
        _send(out, index, SOURCE_ERROR, fed)
        return False
    _send(out, index, END, fed)
    return True


def _send(out: BinaryIO, index: int, status: int, offset: int, *, flush: bool = True) -> None:
    out.write(_RECORD.pack(index, status, offset))
    if flush:
        out.flush()


def _send_data(out: BinaryIO, index: int, data: bytes) -> None:
    out.write(_RECORD.pack(index, DATA, len(data)))
    out.write(data)
    out.flush()


def main() -> None:  # pragma: no cover - exercised through a real subprocess in the tests
    """Entry point of the helper process (``python -m soulworker.export.scan``)."""
    job = ScanJob.decode(sys.stdin.buffer.readline())
    try:
        run_scan(job, sys.stdout.buffer, sys.stdin.buffer)
    except BrokenPipeError:
        os._exit(0)  # the reader is gone; nothing to report to
    except Exception:  # the parent sees the pipe close and copes
        os._exit(1)


class ScanProcess:
    """The parent's handle on a running helper; see the module docstring.

    Waiting for the helper never blocks for long: ``interrupt`` (if given) is called every
    ``WAIT_POLL_SECONDS`` while waiting, and may raise to stop the wait, and a helper silent
    for ``stall_seconds`` is killed and reported as a transient failure.
    """

    def __init__(
        self,
        job: ScanJob,
        *,
        interrupt: Callable[[], None] | None = None,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        growing: GrowingFile | None = None,
    ) -> None:
        import subprocess  # here, not at the top: the helper itself never needs it

        self.job = job
        self._interrupt = interrupt
        self._stall_seconds = stall_seconds
        self._process = subprocess.Popen(
            [sys.executable, "-m", "soulworker.export.scan"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C or a group signal meant for the daemon must not kill
            # the helper under a job the daemon is about to release cleanly. The parent kills
            # it on close; if the parent dies, the helper's next report hits a broken pipe.
            start_new_session=True,
        )
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._stdout = self._process.stdout
        self._closing = False
        self._forwarder: threading.Thread | None = None
        try:
            self._process.stdin.write(job.encode())
            if growing is None:
                self._process.stdin.close()
            else:
                self._process.stdin.flush()
        except OSError:  # it died at once: reap it; the caller guards in-process instead
            self.close()
            raise
        if growing is not None:
            self._forwarder = threading.Thread(
                target=self._forward, args=(growing,), name="soulworker-scan-follow", daemon=True
            )
            self._forwarder.start()
        _widen_pipe(self._stdout)
        os.set_blocking(self._stdout.fileno(), False)  # reads wait in _wait_readable
        self._relayed: dict[int, deque[bytes]] = {}
        self._abandoned: set[int] = set()
        self._safe: dict[int, int] = {}
        self._ended: dict[int, int] = {}
        self._refused: dict[int, tuple[int, int]] = {}
        self._failed: dict[int, int] = {}
        self.dead = False  # the helper stopped without finishing: only local guards remain

    def guard(self, stream_index: int) -> RemoteGuard:
        """A guard for stream ``stream_index`` with ``StructureGuard``'s ``check`` interface."""
        local = StructureGuard(self.job.max_depth, self.job.max_key_bytes)
        return RemoteGuard(self, stream_index, local)

    def verdict(
        self, stream_index: int, end: int, *, wait: bool = True
    ) -> tuple[int, int] | Literal[False] | None:
        """The helper's verdict on the bytes before ``end`` of a stream: ``None`` when they are
        safe, ``(offset, status)`` for a refusal before ``end``. With ``wait=False`` it returns
        ``False`` instead of waiting when the helper has not got that far yet.

        Raises ``ScanStoppedAtDamage`` (with ``wait``) when the helper could not read the stream
        as far as ``end``, and ``TransientJobError`` when the helper died or disagrees about
        where the stream ends."""
        while True:
            refused = self._refused.get(stream_index)
            if refused is not None and refused[0] < end:
                return refused
            if self._safe.get(stream_index, 0) >= end:
                return None
            ended = self._ended.get(stream_index)
            failed = self._failed.get(stream_index)
            if wait and failed is not None and end > failed:
                # The parser's reads are smaller than the helper's, so it can get bytes past the
                # helper's failing read before meeting the damage itself.
                raise ScanStoppedAtDamage(failed)
            if (ended is not None and end > ended) or (failed is not None and end > failed):
                self.dead = True
            if self.dead:
                if wait:
                    raise helper_failed()
                return False
            if not wait and not _readable(self._stdout):
                return False
            self._receive()

    def next_relayed(self, stream_index: int) -> bytes | None:
        """The next bytes the helper relayed for a stream (waiting for them), ``None`` once the
        stream has ended. Raises ``ScanStoppedAtDamage`` when the helper stopped before the end
        (damage or a refusal: the caller reads on from its own copy of the stream) and
        ``TransientJobError`` when the helper died."""
        pending = self._relayed.setdefault(stream_index, deque())
        while not pending:
            if stream_index in self._ended:
                return None
            stopped = self._failed.get(stream_index)
            refused = self._refused.get(stream_index)
            if stopped is None and refused is not None:
                stopped = refused[0]
            if stopped is not None:
                raise ScanStoppedAtDamage(stopped)
            if self.dead:
                raise helper_failed()
            self._receive()
        return pending.popleft()

    def abandon(self, stream_index: int) -> None:
        """The parser is done with a stream: drop what was relayed for it, and what still comes."""
        self._abandoned.add(stream_index)
        self._relayed.pop(stream_index, None)

    def _receive(self) -> None:
        """Takes the next record (and a ``DATA`` record's bytes) from the helper, waiting for it.
        Frames are read whole with exact reads, so relayed bytes arrive as the ``bytes`` object
        the kernel filled, without further copies."""
        header = self._read_exactly(_RECORD.size)
        if header is None:
            self.dead = True  # verdict() decides whether that is fatal
            return
        index, status, offset = _RECORD.unpack(header)
        if status == DATA:
            data = self._read_exactly(offset)
            if data is None:
                self.dead = True
            elif index not in self._abandoned:
                self._relayed.setdefault(index, deque()).append(data)
        elif status in (SAFE, END):
            self._safe[index] = offset
            if status == END:
                self._ended[index] = offset
        elif status == SOURCE_ERROR:
            self._safe[index] = offset
            self._failed[index] = offset
        else:
            self._refused[index] = (offset, status)

    def _read_exactly(self, size: int) -> bytes | None:
        """``size`` bytes from the helper's pipe, or ``None`` if it closed first."""
        data = self._read(size)
        if len(data) == size:
            return data
        parts = [data]
        missing = size - len(data)
        while missing:
            if not data:
                return None
            data = self._read(missing)
            parts.append(data)
            missing -= len(data)
        return b"".join(parts)

    def _read(self, size: int) -> bytes:
        """One read of the (non-blocking) pipe, waiting for the helper only when it is empty:
        the helper is normally ahead, so most reads cost one system call."""
        fd = self._stdout.fileno()
        try:
            return os.read(fd, size)
        except BlockingIOError:
            self._wait_readable()
            return os.read(fd, size)

    def _wait_readable(self) -> None:
        """Returns once a read from the pipe will not block. Raises what ``interrupt`` raises,
        or a transient error (the helper killed) after ``stall_seconds`` of silence."""
        started = time.monotonic()
        while not _readable(self._stdout, WAIT_POLL_SECONDS):
            if self._interrupt is not None:
                self._interrupt()
            if time.monotonic() - started >= self._stall_seconds:
                self.dead = True
                if self._process.poll() is None:
                    self._process.kill()
                raise helper_stalled()

    def _forward(self, growing: GrowingFile) -> None:
        """Following a download: sends the helper each new size of the file, then the final
        one. Ends (closing the helper's stdin, which ends the helper) when the download
        finishes, restarts or fails, or the helper is closed; it runs in a thread of its own so
        that the helper never waits on the parser."""
        from soulworker.growing_file import DownloadAbandoned, DownloadRestarted

        stdin = self._process.stdin
        assert stdin is not None
        generation = growing.generation
        sent = 0

        def closing() -> None:
            if self._closing:
                raise DownloadAbandoned()

        try:
            while True:
                available = growing.wait_available(sent, generation, closing)
                finished = growing.finished and sent + available == growing.published
                sent += available
                stdin.write(_GROWTH.pack(sent, finished))
                stdin.flush()
                if finished:
                    break
        except (DownloadAbandoned, DownloadRestarted, OSError):
            pass  # the parser meets the same restart or failure itself
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def close(self) -> None:
        """Stops the helper if it still runs and reaps it."""
        self._closing = True
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._stdout.close()
        if self._forwarder is not None:
            self._forwarder.join()


class RemoteGuard:
    """Checks chunks of one stream against the helper's verdicts (same interface as
    ``StructureGuard.check``: ``None`` or a ``Refusal`` with an index into the chunk).

    Until the helper has got ahead of the parser (its start-up takes ~60 ms), chunks are checked
    by an in-process guard instead; from the first chunk the helper has already cleared, the
    helper alone decides (it scans every stream from its start, so nothing is skipped). If the
    helper dies while the in-process guard is still in charge, that guard simply carries on;
    if it dies later, the stream cannot be checked any more and the job fails as transient.
    """

    def __init__(self, process: ScanProcess, stream_index: int, local: StructureGuard) -> None:
        self._process = process
        self._index = stream_index
        self._local: StructureGuard | None = local
        self._fed = 0

    def check(self, chunk: bytes) -> Refusal | None:
        end = self._fed + len(chunk)
        verdict = self._process.verdict(self._index, end, wait=self._local is None)
        if verdict is False:
            assert self._local is not None
            refusal = self._local.check(chunk)
            if refusal is None:
                self._fed = end
            return refusal
        self._local = None
        if verdict is None:
            self._fed = end
            return None
        offset, status = verdict
        job = self._process.job
        if status == REFUSED_KEY:
            return key_refusal(max(offset - self._fed, 0), job.max_key_bytes)
        return depth_refusal(max(offset - self._fed, 0), job.max_depth)


def _widen_pipe(stream: IO[bytes]) -> None:
    """Lets the helper run up to a megabyte ahead of the parser (Linux; elsewhere the default)."""
    import fcntl  # here, not at the top: the helper itself never needs it

    set_pipe_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_pipe_size is None:
        return
    # Over the system's limit for unprivileged users it fails: the default pipe still works.
    with contextlib.suppress(OSError):
        fcntl.fcntl(stream.fileno(), set_pipe_size, PIPE_BYTES)


def _readable(stream: IO[bytes], timeout: float = 0) -> bool:
    """Whether a read from ``stream`` would not block (data or end of file is waiting),
    waiting up to ``timeout`` seconds for it to become so."""
    import select  # here, not at the top: the helper itself never needs it

    return bool(select.select([stream], [], [], timeout)[0])


def helper_failed() -> TransientJobError:
    return TransientJobError(
        "The export check stopped unexpectedly.",
        code="export_scan_failed",
    )


def helper_stalled() -> TransientJobError:
    return TransientJobError(
        "The export check stopped responding.",
        code="export_scan_stalled",
    )


if __name__ == "__main__":  # pragma: no cover
    main()
