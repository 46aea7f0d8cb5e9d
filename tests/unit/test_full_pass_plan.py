"""The full-pass plan: which chunks are read within the token budget, and how they are batched."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from soulworker.soulprint.full_pass_plan import (
    EXCERPT_OVERHEAD_TOKENS,
    ChunkStat,
    FullPassPlan,
    plan_full_pass,
)

BASE = datetime(2026, 1, 1, tzinfo=UTC)
NO_BUDGET_LIMIT = 10**9


def stat(
    index: int,
    tokens: int = 100,
    *,
    messages: int = 4,
    recent: bool = False,
    days_ago: int = 10,
    overlap_chars: int = 0,
) -> ChunkStat:
    return ChunkStat(
        chunk_index=index,
        token_count=tokens,
        message_count=messages,
        is_recent=recent,
        created_at=BASE - timedelta(days=days_ago),
        overlap_chars=overlap_chars,
    )


def cost(chunk: ChunkStat) -> int:
    """What one chunk costs in a batch and against the budget."""
    return chunk.new_tokens + EXCERPT_OVERHEAD_TOKENS


def flat(plan: FullPassPlan) -> list[int]:
    return [index for batch in plan.batches for index in batch]


def test_under_budget_every_chunk_is_read_once_in_stored_order() -> None:
    stats = [stat(i, tokens=100 + i) for i in range(10)]
    plan = plan_full_pass(stats, batch_tokens=400, budget_tokens=NO_BUDGET_LIMIT)
    assert flat(plan) == list(range(10))
    assert plan.left_out == {}
    assert (plan.selected_chunks, plan.total_chunks) == (10, 10)
    assert plan.selected_tokens == plan.total_tokens == sum(s.new_tokens for s in stats)
    by_index = {s.chunk_index: s for s in stats}
    for batch in plan.batches:
        assert sum(cost(by_index[i]) for i in batch) <= 400
    assert len(plan.batches) > 1
    assert "left_out" not in plan.summary()


def test_a_batch_is_filled_before_the_next_begins() -> None:
    stats = [stat(i, tokens=80) for i in range(9)]  # 100 tokens each with the overhead
    plan = plan_full_pass(stats, batch_tokens=300, budget_tokens=NO_BUDGET_LIMIT)
    assert plan.batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_a_chunk_larger_than_a_batch_goes_alone() -> None:
    stats = [stat(0, tokens=50), stat(1, tokens=5_000), stat(2, tokens=50)]
    plan = plan_full_pass(stats, batch_tokens=1_000, budget_tokens=NO_BUDGET_LIMIT)
    assert plan.batches == [[0], [1], [2]]


def test_the_overlap_a_chunk_repeats_is_not_counted() -> None:
    chunk = stat(1, tokens=500, overlap_chars=800)
    assert chunk.new_tokens == 300
    assert stat(2, tokens=10, overlap_chars=4_000).new_tokens == 1, "never nothing"
    plan = plan_full_pass([stat(0, tokens=500), chunk], batch_tokens=10_000, budget_tokens=10**6)
    assert plan.selected_tokens == 800


def test_over_budget_recent_chunks_come_first_then_the_ones_with_more_turns() -> None:
    old_rich = [stat(i, messages=20, days_ago=400 + i) for i in range(4)]
    recent_poor = [stat(4 + i, messages=2, recent=True, days_ago=20 + i) for i in range(4)]
    recent_rich = [stat(8 + i, messages=12, recent=True, days_ago=30 + i) for i in range(4)]
    stats = old_rich + recent_poor + recent_rich
    budget = 6 * cost(stats[0])
    plan = plan_full_pass(stats, batch_tokens=10_000, budget_tokens=budget)
    assert flat(plan) == [4, 5, 8, 9, 10, 11], "all the recent rich ones, then the newest poor"
    assert plan.left_out["chunks"] == 6
    assert plan.left_out["input_tokens"] == plan.total_tokens - plan.selected_tokens > 0
    assert plan.left_out["oldest_kept"] == (BASE - timedelta(days=33)).isoformat()
    assert "SOULWORKER_FULL_PASS_TOKEN_BUDGET" in plan.left_out["reason"]
    assert plan.summary()["left_out"] == plan.left_out


def test_a_chunk_too_big_for_what_is_left_is_skipped_for_smaller_ones() -> None:
    stats = [
        stat(0, tokens=500, recent=True, days_ago=1),
        stat(1, tokens=900, recent=True, days_ago=2),
        stat(2, tokens=100, recent=True, days_ago=3),
    ]
    budget = cost(stats[0]) + cost(stats[2]) + 10
    plan = plan_full_pass(stats, batch_tokens=10_000, budget_tokens=budget)
    assert flat(plan) == [0, 2]


def test_nothing_fits_a_tiny_budget() -> None:
    plan = plan_full_pass([stat(0, tokens=5_000)], batch_tokens=1_000, budget_tokens=1_000)
    assert plan.batches == []
    assert plan.left_out["chunks"] == 1
    assert plan.left_out["oldest_kept"] is None


def test_a_plan_survives_its_round_trip_through_the_checkpoint() -> None:
    stats = [stat(i, tokens=300, recent=i % 2 == 0, days_ago=i) for i in range(12)]
    plan = plan_full_pass(stats, batch_tokens=1_000, budget_tokens=2_000)
    assert FullPassPlan.from_json(plan.to_json()) == plan


chunk_stats = st.lists(
    st.builds(
        lambda tokens, messages, recent, days, overlap: (tokens, messages, recent, days, overlap),
        st.integers(1, 3_000),
        st.integers(0, 40),
        st.booleans(),
        st.integers(0, 30),
        st.integers(0, 2_000),
    ),
    max_size=40,
).map(
    lambda rows: [
        stat(i, tokens, messages=messages, recent=recent, days_ago=days, overlap_chars=overlap)
        for i, (tokens, messages, recent, days, overlap) in enumerate(rows)
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    stats=chunk_stats,
    batch_tokens=st.integers(1_000, 8_000),
    budget_tokens=st.integers(1_000, 60_000),
    seed=st.integers(0, 1_000),
)
def test_plan_properties(
    stats: list[ChunkStat], batch_tokens: int, budget_tokens: int, seed: int
) -> None:
    plan = plan_full_pass(stats, batch_tokens=batch_tokens, budget_tokens=budget_tokens)
    by_index = {s.chunk_index: s for s in stats}
    chosen = flat(plan)

    # Every selected chunk exactly once, in stored order; batches within their size.
    assert chosen == sorted(set(chosen))
    assert len(chosen) == plan.selected_chunks
    assert all(batch for batch in plan.batches)
    for batch in plan.batches:
        assert len(batch) == 1 or sum(cost(by_index[i]) for i in batch) <= batch_tokens
    for first, second in zip(plan.batches, plan.batches[1:], strict=False):
        # A batch was closed only because the next chunk did not fit in it.
        spent = sum(cost(by_index[i]) for i in first)
        assert spent + cost(by_index[second[0]]) > batch_tokens

    # The budget, and what the plan says about what it left out.
    everything = sum(cost(s) for s in stats)
    spent = sum(cost(by_index[i]) for i in chosen)
    if everything <= budget_tokens:
        assert chosen == [s.chunk_index for s in stats]
        assert plan.left_out == {}
    else:
        assert spent <= budget_tokens
        assert plan.left_out["chunks"] == len(stats) - len(chosen)
        assert plan.left_out["input_tokens"] == plan.total_tokens - plan.selected_tokens
        # Greedy by rank: a chunk was left out only because it no longer fitted.
        rank = sorted(
            stats,
            key=lambda s: (s.is_recent, s.message_count, s.created_at, -s.chunk_index),
            reverse=True,
        )
        kept = set(chosen)
        for position, candidate in enumerate(rank):
            if candidate.chunk_index in kept:
                continue
            above = sum(cost(s) for s in rank[:position] if s.chunk_index in kept)
            assert above + cost(candidate) > budget_tokens

    # Deterministic, and a function of the chunks, not of the order they were listed in.
    shuffled = list(stats)
    random.Random(seed).shuffle(shuffled)
    again = plan_full_pass(shuffled, batch_tokens=batch_tokens, budget_tokens=budget_tokens)
    assert again == plan
