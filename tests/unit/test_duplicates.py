"""Duplicate conversations (docs/pipeline.md): the newest ``update_time`` wins; a tie goes to the
larger mapping, then to the copy read later. Missing or unusable times lose to any real one."""

from __future__ import annotations

import math
import stat
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soulworker.conversations import duplicates
from soulworker.conversations.duplicates import (
    RECORD_BYTES,
    DuplicateResolver,
    SeenConversation,
    Verdict,
    conversation_key,
)


def read(
    resolver: DuplicateResolver,
    conversation_id: str,
    update_time: float | None,
    mapping_size: int,
    chunks: range = range(0),
    messages: int = 0,
) -> tuple[Verdict, SeenConversation | None]:
    """What the parse pass does with one copy: judge it, and remember it unless it is stale."""
    verdict, previous = resolver.judge(conversation_id, update_time, mapping_size)
    if verdict is not Verdict.STALE:
        resolver.keep(conversation_id, update_time, mapping_size, chunks, messages)
    return verdict, previous


def test_the_first_copy_is_new_and_nothing_is_replaced() -> None:
    resolver = DuplicateResolver()
    assert read(resolver, "a", 10.0, 3) == (Verdict.NEW, None)
    assert read(resolver, "b", 5.0, 3) == (Verdict.NEW, None)
    assert len(resolver) == 2
    assert resolver.duplicates == 0


def test_a_newer_copy_read_later_replaces_the_kept_one_and_returns_what_to_undo() -> None:
    resolver = DuplicateResolver()
    read(resolver, "a", 10.0, 3, chunks=range(4, 7), messages=5)
    verdict, previous = read(resolver, "a", 11.0, 2, chunks=range(9, 10), messages=1)
    assert verdict is Verdict.REPLACES
    assert previous is not None
    assert (previous.chunk_indexes, previous.message_count) == (range(4, 7), 5)
    assert resolver.duplicates == 1
    assert len(resolver) == 1


def test_an_older_copy_read_later_is_stale_whatever_its_size() -> None:
    resolver = DuplicateResolver()
    read(resolver, "a", 10.0, 3)
    assert read(resolver, "a", 9.0, 500) == (Verdict.STALE, None)
    assert resolver.duplicates == 1


@pytest.mark.parametrize(
    ("first_size", "second_size", "expected"),
    [
        (3, 4, Verdict.REPLACES),  # tie on time: the larger mapping wins
        (4, 3, Verdict.STALE),
        (3, 3, Verdict.REPLACES),  # tie on both: the copy read later wins
    ],
)
def test_equal_times_go_to_the_larger_mapping_then_to_the_later_copy(
    first_size: int, second_size: int, expected: Verdict
) -> None:
    resolver = DuplicateResolver()
    read(resolver, "a", 10.0, first_size)
    assert read(resolver, "a", 10.0, second_size)[0] is expected


@pytest.mark.parametrize("unusable", [None, math.nan, math.inf, -math.inf])
def test_a_copy_without_a_usable_time_loses_to_one_with_a_time(unusable: float | None) -> None:
    resolver = DuplicateResolver()
    read(resolver, "a", unusable, 100)
    assert read(resolver, "a", 1.0, 1)[0] is Verdict.REPLACES
    assert read(resolver, "a", unusable, 1000)[0] is Verdict.STALE


def test_copies_without_times_are_decided_by_mapping_size_then_order() -> None:
    resolver = DuplicateResolver()
    read(resolver, "a", None, 5)
    assert read(resolver, "a", None, 4)[0] is Verdict.STALE
    assert read(resolver, "a", None, 5)[0] is Verdict.REPLACES


def test_a_third_copy_is_compared_with_the_copy_kept_not_the_first_one() -> None:
    resolver = DuplicateResolver()
    read(resolver, "a", 10.0, 3, chunks=range(0, 2))
    read(resolver, "a", 20.0, 3, chunks=range(5, 8))
    # Newer than the first copy but older than the one kept: stale.
    assert read(resolver, "a", 15.0, 9)[0] is Verdict.STALE
    verdict, previous = read(resolver, "a", 30.0, 1, chunks=range(8, 9))
    assert verdict is Verdict.REPLACES
    assert previous is not None and previous.chunk_indexes == range(5, 8)
    assert resolver.duplicates == 3


Copy = tuple[int, float | None, int]  # (id number, update_time, mapping size)

copies = st.lists(
    st.tuples(
        st.integers(0, 4),
        st.one_of(st.none(), st.sampled_from([1.0, 2.0, 3.0, math.nan])),
        st.integers(0, 3),
    ),
    max_size=40,
)


