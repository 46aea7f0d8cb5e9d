"""Streams the raw conversations out of a downloaded ChatGPT export, in constant memory.

``ExportReader(path)`` is a plain, single-use iterator of conversation objects (``dict`` exactly
as ijson builds them, floats as ``float``) in file order, across every conversation file:

- the kind is sniffed from the content (``export.sniff``): ZIP, gzip or JSON; the web app's
  ``file_type`` hint and the file name are never trusted;
- JSON is a bare array (the real format) or, defensively, ``{"conversations": [...]}``: the first
  significant byte decides which, so the file is parsed once;
- a ZIP is read member by member straight from the archive (``zip_members`` picks and orders
  the members; nothing is extracted), a gzip body is decompressed on the fly;
- items that are not objects are counted in ``skipped_items`` and not yielded; judging
  conversations is the linearizer's job. More than ``MAX_NON_OBJECT_ITEMS`` of them and the
  file is refused as not an export: each costs the parser as much as a small conversation and
  no real export holds a single one (a run of ``[0,0,0,…]`` parses at ~10 MB/s).

Numbers: JSON numbers beyond what yajl holds (integers from 2^63, floats beyond ~1.8e308) stop
ijson with an "overflow"; the stream is then read again from its start with exactly those numbers
turned into strings of their digits (``export_numbers``), the items already yielded are passed
over, and reading goes on. Such a stream parses at ~30 MB/s instead of ~140.

A file still being downloaded (``growing``, a ``growing_file.GrowingFile``): every read waits for
bytes the download has not written yet, and the end of the file is only met once the download
is finished; a restart or a failure of the download raises from the next read. A ZIP is read from
its local headers as it arrives when its layout allows (``zip_stream``), and checked against its
central directory at the end; otherwise it raises ``NeedsWholeFile`` and the caller reads it again
with ``stream_zip=False``, once it is whole (docs/pipeline.md, "Parsing while the export
downloads").

Nothing the reader yields is final until it is exhausted: a ZIP member's CRC is only checked at
its end, so the caller commits nothing before the iterator stops without raising.

Limits (``ExportLimits``), each checked before the bytes reach the parser:

- entries in a ZIP (``SOULWORKER_MAX_ZIP_ENTRIES``), before its central directory is read;
- total uncompressed bytes (``SOULWORKER_MAX_EXPORT_BYTES``, default 8 GiB): on the ZIP
  central directory and again on the bytes actually produced;
- expansion ratio of a ZIP member (declared) or of a gzip body (while streaming);
- bytes of one conversation (its JSON, counted between conversations), since the parser holds a
  whole conversation in memory;
- nesting depth and key length (``export.guard``), which otherwise cost the parser memory in
  the square of the nesting.

Failures are ``ExportError`` subclasses (``export.errors``), permanent, with byte offsets into
the uncompressed JSON of the named member: the end of the data for a truncated file, the exact
byte for invalid UTF-8 (the failing buffer is decoded again) and for a syntax error (the stream
is parsed again up to the failing buffer, then byte by byte; only on the error path).

Throughput: the reader hands ijson 64 KiB reads. The guard's per-byte work (``export.guard``,
~1.5-2 ms per MB) runs in a helper process for exports from ``scan_process_min_bytes`` on
(``scan``): measured on a 200 MB generated export, 97 % of bare ``ijson.items``
throughput for plain JSON and for ZIP shards (78-82 % with the guard in-process).

Progress: ``progress`` is the fraction of the input file consumed (for a ZIP, of the compressed
bytes of the members read); ``input_bytes_read`` and ``uncompressed_bytes_read`` are exposed
for the job result. They are plain attributes updated by the iterating thread, safe to read
from another thread.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from functools import partial
from typing import IO, Any, NoReturn, Protocol

import ijson

from soulworker.export.errors import (
    ConversationTooLarge,
    CorruptArchive,
    EmptyExport,
    EncryptedArchive,
    ExportError,
    ExportTooLarge,
    ExportTruncated,
    InvalidJson,
    InvalidUtf8,
    NestingTooDeep,
    NotAnExport,
    UnsupportedArchive,
    ZipBomb,
)
from soulworker.export.guard import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_KEY_BYTES,
    Refusal,
    StructureGuard,
)
from soulworker.export.numbers import QuotingStream
from soulworker.export.relay import RelayedStream
from soulworker.export.scan import (
    DAMAGE_SEARCH_BYTES,
    DEFAULT_STALL_SECONDS,
    ByteSource,
    ScanJob,
    ScanProcess,
    ScanStoppedAtDamage,
    helper_failed,
)
from soulworker.export.sniff import (
    JSON_WHITESPACE,
    SNIFF_BYTES,
    UTF8_BOM,
    ExportKind,
    describe,
    first_json_byte,
    sniff,
)
from soulworker.export.zip_members import (
    DEFAULT_MAX_ZIP_ENTRIES,
    ConversationMember,
    MemberKey,
    check_central_directory,
    check_members,
    exceeds_ratio,
    find_conversation_members,
    keep_only,
    member_key,
)
from soulworker.export.zip_stream import (
    LocalEntry,
    LocalHeaderWalker,
    MemberData,
    NeedsWholeFile,
)
from soulworker.growing_file import GrowingFile, GrowingReader
from soulworker.settings import SettingsError

FAST_BACKEND = "yajl2_c"
"""ijson's C backend: ~10x any other (docs/export-format.md)."""

