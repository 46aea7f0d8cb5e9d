"""A ZIP member as the scan helper relays it: the parser's byte source when the helper runs.

The helper decompresses and checks every member anyway (``scan``); reading its bytes
from the pipe costs the parser a small fraction of decompressing them again, which was a third of
its reading time. Everything the parser needs from a ZIP member source is kept:

* reads return at most the size asked for, and ``b""`` only at the member's true end, after the
  helper has read it whole and its CRC matched;
* when the helper stopped early (damage it met, or a refusal), the member is opened again from
  the archive, the bytes already delivered are skipped, and reading goes on there, so the damage
  surfaces from the parser's own read and is reported exactly as without the helper;
* a helper that died is a ``TransientJobError``: the bytes it did not relay were never checked.
"""

from __future__ import annotations

from collections.abc import Callable

from soulworker.export.scan import ByteSource, ScanProcess, ScanStoppedAtDamage

SKIP_READ_BYTES = 1024 * 1024
"""Read size when skipping what was already delivered in a reopened member (the error path)."""


class RelayedStream:
    """Stream ``index`` of the helper's job, read from the helper's pipe (a ``ByteSource``).

    ``reopen`` opens the same stream from the archive; it is used only if the helper stops
    before the end. ``delivered`` counts the bytes returned so far.
    """

    def __init__(self, process: ScanProcess, index: int, reopen: Callable[[], ByteSource]) -> None:
        self.delivered = 0
        self._process = process
        self._index = index
        self._reopen = reopen
        self._current = b""
        self._position = 0
        self._local: ByteSource | None = None

    def read(self, size: int = -1, /) -> bytes:
        data = self._local.read(size) if self._local is not None else self._relayed(size)
        self.delivered += len(data)
        return data

    def _relayed(self, size: int) -> bytes:
        current, position = self._current, self._position
        if position >= len(current):
            try:
                relayed = self._process.next_relayed(self._index)
            except ScanStoppedAtDamage:
                self._local = self._reopened()
                return self._local.read(size)
            if relayed is None:  # asked again, the helper's answer stays the same
                return b""
            current, position = self._current, self._position = relayed, 0
        if size < 0 or position + size >= len(current):
            data = current[position:] if position else current
            self._current, self._position = b"", 0
            return data
        self._position = position + size
        return current[position : position + size]

    def _reopened(self) -> ByteSource:
        """The member opened from the archive, positioned after the bytes already delivered."""
        source = self._reopen()
        remaining = self.delivered
        while remaining > 0:
            skipped = source.read(min(remaining, SKIP_READ_BYTES))
            if not skipped:
                break  # shorter than what was relayed: reading on meets the end or the damage
            remaining -= len(skipped)
        return source

    def close(self) -> None:
        self._process.abandon(self._index)
        self._current = b""
        if self._local is not None:
            self._local.close()