@given(copies)
def test_the_copy_kept_is_the_best_by_time_then_size_then_position(stream: list[Copy]) -> None:
    resolver = DuplicateResolver()
    kept: dict[int, int] = {}  # id number -> position of the copy kept so far
    for position, (number, update_time, size) in enumerate(stream):
        verdict, previous = read(
            resolver, f"c{number}", update_time, size, chunks=range(position, position + 1)
        )
        if verdict is Verdict.NEW:
            assert number not in kept
        elif verdict is Verdict.REPLACES:
            # What the pass must undo is exactly the copy kept until now.
            assert previous is not None
            assert previous.chunk_indexes == range(kept[number], kept[number] + 1)
        if verdict is not Verdict.STALE:
            kept[number] = position

    def rank(position: int) -> tuple[float, int, int]:
        _, update_time, size = stream[position]
        usable = update_time is not None and math.isfinite(update_time)
        return (update_time if usable and update_time is not None else -math.inf, size, position)

    for number, position in kept.items():
        mine = [p for p, copy in enumerate(stream) if copy[0] == number]
        assert position == max(mine, key=rank)
    assert len(resolver) == len(kept)
    assert resolver.duplicates == len(stream) - len(kept)


# -- memory: a fixed-size key per conversation, and the registry on disk past a fixed size -------


@given(stream=copies)
def test_a_registry_on_disk_decides_exactly_like_one_in_memory(
    tmp_path_factory: pytest.TempPathFactory, stream: list[Copy]
) -> None:
    spill = tmp_path_factory.mktemp("seen") / "seen.sqlite"
    in_memory = DuplicateResolver()
    on_disk = DuplicateResolver(spill_path=spill, memory_bytes=1)  # spills at the first keep
    try:
        for position, (number, update_time, size) in enumerate(stream):
            chunks = range(position, position + 1)
            expected = read(in_memory, f"c{number}", update_time, size, chunks, messages=number)
            assert read(on_disk, f"c{number}", update_time, size, chunks, messages=number) == (
                expected
            )
        assert len(on_disk) == len(in_memory)
        assert on_disk.duplicates == in_memory.duplicates
    finally:
        on_disk.close()


def test_records_written_to_disk_in_batches_are_found_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duplicates, "WRITE_BUFFER_RECORDS", 7)
    resolver = DuplicateResolver(spill_path=tmp_path / "seen", memory_bytes=10 * RECORD_BYTES)
    try:
        for number in range(100):
            unknown = (("odd_type", number),) if number % 3 == 0 else ()
            verdict, _ = resolver.judge(f"c{number}", 1.0, 1)
            assert verdict is Verdict.NEW
            resolver.keep(
                f"c{number}", 1.0, 1, range(number, number + 1), 2, unknown_content_types=unknown
            )
        assert resolver.spilled
        for number in range(100):
            verdict, previous = resolver.judge(f"c{number}", 2.0, 1)
            assert verdict is Verdict.REPLACES
            assert previous is not None
            assert previous.chunk_indexes == range(number, number + 1)
            assert previous.unknown_content_types == (
                (("odd_type", number),) if number % 3 == 0 else ()
            )
            resolver.keep(f"c{number}", 2.0, 1, range(200 + number, 201 + number), 2)
        assert len(resolver) == 100
        assert resolver.judge("c5", 3.0, 1)[1] == SeenConversation(2.0, 1, range(205, 206), 2)
    finally:
        resolver.close()


def test_the_spill_file_is_private_and_removed_at_the_end(tmp_path: Path) -> None:
    spill = tmp_path / "seen"
    resolver = DuplicateResolver(spill_path=spill, memory_bytes=1)
    read(resolver, "a", 1.0, 1)
    assert resolver.spilled
    assert stat.S_IMODE(spill.stat().st_mode) == 0o600
    resolver.close()
    assert not spill.exists()


def test_an_id_of_any_length_is_one_fixed_size_key() -> None:
    long_a = "a" * 1_000_000
    long_b = "a" * 999_999 + "b"
    assert len(conversation_key(long_a)) == len(conversation_key("x")) == 16
    resolver = DuplicateResolver()
    assert read(resolver, long_a, 1.0, 1)[0] is Verdict.NEW
    assert read(resolver, long_b, 1.0, 1)[0] is Verdict.NEW  # differs only in its last character
    assert read(resolver, long_a, 2.0, 1)[0] is Verdict.REPLACES
    assert read(resolver, "\udc80", 1.0, 1)[0] is Verdict.NEW  # a lone surrogate is an id too


def test_memory_stays_flat_once_the_registry_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 256 KiB memory tier and 2,048-record write batches (the defaults: 8 MiB, 16,384) keep
    # the test quick: both counts below go past both.
    monkeypatch.setattr(duplicates, "WRITE_BUFFER_RECORDS", 2048)

    def peak_for(count: int) -> int:
        resolver = DuplicateResolver(spill_path=tmp_path / f"seen-{count}", memory_bytes=256 << 10)
        tracemalloc.start()
        try:
            for number in range(count):
                read(resolver, f"conversation-{number:08d}", 1.0, 3, range(number, number + 1), 2)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            resolver.close()

    small, large = peak_for(10_000), peak_for(60_000)
    assert large < small + 1024 * 1024, (small, large)  # six times the conversations
    assert large < 8 * 1024 * 1024  # in memory they would take ~15 MB; 1M would take 250