DEFAULT_MAX_EXPORT_BYTES = 8 * 1024**3
"""``SOULWORKER_MAX_EXPORT_BYTES`` (docs/hostile-uploads.md): the largest real exports are a few
GB."""

DEFAULT_MAX_COMPRESSION_RATIO = 100.0
"""Real exports deflate 4:1 to ~15:1 (JSON text); deflate bombs sit near its 1032:1 ceiling.
100 keeps a 6x margin over real data while capping what a small upload can expand to."""

DEFAULT_MAX_CONVERSATION_BYTES = 64 * 1024**2
"""ijson holds a conversation as objects, ~4x its JSON (a 40 MB one peaked at 167 MB); the
largest real conversations reported are 18-40 MB."""

READ_SIZE = 64 * 1024
"""ijson's own default buffer: larger reads do not parse faster (docs/export-format.md)."""

MAX_LEADING_WHITESPACE = 1024 * 1024
"""Whitespace tolerated before the first significant byte; more means it is not an export."""

REPARSE_LIMIT_BYTES = 512 * 1024**2
"""A syntax error further into the stream is reported at its 64 KiB buffer, not re-parsed to
the exact byte (~3 s of extra parsing on the error path at most)."""

DEFAULT_SCAN_PROCESS_MIN_BYTES = 16 * 1024**2
"""From this much JSON on, the guard runs in a helper process (``scan``); measured
break-even ~10 MB: below it the helper's start-up costs more than guarding in-process."""

GZIP_EXPANSION_ESTIMATE = 5
"""Typical expansion of a gzipped export, to guess its JSON size for the choice above."""

ZIP_EXPANSION_ESTIMATE = 4
"""The same for a ZIP read as it arrives (its directory, with the declared sizes, comes last):
generated and real exports expand ~4.4 times."""

EXPLAIN_LIMIT_BYTES = 64 * 1024**2
"""How far the error path reads a top-level object to tell "no conversations key" from "empty
list" (event-level parsing runs ~30 MB/s: about two seconds at most)."""

MAX_NON_OBJECT_ITEMS = 100_000
"""List items that are not JSON objects tolerated in one export. Real exports hold none; a
file full of them is garbage that would otherwise cost ~0.1 µs of parsing per byte (10 MB/s)
to reach the same verdict ("holds no conversations") at its end."""

_CONVERSATIONS_PREFIX = {b"[": "item", b"{": "conversations.item"}


class SlowJsonBackend(SettingsError):
    """ijson's C backend is missing: parsing would silently run 10x slower. A SettingsError so
    that the daemon refuses to start with one line, like any other unusable environment."""


def fast_json_backend_problem() -> str | None:
    """Why the fast JSON backend cannot be used, or ``None`` when it can."""
    try:
        ijson.get_backend(FAST_BACKEND)
    except ImportError as error:
        return (
            f"ijson's {FAST_BACKEND} backend is not available ({error}); the pure-Python fallback "
            "parses exports about 10x slower. Install an ijson wheel built with yajl."
        )
    return None


def require_fast_json_backend() -> None:
    """Raises ``SlowJsonBackend`` with an actionable message unless ``yajl2_c`` is usable."""
    problem = fast_json_backend_problem()
    if problem is not None:
        raise SlowJsonBackend(problem)


def _backend() -> Any:
    try:
        return ijson.get_backend(FAST_BACKEND)
    except ImportError as error:
        raise SlowJsonBackend(str(fast_json_backend_problem())) from error


@dataclass(frozen=True)
class ExportLimits:
    """The reader's limits; every default is a module constant with its reason.

    ``max_export_bytes``: uncompressed bytes in all (``SOULWORKER_MAX_EXPORT_BYTES``).
    ``max_compression_ratio``: expansion allowed for a ZIP member or a gzip body.
    ``max_conversation_bytes``: JSON bytes of one conversation (held in memory whole).
    ``max_depth`` / ``max_key_bytes``: the structure guard's limits (``export_guard``).
    ``max_zip_entries``: files in a ZIP, checked before its directory is read (``export_zip``).
    ``scan_process_min_bytes``: from this much JSON on, the guard runs in a helper process;
    ``None`` keeps it in-process always (``export_scan``).
    ``helper_stall_seconds``: how long the helper may stay silent before the read fails
    (transient).
    """

    max_export_bytes: int = DEFAULT_MAX_EXPORT_BYTES
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO
    max_conversation_bytes: int = DEFAULT_MAX_CONVERSATION_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES
    max_zip_entries: int = DEFAULT_MAX_ZIP_ENTRIES
    scan_process_min_bytes: int | None = DEFAULT_SCAN_PROCESS_MIN_BYTES  # None: never
    helper_stall_seconds: float = DEFAULT_STALL_SECONDS


@dataclass(frozen=True)
class _Opened:
    """A JSON stream opened for reading: its bytes and where reading them stands in the input
    file (``position``; for gzip also ``compressed_position``, for the expansion check)."""

    source: ByteSource
    position: Callable[[], int]
    compressed_position: Callable[[], int] | None = None


