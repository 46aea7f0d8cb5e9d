"""A file that is still being downloaded, read by a parse that follows the download.

The download (on the event loop) writes the export to its private temp file and *publishes*
how many bytes are in the file so far; the parse (in its own thread) reads the same file through
a :class:`GrowingReader`, which returns what is published and, past it, waits on a
``threading.Condition`` (no busy-waiting) until more is published, the download is finished
(then the end of the file is the end of the export), or it failed. docs/pipeline.md, "Parsing
while the export downloads", says why and what each side guarantees:

* a resume with ``Range`` after a dropped connection only appends: the reader sees nothing of it;
* a restart (the object changed: a new ETag) truncates the file and starts a new *generation*:
  every reader of an older generation raises :class:`DownloadRestarted` at its next read, so
  the parse starts over on the new object, never mixing two versions;
* a failed or abandoned download wakes every reader with :class:`DownloadAbandoned`.

Everything here is thread-safe; the writer's methods never block for more than the lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

WAIT_POLL_SECONDS = 0.25
"""While a reader waits for bytes, how often it calls its ``interrupt`` (a stopped parse must
notice within this); publishing, finishing or failing wakes it at once."""


class DownloadRestarted(Exception):
    """The object changed under the download (a new ETag), which started over from byte 0:
    whatever was read of the old version must be thrown away."""


class DownloadAbandoned(Exception):
    """The download failed or was stopped; its own error is what the job reports."""


class GrowingFile:
    """What the download has made durable in ``path`` so far; see the module docstring.

    Writer side (the download): ``total_known``, ``written``, ``restarted``, ``finish``,
    ``abandon``. Reader side (any thread): ``open``, ``wait_finished`` and the properties.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Condition()
        self._published = 0
        self._total: int | None = None
        self._generation = 0
        self._finished = False
        self._abandoned = False

    # -- the download's side ------------------------------------------------------------------

    def total_known(self, total: int | None) -> None:
        """The size the object declares (for progress; ``None`` when it declares none)."""
        with self._lock:
            self._total = total

    def written(self, size: int) -> None:
        """The file now holds ``size`` bytes of the current generation, all written."""
        with self._lock:
            if size > self._published:
                self._published = size
                self._lock.notify_all()

    def restarted(self) -> None:
        """The file was truncated to start over on a changed object."""
        with self._lock:
            self._generation += 1
            self._published = 0
            self._total = None
            self._lock.notify_all()

    def finish(self, size: int) -> None:
        """The download is complete: the file holds exactly ``size`` bytes, the whole export."""
        with self._lock:
            self._published = size
            self._total = size
            self._finished = True
            self._lock.notify_all()

    def abandon(self) -> None:
        """The download failed or was stopped: readers stop waiting (idempotent; a finished
        download stays finished)."""
        with self._lock:
            if not self._finished:
                self._abandoned = True
                self._lock.notify_all()

    # -- the readers' side --------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def published(self) -> int:
        return self._published

    @property
    def total(self) -> int | None:
        """The export's size when known (declared by the object, or final), else ``None``."""
        return self._total

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def open(
        self, interrupt: Callable[[], None] | None = None, *, generation: int | None = None
    ) -> GrowingReader:
        """A reader from byte 0 of the current generation (or of ``generation``, which must be
        current: a reader opened for an older one raises ``DownloadRestarted`` on first read)."""
        return GrowingReader(
            self, self._generation if generation is None else generation, interrupt
        )

    def wait_available(
        self, position: int, generation: int, interrupt: Callable[[], None] | None
    ) -> int:
        """Bytes readable from ``position`` on, waiting until there is at least one or the
        download is finished (0 then means the end of the export)."""
        with self._lock:
            while True:
                self._check(generation)
                available = self._published - position
                if available > 0 or self._finished:
                    return max(available, 0)
                if interrupt is None:
                    self._lock.wait()
                    continue
                self._lock.wait(WAIT_POLL_SECONDS)
                if self._published <= position and not self._finished:
                    # Outside the lock: interrupt may itself wait (for room to send rows).
                    self._lock.release()
                    try:
                        interrupt()
                    finally:
                        self._lock.acquire()

    def wait_finished(self, generation: int, interrupt: Callable[[], None] | None) -> None:
        """Waits until the whole export is in the file (for a reader that needs its end first,
        a ZIP's central directory)."""
        while not self._finished:
            position = self._published
            self.wait_available(position, generation, interrupt)
        self.check(generation)

    def check(self, generation: int) -> None:
        """Raises unless ``generation`` is current and the download is not abandoned."""
        with self._lock:
            self._check(generation)

    def _check(self, generation: int) -> None:
        if generation != self._generation:
            raise DownloadRestarted()
        if self._abandoned:
            raise DownloadAbandoned()


class GrowingReader:
    """A binary file object over a :class:`GrowingFile`: ``read`` returns only published bytes,
    waits for more past them, and returns ``b""`` only at the end of a finished download.
    ``seek`` and ``tell`` work within what is published (``seek`` to the end waits for it)."""

    def __init__(
        self, growing: GrowingFile, generation: int, interrupt: Callable[[], None] | None
    ) -> None:
        self.growing = growing
        self.generation = generation
        self.name = growing.path
        self.mode = "rb"
        self._interrupt = interrupt
        self._file = open(growing.path, "rb")  # noqa: SIM115 - closed by close()
        self._position = 0

    def read(self, size: int = -1, /) -> bytes:
        if size == 0:
            return b""
        available = self.growing.wait_available(self._position, self.generation, self._interrupt)
        if available == 0:
            return b""
        if size < 0 or size > available:
            size = available
        data = self._file.read(size)
        # The download calls ``restarted`` before it truncates the file: if this read raced a
        # restart, the generation has changed by now, and its bytes are never used.
        self.growing.check(self.generation)
        self._position += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        if whence == os.SEEK_END:
            self.growing.wait_finished(self.generation, self._interrupt)
            offset += self.growing.published
        elif whence == os.SEEK_CUR:
            offset += self._position
        self._position = self._file.seek(offset)
        return self._position

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def __enter__(self) -> GrowingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
