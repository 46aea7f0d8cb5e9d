"""Runs the CPU work of a parse in a thread of its own, and hands its output to the event loop.

Why a thread: everything of the parse that costs CPU (ijson building objects, reading a ZIP's
central directory, linearizing, chunking, sampling) is synchronous Python or C that holds the
GIL for as long as a step takes: a hostile upload can make one step last seconds (a run of
``[0,0,0,…]``, a 64 MB conversation, 300k ZIP entries). On the event loop that stops every job of
the process, heartbeats included. In a thread, CPython hands the GIL to the loop thread at
least every ``sys.getswitchinterval()`` (5 ms) whatever the step, so the loop, its heartbeats and
the other jobs keep running. All database and network I/O stays on the loop: the thread only
produces values. See docs/hostile-uploads.md for the measurements behind the choice.

The channel is one-way and bounded: the thread ``put``s items with a size, and before it starts
on more work it calls ``wait_for_room``, which waits while ``max_bytes`` or more are in flight:
waiting for the loop, or taken by it and not yet written (the loop has written a batch when it
comes back to ``take`` the next). So a slow database slows the parse instead of filling memory,
and a single huge item (one 60 MB conversation's chunks) is written before the next conversation
is even read. The loop ``take``s everything waiting at once, which keeps the thread hand-offs
rare. Either side can end it: the thread with ``finish`` (a result or an exception), the loop
with ``stop``, after which the thread's next ``put``, ``wait_for_room`` or ``check_stopped``
raises ``ParseStopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_BYTES = 2 * 1024 * 1024
"""Output in flight (waiting for the loop or being written by it) before the thread waits: many
conversations' rows, so the database is never starved of rows, while memory stays bounded
whatever the export."""

WAKE_BYTES = 256 * 1024
"""Output gathered before the loop is woken to write it (or sooner, when the thread has to wait
or is done). Waking it for every conversation cost ~10 % of a parse's time in GIL hand-overs."""

SWITCH_INTERVAL_SECONDS = 0.0005
"""The interpreter's switch interval while parses run (CPython's default is 5 ms): how long a
thread that wants the GIL waits before the holder must give it up. The parse thread gives up
the GIL at every read of the export; when the loop thread had taken it meanwhile, the parse
waited up to the interval to get it back, and a ZIP job (three pipe reads per 256 KiB) took
~8-10 % longer than with the parse on the loop. At 0.5 ms it is as fast as before, for the
same CPU (bench/compare_trees.py, 10 interleaved pairs), and the loop waits at most that long.
Only threads that both want the GIL are affected: an idle process pays nothing."""

STOP_POLL_SECONDS = 0.25
"""How often a thread waiting for room checks whether the loop stopped it."""


class ParseStopped(Exception):
    """The loop stopped the parse (the job was cancelled, lost its lease or hit its time limit);
    raised in the parse thread so that it unwinds, closing its files and helper process."""


class ParseChannel(Generic[T, R]):
    """Items of type ``T`` from a parse thread to the loop, then the thread's result ``R``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._loop = loop
        self._lock = threading.Condition()
        self._items: deque[T] = deque()
        self._waiting = 0  # bytes put and not taken
        self._writing = 0  # bytes taken by the loop, written once it takes again
        self._woken = False  # the loop was asked to take and has not yet
        self._stopped = False
        self._finished = False
        self._result: R | None = None
        self._error: BaseException | None = None
        self._wakeup = asyncio.Event()

    # -- the thread's side ----------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        return self._stopped

    def check_stopped(self) -> None:
        """Raise ``ParseStopped`` if the loop has stopped the parse (cheap: one attribute)."""
        if self._stopped:
            raise ParseStopped()

    def put(self, item: T, size: int) -> None:
        """Hand ``item`` (``size`` bytes of output) to the loop."""
        with self._lock:
            if self._stopped:
                raise ParseStopped()
            self._items.append(item)
            self._waiting += size
            wake = self._waiting >= WAKE_BYTES and not self._woken
            self._woken = self._woken or wake
        if wake:
            self._wake_loop()

    def wait_for_room(self) -> None:
        """Wait while ``max_bytes`` or more are in flight; raises ``ParseStopped`` if stopped."""
        if self._waiting + self._writing < self.max_bytes and not self._stopped:
            return  # the common case, without the lock: a stale read lets one more item through
        with self._lock:
            wake = bool(self._items) and not self._woken
            self._woken = self._woken or wake
        if wake:
            self._wake_loop()
        with self._lock:
            while self._waiting + self._writing >= self.max_bytes and not self._stopped:
                self._lock.wait(STOP_POLL_SECONDS)
            if self._stopped:
                raise ParseStopped()

    def finish(self, result: R | None = None, error: BaseException | None = None) -> None:
        """The thread is done: with its result, or with the exception that ended it."""
        with self._lock:
            self._finished = True
            self._result = result
            self._error = error
        self._wake_loop()

    def _wake_loop(self) -> None:
        # A closed loop (RuntimeError) has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wakeup.set)

    # -- the loop's side ------------------------------------------------------------------------

    async def take(self, wait_seconds: float) -> list[T] | None:
        """Everything waiting (possibly ``[]`` after ``wait_seconds`` without output), or
        ``None`` once the thread has finished and everything was taken. Taking again says the
        items taken before are written."""
        for waited in (False, True):
            with self._lock:
                self._writing = 0
                self._lock.notify_all()
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    self._writing, self._waiting = self._waiting, 0
                    self._woken = False
                    return items
                if self._finished:
                    return None
                # Cleared under the lock: a put after this point sets it again.
                self._wakeup.clear()
            if waited:
                return []
            if not await _wait_event(self._wakeup, wait_seconds):
                return []
        return []

    def outcome(self) -> R:
        """The thread's result; raises the exception it finished with."""
        with self._lock:
            if not self._finished:
                raise RuntimeError("the parse thread has not finished")
            if self._error is not None:
                raise self._error
            assert self._result is not None
            return self._result

    def stop(self) -> None:
        """Ask the thread to stop at its next ``put``, ``wait_for_room`` or ``check_stopped``."""
        with self._lock:
            self._stopped = True
            self._items.clear()
            self._waiting = self._writing = 0
            self._lock.notify_all()

    async def wait_finished(self, within_seconds: float) -> bool:
        """Wait up to ``within_seconds`` for the thread to finish; whether it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_seconds
        while True:
            with self._lock:
                if self._finished:
                    return True
                self._wakeup.clear()
            remaining = deadline - loop.time()
            if remaining <= 0 or not await _wait_event(self._wakeup, remaining):
                return False


async def _wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; whether it was set.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives as the
    event is set, and the thread sets this one hundreds of times a second, so a cancelled job
    would have parsed on to the end.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


def start_parse_thread(
    channel: ParseChannel[T, R], work: Callable[[ParseChannel[T, R]], R], *, name: str
) -> threading.Thread:
    """Run ``work(channel)`` in a new daemon thread that reports its end through the channel.

    The thread runs in a copy of the caller's context, so log lines it writes carry the job's
    bound fields. It is a daemon thread: a process that must exit is never held up by a parse
    that has not yet noticed it was stopped.
    """
    context = contextvars.copy_context()
    if sys.getswitchinterval() > SWITCH_INTERVAL_SECONDS:
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)  # process-wide, once: see the constant

    def main() -> None:
        try:
            result = context.run(work, channel)
        except BaseException as error:  # handed to the loop, which raises it there
            channel.finish(error=error)
        else:
            channel.finish(result=result)

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()
    return thread