@dataclass(frozen=True)
class _Spec:
    """One JSON stream to read: its display name and how to open it (again)."""

    member: str | None  # archive member name for messages; None for a plain or gzip file
    open: Callable[[], ByteSource]  # for the error paths, which only need the bytes
    reopen: Callable[[], _Opened]  # for reading the whole stream again (``export_numbers``)


class _GzipBody:
    """A gzip file's decompressed body that also closes the file under it."""

    def __init__(self, file: io.BufferedReader | GrowingReader) -> None:
        self.file = file
        self.body = gzip.GzipFile(fileobj=file, mode="rb")

    def read(self, size: int = -1, /) -> bytes:
        return self.body.read(size)

    def close(self) -> None:
        self.body.close()
        self.file.close()


class ExportReader:
    """Iterates the conversations of the export at ``path``; see the module docstring.

    Use once: ``for conversation in ExportReader(path): ...``. ``close()`` (or a ``with``
    block) releases the file, and stops the guard's helper process, if iteration stops early.
    Iteration blocks only on local file reads and, rarely, on the helper (it is normally ahead).
    Raises ``ExportError`` subclasses (permanent), ``SlowJsonBackend`` when ijson's C backend is
    missing, ``TransientJobError`` if the helper dies after taking over the checks (code
    ``export_scan_failed``) or stays silent for ``helper_stall_seconds``
    (``export_scan_stalled``), whatever ``interrupt`` raises, and ``OSError`` for local I/O
    failures.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limits: ExportLimits | None = None,
        interrupt: Callable[[], None] | None = None,
        growing: GrowingFile | None = None,
        stream_zip: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        # A file still being downloaded (``growing_file``): every read of it waits for the bytes
        # the download has not written yet. None: the file is complete.
        self.growing = growing
        self._generation = growing.generation if growing is not None else 0
        # A ZIP still downloading is read from its local headers as it arrives when its layout
        # allows (``zip_stream``); False (after ``NeedsWholeFile``): only once it is whole.
        self.stream_zip = stream_zip
        self.limits = limits or ExportLimits()
        # Called before every read of the export (each READ_SIZE bytes at most, whatever the
        # bytes hold); raising there stops the iteration, closing files and the helper.
        self.interrupt = interrupt
        self.kind: ExportKind | None = None
        self.members: tuple[str, ...] = ()
        self.current_member: str | None = None
        self.input_bytes_total = 0
        self.input_bytes_read = 0
        self.uncompressed_bytes_read = 0
        self.conversations_read = 0
        self.skipped_items = 0
        self.numbers_quoted = 0  # numbers too large for the parser, read as text
        self._progress_total = 0
        self._done = False
        self._iterator: Generator[dict[str, Any], None, None] | None = None
        self._scan: ScanProcess | None = None

    @property
    def progress(self) -> float:
        """Fraction of the input consumed, 0..1 (1 once iteration has finished)."""
        if self._done:
            return 1.0
        total = self._progress_total
        if total <= 0 and self.growing is not None:
            total = self.growing.total or 0  # still downloading: the size the object declared
        if total <= 0:
            return 0.0
        return min(1.0, self.input_bytes_read / total)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._iterator is not None:
            raise RuntimeError("an ExportReader can be iterated only once")
        self._iterator = self._conversations()
        return self._iterator

    def close(self) -> None:
        """Stops iteration and closes the files (idempotent)."""
        if self._iterator is not None:
            self._iterator.close()

    def __enter__(self) -> ExportReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- dispatch -------------------------------------------------------------------------------

    def _conversations(self) -> Generator[dict[str, Any], None, None]:
        backend = _backend()
        with self._open_file() as raw:
            head = _read_up_to(raw, SNIFF_BYTES)
            # After the first bytes: a download has said its size by the time it writes any.
            self.input_bytes_total = self._progress_total = self._input_size(raw)
            kind = sniff(head)
            if kind is None:
                _refuse_unknown(head, raw)  # returns only for JSON after long leading whitespace
                kind = ExportKind.JSON
            self.kind = kind
            raw.seek(0)
            try:
                if kind is ExportKind.ZIP:
                    yield from self._read_whole_zip(backend, raw)
                elif kind is ExportKind.GZIP:
                    self._start_scan(kind, self.input_bytes_total * GZIP_EXPANSION_ESTIMATE)
                    yield from self._read_gzip(backend, raw)
                else:
                    self._start_scan(kind, self.input_bytes_total)
                    spec = _Spec(None, self._open_file, self._reopen_file)
                    yield from self._read_stream(backend, spec, _Opened(raw, raw.tell), index=0)
            finally:
                if self._scan is not None:
                    self._scan.close()
                    self._scan = None
        if self.conversations_read == 0:
            if self.skipped_items:
                raise NotAnExport("a JSON list that holds no conversations")
            raise EmptyExport()
        self._done = True

    def _start_scan(
        self, kind: ExportKind, expected_bytes: int, members: list[int] | None = None
    ) -> None:
        """Starts the guard's helper process when the export is large enough to pay for it."""
        threshold = self.limits.scan_process_min_bytes
        if threshold is None or expected_bytes < threshold:
            return
        # Still downloading: the helper follows the download too (``scan``, "Following a
        # download"), a ZIP read as it arrives too (``_scan_arriving_zip``; ``members`` None),
        # even when the download has finished since the reader chose to read it so.
        growing = self.growing
        if (
            growing is not None
            and growing.finished
            and not (kind is ExportKind.ZIP and members is None)
        ):
            growing = None
        job = ScanJob(
            path=self.path,
            kind=kind.value,
            max_depth=self.limits.max_depth,
            max_key_bytes=self.limits.max_key_bytes,
            members=tuple(members or ()),
            growing=growing is not None,
        )
        try:
            self._scan = ScanProcess(
                job,
                interrupt=self.interrupt,
                stall_seconds=self.limits.helper_stall_seconds,
                growing=growing,
            )
        except OSError:
            self._scan = None  # no helper: the in-process guard does the same job, slower

    def _guard(self, index: int) -> StructureGuard | _HasCheck:
        if self._scan is not None:
            return self._scan.guard(index)
        return StructureGuard(self.limits.max_depth, self.limits.max_key_bytes)

    def _open_file(self) -> io.BufferedReader | GrowingReader:
        if self.growing is not None:
            return self.growing.open(self.interrupt, generation=self._generation)
        return open(self.path, "rb")

    def _input_size(self, raw: io.BufferedReader | GrowingReader) -> int:
        """The export file's size: final, or while downloading the size the object declared
        (0 when it declared none: progress then shows once the download is done)."""
        if self.growing is not None:
            return self.growing.total or 0
        return os.fstat(raw.fileno()).st_size

    def _read_whole_zip(
        self, backend: Any, raw: io.BufferedReader | GrowingReader
    ) -> Iterator[dict[str, Any]]:
        """A ZIP's central directory is at its end, and the archive is read through it (every
        hostile-upload check starts there). A ZIP still downloading is read from its local
        headers as it arrives (``_read_arriving_zip``) unless ``stream_zip`` is off, and then
        once it is whole (docs/pipeline.md, "Parsing while the export downloads")."""
        if self.growing is None:
            assert isinstance(raw, io.BufferedReader)
            yield from self._read_zip(backend, raw)
            return
        if self.stream_zip and not self.growing.finished:
            assert isinstance(raw, GrowingReader)
            yield from self._read_arriving_zip(backend, raw)
            return
        self.growing.wait_finished(self._generation, self.interrupt)
        with open(self.path, "rb") as whole:
            self.input_bytes_total = self._progress_total = os.fstat(whole.fileno()).st_size
            yield from self._read_zip(backend, whole)

    def _read_arriving_zip(self, backend: Any, raw: GrowingReader) -> Iterator[dict[str, Any]]:
        """A ZIP read member by member from its local headers while it downloads
        (``zip_stream``), then checked against its central directory once whole.

        The conversation files are recognised by today's rules and must arrive in the order the
        directory will give them (``member_key``); every check the whole-file path makes is
        made on the directory at the end, by the same code, before anything is final, and the
        directory must describe exactly the members read (offsets, names, methods, flags,
        sizes, CRC-32). Anything this path cannot read or verify, including every error a
        member's data meets here, raises ``NeedsWholeFile``: the caller discards what was
        yielded and reads the archive again once it is whole, so its outcome (result or error)
        is always the whole-file path's own."""
        walker = LocalHeaderWalker(raw, max_entries=self.limits.max_zip_entries)
        self._start_scan(ExportKind.ZIP, (self._declared_size() or 0) * ZIP_EXPANSION_ESTIMATE)
        read: list[LocalEntry] = []
        last_key: MemberKey | None = None
        try:
            while (entry := walker.next_entry()) is not None:
                placed = None if entry.is_dir else member_key(entry.name)
                if placed is None:
                    walker.skip(entry)
                    continue
                key, name = placed
                if last_key is not None and key <= last_key:
                    raise NeedsWholeFile("conversation files out of order")
                last_key = key
                if entry.sizes_known and exceeds_ratio(
                    entry.file_size, entry.compress_size, self.limits.max_compression_ratio
                ):
                    raise NeedsWholeFile("declared expansion")  # the directory will say so too
                index = len(read)
                read.append(entry)
                self.members = (*self.members, name)
                self.current_member = name
                spec = _Spec(name, _read_again, _read_again_opened)
                if self._scan is not None and entry.sizes_known:
                    # The helper inflates, checks and relays it (``scan``); this side passes
                    # over its data, unless the helper stopped and it is read here after all.
                    local = _LocalCopy(walker, entry)
                    relayed = RelayedStream(self._scan, index, local.open)
                    position = partial(_arriving_position, relayed, entry)
                    yield from self._read_stream(
                        backend, spec, _Opened(relayed, position), index=index
                    )
                    local.pass_over()
                else:
                    data = walker.open(entry)
                    opened = _Opened(data, walker.input.tell, data.compressed_read)
                    yield from self._read_stream(backend, spec, opened, index=index)
                    if not data.finished:
                        raise NeedsWholeFile("member not read to its end")
        except ExportError as error:
            raise NeedsWholeFile(type(error).__name__) from None
        self.current_member = None
        self._wait_whole()
        with open(self.path, "rb") as whole:
            self.input_bytes_total = self._progress_total = os.fstat(whole.fileno()).st_size
            with self._checked_archive(whole) as (_, members):
                if not _directory_matches(members, read):
                    raise NeedsWholeFile("central directory differs from the local headers")
        self.input_bytes_read = self._progress_total

    def _declared_size(self) -> int | None:
        """The size the download declared (None when it declared none)."""
        return self.growing.total if self.growing is not None else None

    def _wait_whole(self) -> None:
        """Waits until the download is done (the central directory is at the end)."""
        assert self.growing is not None
        self.growing.wait_finished(self._generation, self.interrupt)

    def _reopen_file(self) -> _Opened:
        file = self._open_file()
        return _Opened(file, file.tell)

    def _read_gzip(
        self, backend: Any, raw: io.BufferedReader | GrowingReader
    ) -> Iterator[dict[str, Any]]:
        def open_body() -> ByteSource:
            return _GzipBody(self._open_file())

        def reopen() -> _Opened:
            file = self._open_file()
            return _Opened(_GzipBody(file), file.tell, file.tell)

        spec = _Spec(None, open_body, reopen)
        body = gzip.GzipFile(fileobj=raw, mode="rb")
        yield from self._read_stream(backend, spec, _Opened(body, raw.tell, raw.tell), index=0)

    @contextlib.contextmanager
    def _checked_archive(
        self, file: IO[bytes]
    ) -> Iterator[tuple[zipfile.ZipFile, list[ConversationMember]]]:
        """The archive and its conversation members, after every whole-file check in one order
        (the entry cap before the directory is read, then the members' own): a ZIP read as it
        arrived is verified by exactly the checks a ZIP read whole gets."""
        check_central_directory(file, max_entries=self.limits.max_zip_entries)
        file.seek(0)
        try:
            archive = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, EOFError, ValueError) as error:
            raise CorruptArchive() from error
        with archive:
            members = find_conversation_members(archive)
            check_members(
                members,
                max_bytes=self.limits.max_export_bytes,
                max_ratio=self.limits.max_compression_ratio,
            )
            yield archive, members

    def _read_zip(self, backend: Any, raw: io.BufferedReader) -> Iterator[dict[str, Any]]:
        with self._checked_archive(raw) as (archive, members):
            self.members = tuple(member.name for member in members)
            self._progress_total = sum(member.info.compress_size for member in members)
            positions = {id(info): number for number, info in enumerate(archive.infolist())}
            indexes = [positions[id(member.info)] for member in members]
            del positions
            keep_only(archive, members)
            self._start_scan(
                ExportKind.ZIP, sum(member.info.file_size for member in members), indexes
            )
            finished = 0
            for index, member in enumerate(members):
                info = member.info
                self.current_member = member.name

                def open_member(
                    info: zipfile.ZipInfo = info, name: str = member.name
                ) -> ByteSource:
                    return _open_member(archive, info, name)

                def reopen(
                    info: zipfile.ZipInfo = info, name: str = member.name, finished: int = finished
                ) -> _Opened:
                    source = _open_member(archive, info, name)
                    return _Opened(source, partial(_file_position, raw, info, finished))

                spec = _Spec(member.name, open_member, reopen)
                opened: _Opened
                if self._scan is not None:  # the helper decompresses it already: read its copy
                    relayed = RelayedStream(self._scan, index, open_member)
                    opened = _Opened(relayed, partial(_relayed_position, relayed, info, finished))
                else:
                    opened = reopen()
                yield from self._read_stream(backend, spec, opened, index=index)
                finished += info.compress_size
            self.current_member = None

    # -- one JSON stream ------------------------------------------------------------------------

    def _read_stream(
        self, backend: Any, spec: _Spec, opened: _Opened, *, index: int
    ) -> Iterator[dict[str, Any]]:
        """The conversations of one JSON stream. If the parser meets a number it cannot hold,
        the stream is read again from its start with such numbers quoted (``export_numbers``),
        and the items already handled are passed over."""
        handled = found = 0
        quoter: QuotingStream | None = None
        counted = 0
        prefix: str | None = None
        while True:
            stream = _GuardedStream(
                self,
                spec,
                opened.source,
                opened.position,
                self._guard(index),
                compressed_position=opened.compressed_position,
                counted=counted,
            )
            try:
                first = stream.start()
                if not first:
                    return  # an empty or blank member: nothing in it
                prefix = _CONVERSATIONS_PREFIX.get(first)
                if prefix is None:
                    raise NotAnExport(describe(stream.head), member=spec.member)
                parsed: Any = stream if quoter is None else quoter
                if quoter is not None:
                    quoter.stream = stream
                seen = 0
                try:
                    for item in backend.items(parsed, prefix, use_float=True, buf_size=READ_SIZE):
                        stream.item_done()
                        seen += 1
                        if seen <= handled:
                            continue  # handled before the stream was read again
                        handled = seen
                        if type(item) is dict:
                            found += 1
                            self.conversations_read += 1
                            yield item
                        else:
                            self._skip_item(spec)
                        # Not held while the next item is built: the caller may be done with it
                        # (a conversation of tens of MB is ~4 times that in objects).
                        del item
                except (ijson.JSONError, UnicodeDecodeError) as error:
                    if quoter is not None or "overflow" not in str(error):
                        raise self._classify(
                            backend, error, stream, spec, exact=quoter is None
                        ) from None
                    quoter = QuotingStream(stream)
                    counted = stream.offset
                else:
                    stream.drain()
                    break
            finally:
                opened.source.close()
            opened = spec.reopen()
        if quoter is not None:
            self.numbers_quoted += quoter.quoter.quoted
        if prefix != "item" and not found:
            self._explain_empty_object(backend, spec, quoting=quoter is not None)

    def _skip_item(self, spec: _Spec) -> None:
        """Counts a list item that is not an object; too many mean the file is no export."""
        self.skipped_items += 1
        if self.skipped_items > MAX_NON_OBJECT_ITEMS:
            raise NotAnExport(
                f"a JSON list with more than {MAX_NON_OBJECT_ITEMS:,} entries that are not "
                "conversations",
                member=spec.member,
            )

    def _classify(
        self, backend: Any, error: Exception, stream: _GuardedStream, spec: _Spec, *, exact: bool
    ) -> ExportError:
        """The user-facing error for a parser failure. ijson's message quotes the input, so it
        is only inspected here, never passed on. Without ``exact`` (a stream read with numbers
        quoted, whose bytes the parser did not see as they are) a syntax error is located at
        the buffer it was found in."""
        text = str(error)
        if isinstance(error, UnicodeDecodeError) or "UTF8" in text:
            return InvalidUtf8(stream.locate_utf8_error(), member=spec.member)
        if "premature EOF" in text:
            return ExportTruncated(stream.offset, member=spec.member)
        if not exact:
            return InvalidJson(stream.last_start, member=spec.member, near=True)
        offset, found = _locate_syntax_error(backend, spec, stream)
        return InvalidJson(offset, member=spec.member, near=not found)

    def _explain_empty_object(self, backend: Any, spec: _Spec, *, quoting: bool) -> None:
        """A top-level object gave no conversations: say whether its list was empty or absent.

        Runs only on this failure path, stops at the ``conversations`` key or after
        ``EXPLAIN_LIMIT_BYTES``, and guards the stream again, so a hostile or huge file costs
        little the second time.
        """
        guard = StructureGuard(self.limits.max_depth, self.limits.max_key_bytes)
        replay = _GuardedStream(self, spec, spec.open(), None, guard, counting=False)
        parsed: Any = QuotingStream(replay) if quoting else replay
        keys: set[str] = set()
        try:
            replay.start()
            for path, event, value in backend.parse(parsed, buf_size=READ_SIZE):
                if replay.offset > EXPLAIN_LIMIT_BYTES:
                    break
                if path == "" and event == "map_key":
                    keys.add(value)
                elif path == "conversations":
                    if event == "start_array":
                        return  # an empty list: the caller's count decides (EmptyExport)
                    raise NotAnExport(
                        "JSON whose conversations entry is not a list", member=spec.member
                    )
        finally:
            replay.source.close()
        if "mapping" in keys:
            raise NotAnExport(
                "a single conversation rather than a whole export", member=spec.member
            )
        raise NotAnExport("a JSON object without a conversations list", member=spec.member)


