"""The channel between the parse thread and the event loop, with real threads: order, the bound,
stopping from either side, errors carried across, and cancellation that is never lost; and the
stall monitor that measures the loop."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from soulworker.pipeline.parse_thread import (
    SWITCH_INTERVAL_SECONDS,
    ParseChannel,
    ParseStopped,
    start_parse_thread,
)
from soulworker.pipeline.stall_monitor import StallMonitor


async def drain(channel: ParseChannel[int, str]) -> list[int]:
    taken: list[int] = []
    while (items := await channel.take(0.05)) is not None:
        taken.extend(items)
    return taken


async def test_items_arrive_in_order_then_the_result() -> None:
    channel: ParseChannel[int, str] = ParseChannel(asyncio.get_running_loop(), max_bytes=100)

    def work(out: ParseChannel[int, str]) -> str:
        for number in range(5_000):
            out.put(number, 7)
        return "done"

    thread = start_parse_thread(channel, work, name="test-parse")
    assert await drain(channel) == list(range(5_000))
    assert channel.outcome() == "done"
    thread.join(timeout=5)


async def test_the_thread_waits_while_the_channel_is_full() -> None:
    channel: ParseChannel[int, str] = ParseChannel(asyncio.get_running_loop(), max_bytes=10)
    put = 0

    def work(out: ParseChannel[int, str]) -> str:
        nonlocal put
        for number in range(100):
            out.wait_for_room()
            out.put(number, 4)
            put += 1
        return "done"

    start_parse_thread(channel, work, name="test-parse")
    await asyncio.sleep(0.3)  # nobody takes: the thread stops at the bound
    assert put == 3  # 4 + 4 + 4 bytes: room was checked at 0, 4 and 8
    assert await drain(channel) == list(range(100))


async def test_items_being_written_count_until_the_loop_comes_back() -> None:
    channel: ParseChannel[int, str] = ParseChannel(asyncio.get_running_loop(), max_bytes=10)
    put = 0

    def work(out: ParseChannel[int, str]) -> str:
        nonlocal put
        out.put(0, 25)  # one item over the bound: allowed, alone
        put += 1
        out.wait_for_room()
        out.put(1, 1)
        put += 1
        return "done"

    start_parse_thread(channel, work, name="test-parse")
    assert await channel.take(5) == [0]
    await asyncio.sleep(0.3)  # the loop is "writing" item 0: the thread must not go on
    assert put == 1
    assert await channel.take(5) == [1]  # coming back means 0 is written
    assert await channel.take(5) is None
    assert put == 2


async def test_an_error_in_the_thread_is_raised_on_the_loop() -> None:
    channel: ParseChannel[int, str] = ParseChannel(asyncio.get_running_loop())

    def work(out: ParseChannel[int, str]) -> str:
        out.put(1, 1)
        raise ValueError("broken export")

    start_parse_thread(channel, work, name="test-parse")
    assert await drain(channel) == [1]
    with pytest.raises(ValueError, match="broken export"):
        channel.outcome()


async def test_stopping_ends_a_thread_waiting_for_room_and_one_checking() -> None:
    loop = asyncio.get_running_loop()
    full: ParseChannel[int, str] = ParseChannel(loop, max_bytes=1)
    busy: ParseChannel[int, str] = ParseChannel(loop)

    def fill(out: ParseChannel[int, str]) -> str:
        while True:
            out.wait_for_room()
            out.put(0, 1)

    def spin(out: ParseChannel[int, str]) -> str:
        while True:
            out.check_stopped()

    threads = [
        start_parse_thread(full, fill, name="test-fill"),
        start_parse_thread(busy, spin, name="test-spin"),
    ]
    await asyncio.sleep(0.1)
    for channel in (full, busy):
        channel.stop()
        assert await channel.wait_finished(5)
        with pytest.raises(ParseStopped):
            channel.outcome()
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()


async def test_a_cancelled_take_is_cancelled_while_the_thread_keeps_putting() -> None:
    # asyncio.wait_for on Python 3.11 returns the result instead of raising when the
    # cancellation and the awaited event come together; the thread sets the event all the time.
    loop = asyncio.get_running_loop()
    for _ in range(20):
        channel: ParseChannel[int, str] = ParseChannel(loop, max_bytes=10**9)

        def work(out: ParseChannel[int, str]) -> str:
            while True:
                out.put(0, 1)

        start_parse_thread(channel, work, name="test-parse")

        async def consume(channel: ParseChannel[int, str] = channel) -> None:
            while await channel.take(0.05) is not None:
                await asyncio.sleep(0)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        channel.stop()
        assert await channel.wait_finished(5)


async def test_the_stall_monitor_sees_a_blocked_loop() -> None:
    monitor = StallMonitor()
    async with monitor.watching():
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # the loop is blocked, as a parse on it would block it
        await asyncio.sleep(0.05)
    assert 0.25 <= monitor.max_stall_seconds < 5
    assert monitor.wakeups >= 2


def test_the_parse_thread_does_not_keep_the_process_alive() -> None:
    loop = asyncio.new_event_loop()
    try:
        channel: ParseChannel[int, str] = ParseChannel(loop)
        thread = start_parse_thread(channel, lambda out: "done", name="test-parse")
        assert thread.daemon
        thread.join(timeout=5)
    finally:
        loop.close()


def test_a_parse_thread_shortens_the_interpreters_switch_interval() -> None:
    before = sys.getswitchinterval()
    loop = asyncio.new_event_loop()
    try:
        sys.setswitchinterval(0.005)  # CPython's default
        channel: ParseChannel[int, str] = ParseChannel(loop)
        start_parse_thread(channel, lambda out: "done", name="test-parse").join(timeout=5)
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECONDS)
        sys.setswitchinterval(0.0001)  # already shorter: left alone
        start_parse_thread(channel, lambda out: "done", name="test-parse").join(timeout=5)
        assert sys.getswitchinterval() == pytest.approx(0.0001)
    finally:
        sys.setswitchinterval(before)
        loop.close()