class _LocalCopy:
    """A relayed member's data as this side would read it: opened only if the helper stopped
    before the member's end (damage: reading on here meets it), else passed over."""

    def __init__(self, walker: LocalHeaderWalker, entry: LocalEntry) -> None:
        self._walker = walker
        self._entry = entry
        self._data: MemberData | None = None

    def open(self) -> ByteSource:
        if self._data is not None:
            raise NeedsWholeFile("member must be read again")
        self._data = self._walker.open(self._entry)
        return self._data

    def pass_over(self) -> None:
        """After the member was read to its end: moves the walk past its data."""
        if self._data is None:
            self._walker.input.skip(self._entry.compress_size)  # checked by the helper
        elif not self._data.finished:
            raise NeedsWholeFile("member not read to its end")


def _arriving_position(relayed: RelayedStream, entry: LocalEntry) -> int:
    """Where in the archive reading a relayed member stands, estimated from its bytes."""
    share = relayed.delivered / entry.file_size if entry.file_size else 1.0
    return entry.data_offset + min(int(share * entry.compress_size), entry.compress_size)


def _read_again() -> ByteSource:
    """A member read as it arrives is not read a second time (a number too large for the
    parser, locating an error): the archive is read once whole instead."""
    raise NeedsWholeFile("member must be read again")


def _read_again_opened() -> _Opened:
    raise NeedsWholeFile("member must be read again")


def _directory_matches(members: list[ConversationMember], read: list[LocalEntry]) -> bool:
    """Whether the central directory's conversation files are exactly the members read from
    the local headers, in the same order, with the same name, place, method, flags, sizes and
    CRC-32 (the whole-file path would then read exactly the same bytes)."""
    if len(members) != len(read):
        return False
    for member, entry in zip(members, read, strict=True):
        info = member.info
        if (
            info.header_offset != entry.offset
            or info.filename != entry.name
            or info.orig_filename != entry.name
            or info.compress_type != entry.method
            or info.flag_bits != entry.flags
            or entry.crc != info.CRC
            or info.compress_size != entry.compress_size
            or info.file_size != entry.file_size
        ):
            return False
    return True


def _open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> ByteSource:
    try:
        return archive.open(info)
    except NotImplementedError as error:
        raise UnsupportedArchive(str(error) or "unknown method", member=name) from error
    except RuntimeError as error:  # zipfile's "File ... is encrypted, password required"
        raise EncryptedArchive(member=name) from error
    except (zipfile.BadZipFile, EOFError, ValueError, zlib.error) as error:
        raise CorruptArchive(member=name) from error


def _read_up_to(raw: io.BufferedReader | GrowingReader, size: int) -> bytes:
    """``size`` bytes, fewer only at the end of the file (a growing file's read returns what
    has arrived so far)."""
    data = raw.read(size)
    while len(data) < size:
        more = raw.read(size - len(data))
        if not more:
            break
        data += more
    return data


def _refuse_unknown(head: bytes, raw: io.BufferedReader | GrowingReader) -> None:
    """Raises the right error for a file that is none of ZIP, gzip, JSON."""
    body = head[len(UTF8_BOM) :] if head.startswith(UTF8_BOM) else head
    if not body.strip(JSON_WHITESPACE):
        # Only whitespace so far: look further before calling it empty.
        skipped = len(head)
        while skipped < MAX_LEADING_WHITESPACE:
            more = raw.read(SNIFF_BYTES)
            if not more:
                raise EmptyExport("the file is empty")
            stripped = more.lstrip(JSON_WHITESPACE)
            if stripped:
                if stripped[:1] in (b"[", b"{"):
                    return
                raise NotAnExport(describe(stripped))
            skipped += len(more)
        raise NotAnExport("whitespace only")
    looks_like = describe(head)
    if looks_like == "UTF-16 text":
        raise InvalidUtf8(None, encoding="UTF-16")
    raise NotAnExport(looks_like)


class _HasCheck(Protocol):
    """A structure guard: ``StructureGuard`` or its remote twin in ``scan``."""

    def check(self, chunk: bytes) -> Refusal | None: ...


class _GuardedStream:
    """The file object ijson reads: one JSON stream with every limit applied to each read.

    Errors found here are raised from ``read``; ijson passes exceptions from ``read`` through
    unchanged, after yielding the items it completed before.
    """

    def __init__(
        self,
        reader: ExportReader,
        spec: _Spec,
        source: ByteSource,
        position: Callable[[], int] | None,
        guard: StructureGuard | _HasCheck,
        *,
        counting: bool = True,
        compressed_position: Callable[[], int] | None = None,
        counted: int = 0,
    ) -> None:
        self.reader = reader
        self.spec = spec
        self.source = source
        self._compressed_position = compressed_position
        self._counted = counted  # bytes of this stream an earlier reading already counted
        self.head = b""
        self.offset = 0  # bytes of this stream produced so far (the BOM included)
        self.bom = False
        self._position = position
        self._counting = counting
        self._guard = guard
        self._pending = b""
        self._refused: ExportError | None = None
        self._since_item = 0
        self._last_size = 0
        self._last_chunk = b""
        self._last_start = 0
        self._previous_tail = b""
        self._eof = False

    # -- producing bytes ------------------------------------------------------------------------

    def _pull(self, size: int) -> bytes:
        """The next bytes of the source, counted and checked against the size limits."""
        member = self.spec.member
        interrupt = self.reader.interrupt
        if interrupt is not None:
            interrupt()
        try:
            data = self.source.read(size)
        except EOFError as error:  # a gzip body or a ZIP member cut short
            if member is None:
                raise ExportTruncated(self.offset) from error
            raise CorruptArchive(member=member, offset=self.offset) from error
        except (zipfile.BadZipFile, gzip.BadGzipFile) as error:
            # A CRC or length mismatch, found at the end: the damage can be anywhere before.
            raise CorruptArchive(member=member, kind="gzip" if member is None else "ZIP") from error
        except zlib.error as error:  # broken compressed data, found where it is broken
            kind = "gzip" if member is None else "ZIP"
            raise CorruptArchive(member=member, offset=self.offset, kind=kind) from error
        if not data:
            self._eof = True
            return b""
        self.offset += len(data)
        if not self._counting:
            return data
        reader = self.reader
        if self.offset > self._counted:
            reader.uncompressed_bytes_read += min(len(data), self.offset - self._counted)
        limits = reader.limits
        if reader.uncompressed_bytes_read > limits.max_export_bytes:
            raise ExportTooLarge(limits.max_export_bytes, member=member)
        if self._position is not None:
            position = self._position()
            reader.input_bytes_read = max(reader.input_bytes_read, position)
        compressed = self._compressed_position
        if compressed is not None and exceeds_ratio(
            self.offset, compressed(), limits.max_compression_ratio
        ):
            raise ZipBomb(member=member)
        return data

    def start(self) -> bytes:
        """Reads up to the first significant byte and returns it (``b""`` for a blank stream).

        The bytes read are kept for ijson; a UTF-8 BOM is dropped (offsets still count it).
        """
        data = self._pull(SNIFF_BYTES)
        if data.startswith(UTF8_BOM):
            self.bom = True
            data = data[len(UTF8_BOM) :]
        while not data.lstrip(JSON_WHITESPACE):
            more = self._pull(SNIFF_BYTES)
            if not more:
                return b""
            if len(data) + len(more) > MAX_LEADING_WHITESPACE:
                raise NotAnExport("whitespace only", member=self.spec.member)
            data += more
        self._pending = data
        self.head = data[:SNIFF_BYTES]
        return first_json_byte(data)

    def read(self, size: int = -1) -> bytes:
        """ijson's read: the next checked bytes (fewer than asked is fine, ``b""`` at the end)."""
        if size == 0:
            return b""
        if self._refused is not None:
            raise self._refused
        if self._pending:
            data, self._pending = self._pending, b""
            start = self.offset - len(data)
        else:
            data = self._pull(size if size > 0 else READ_SIZE)
            if not data:
                return b""
            start = self.offset - len(data)
        try:
            refusal = self._guard.check(data)
        except ScanStoppedAtDamage as stopped:
            self._meet_damage(stopped.offset)
        if refusal is not None:
            self._refused = NestingTooDeep(
                start + refusal.index,
                member=self.spec.member,
                reason=refusal.reason,
                near=refusal.kind == "key",
            )
            data = data[: refusal.index]
            if not data:
                raise self._refused
        self._since_item += len(data)
        limit = self.reader.limits.max_conversation_bytes
        if self._counting and self._since_item > limit:
            raise ConversationTooLarge(limit, start, member=self.spec.member)
        if self._last_chunk:
            self._previous_tail = _last_character(self._last_chunk)
        self._last_chunk = data
        self._last_start = start
        self._last_size = len(data)
        return data

    def _meet_damage(self, checked: int) -> NoReturn:
        """The helper stopped at damage after ``checked`` guarded bytes; the bytes past them were
        never checked, so read on without parsing until this stream meets the damage too
        (``_pull`` raises the error a person can act on). Nothing wrong nearby means the helper
        failed for reasons of its own: transient."""
        limit = checked + (len(UTF8_BOM) if self.bom else 0) + DAMAGE_SEARCH_BYTES
        while self.offset < limit and self._pull(READ_SIZE):
            pass
        raise helper_failed()

    @property
    def last_start(self) -> int:
        """Where the last buffer handed to the parser starts in the stream."""
        return self._last_start

    def item_done(self) -> None:
        """ijson finished an item in the last buffer: a conversation's bytes start there at most."""
        self._since_item = self._last_size

    def drain(self) -> None:
        """Reads to the end of the source (a ZIP member's CRC is checked at its end)."""
        while not self._eof:
            self._pull(READ_SIZE)

    # -- locating errors (error path only) -------------------------------------------------------

    def locate_utf8_error(self) -> int:
        """The offset of the first invalid UTF-8 byte in the last buffer (or its start)."""
        data = self._previous_tail + self._last_chunk
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            return self._last_start - len(self._previous_tail) + error.start
        return self._last_start


def _file_position(raw: io.BufferedReader, info: zipfile.ZipInfo, finished: int) -> int:
    """Compressed bytes of the members read so far, from the archive file's position."""
    inside = min(max(raw.tell() - info.header_offset, 0), info.compress_size)
    return finished + inside


def _relayed_position(relayed: RelayedStream, info: zipfile.ZipInfo, finished: int) -> int:
    """The same, estimated from the relayed bytes (the parser does not read the archive)."""
    share = relayed.delivered / info.file_size if info.file_size else 1.0
    return finished + min(int(share * info.compress_size), info.compress_size)


def _last_character(chunk: bytes) -> bytes:
    """The bytes of ``chunk``'s last character, complete or not (a UTF-8 sequence may be split
    between buffers; decoding it again with the next buffer finds an error's exact byte)."""
    for back in range(1, min(4, len(chunk)) + 1):
        if chunk[-back] & 0xC0 != 0x80:  # not a continuation byte: the character starts here
            return chunk[-back:]
    return chunk[-4:]


class _Replay:
    """Feeds a reopened stream to a parser exactly as the failed one was fed, then byte by
    byte from ``slow_from`` on, so the parser's failure pinpoints the offending byte."""

    def __init__(self, source: ByteSource, skip: int, slow_from: int) -> None:
        self.source = source
        self.delivered = 0
        self._slow_from = slow_from
        if skip:
            source.read(skip)

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        if self.delivered < self._slow_from:
            size = min(READ_SIZE, self._slow_from - self.delivered)
        else:
            size = 1
        data = self.source.read(size)
        self.delivered += len(data)
        return data


def _locate_syntax_error(backend: Any, spec: _Spec, stream: _GuardedStream) -> tuple[int, bool]:
    """(offset, exact): the byte where the parser fails, found by parsing again on this
    failure path only; the start of the failing buffer when that would cost too much."""
    buffer_start = stream._last_start
    skip = len(UTF8_BOM) if stream.bom else 0
    if buffer_start > REPARSE_LIMIT_BYTES:
        return buffer_start, False
    replay = _Replay(spec.open(), skip, buffer_start - skip)
    try:
        for _ in backend.basic_parse(replay, buf_size=READ_SIZE):
            if replay.delivered > buffer_start - skip + READ_SIZE:
                break
    except (ijson.JSONError, UnicodeDecodeError):
        return skip + replay.delivered - 1, True
    except (ExportError, OSError, EOFError, zipfile.BadZipFile, zlib.error):
        pass
    except (ValueError, SystemError):
        # yajl fed one byte at a time can fail inside Python's own integer conversion (a
        # number of over 4,300 digits): no exact offset then.
        pass
    finally:
        replay.source.close()
    return buffer_start, False
