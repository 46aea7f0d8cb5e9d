"""The quick-pass sampler: score, format, budget and hard cap, fallbacks, streaming bounds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soulworker.conversations.conversation import Conversation, LinearizeStats, Message, Role
from soulworker.soulprint.sampler import (
    CANDIDATE_CHARS_FACTOR,
    CANDIDATE_COUNT_FACTOR,
    CONVERSATION_CUT_MARK,
    CONVERSATION_SEPARATOR,
    DEFAULT_BUDGET_CHARS,
    MESSAGE_CUT_MARK,
    MIN_MESSAGES,
    QuickPassSample,
    QuickPassSampler,
    format_conversation,
    score_conversation,
)

STATS = LinearizeStats(0, 0, "current_node", False, False, 0, 0, ())
BIG = 10_000_000  # a hard cap that does not bind


def conv(
    conversation_id: str,
    messages: int = 4,
    *,
    chars: int = 20,
    title: str | None = None,
    time: float | None = 1_700_000_000.0,
) -> Conversation:
    """``messages`` alternating user/assistant messages of ``chars`` characters each."""
    roles: list[Role] = ["user", "assistant"]
    return Conversation(
        id=conversation_id,
        title=title or f"Chat {conversation_id}",
        create_time=time,
        update_time=None,
        messages=tuple(
            Message(roles[i % 2], f"{i % 10}:" + "w" * chars, None)  # length independent of id
            for i in range(messages)
        ),
        persona_signals=(),
        stats=STATS,
    )


def sample_of(conversations: list[Conversation], **options: int) -> QuickPassSample:
    sampler = QuickPassSampler(hard_cap_chars=options.pop("hard_cap_chars", BIG), **options)
    for conversation in conversations:
        sampler.offer(conversation)
    return sampler.sample()


def test_the_score_is_the_predecessors_formula() -> None:
    conversation = Conversation(
        id="s",
        title="t",
        create_time=None,
        update_time=None,
        messages=(
            Message("user", "a" * 800, None),  # counts 500: user effort is capped per message
            Message("assistant", "b" * 3000, None),  # assistant length does not count
            Message("user", "c" * 40, None),
            Message("user", "d" * 10, None),
        ),
        persona_signals=(),
        stats=STATS,
    )
    messages, user_chars, balance = 4, 500 + 40 + 10, min(3, 1)
    assert score_conversation(conversation) == 10 * messages + user_chars + 20 * balance


def test_format_is_a_dated_header_then_role_lines_with_long_messages_cut() -> None:
    long = Conversation(
        id="f",
        title="Sourdough",
        create_time=datetime(2024, 3, 7, 15, tzinfo=UTC).timestamp(),
        update_time=None,
        messages=(
            Message("user", "Hi", None),
            Message("assistant", "x" * 5000, None),
            Message("user", "Thanks", None),
            Message("assistant", "Welcome", None),
        ),
        persona_signals=(),
        stats=STATS,
    )
    result = sample_of([long], message_cap_chars=2000)
    lines = result.text.split("\n")
    assert lines[0] == "### Sourdough (2024-03-07)"
    assert lines[1] == "User: Hi"
    assert lines[2].startswith("Assistant: xxx")
    assert lines[2].endswith(MESSAGE_CUT_MARK)
    assert len(lines[2]) == len("Assistant: ") + 2000
    assert lines[3:] == ["User: Thanks", "Assistant: Welcome"]
    assert result.conversation_ids == ("f",)


def test_only_conversations_with_enough_messages_are_eligible() -> None:
    result = sample_of([conv("short", MIN_MESSAGES - 1, chars=400), conv("ok", MIN_MESSAGES)])
    assert result.conversation_ids == ("ok",)
    assert result.stats.eligible == 1


def test_order_is_score_then_newer_then_offered_first() -> None:
    conversations = [
        conv("small", 4, chars=10),
        conv("big", 8, chars=10),
        conv("old-twin", 6, chars=10, time=1_600_000_000.0),
        conv("new-twin", 6, chars=10, time=1_650_000_000.0),
        conv("first-tie", 5, chars=10, time=1.0e9),
        conv("second-tie", 5, chars=10, time=1.0e9),
    ]
    result = sample_of(conversations)
    assert result.conversation_ids == (
        "big",
        "new-twin",
        "old-twin",
        "first-tie",
        "second-tie",
        "small",
    )
    assert result.text.count(CONVERSATION_SEPARATOR + "### ") == 5


def test_the_budget_holds_and_conversations_that_do_not_fit_are_skipped_for_smaller_ones() -> None:
    budget = 5_000
    conversations = [
        conv("huge-a", 40, chars=100),  # ~4.7K chars: fits alone
        conv("huge-b", 40, chars=100),  # no longer fits after huge-a: skipped
        conv("small", 4, chars=10),  # fits in what is left
    ]
    result = sample_of(conversations, budget_chars=budget, max_conversation_chars=budget)
    assert result.conversation_ids == ("huge-a", "small")
    assert result.stats.skipped_over_budget == 1
    assert len(result.text) <= budget
    assert result.stats.limit_chars == budget


@pytest.mark.parametrize("slack", [0, -1])
def test_the_limit_is_exact_separators_included(slack: int) -> None:
    first, second = conv("first", 12, chars=60), conv("second", 10, chars=60)
    sizes = [
        len(format_conversation(c, message_cap_chars=2000, max_chars=BIG)[0])
        for c in (first, second)
    ]
    limit = sum(sizes) + len(CONVERSATION_SEPARATOR) + slack
    result = sample_of([first, second], budget_chars=limit, max_conversation_chars=limit)
    assert result.conversation_ids == (("first", "second") if slack == 0 else ("first",))
    assert len(result.text) == (limit if slack == 0 else sizes[0])


def test_the_hard_cap_wins_over_the_budget() -> None:
    conversations = [conv(f"c{i}", 10, chars=300) for i in range(30)]
    result = sample_of(conversations, budget_chars=DEFAULT_BUDGET_CHARS, hard_cap_chars=7_000)
    assert len(result.text) <= 7_000
    assert result.stats.limit_chars == 7_000
    assert result.conversation_ids


def test_at_most_max_conversations() -> None:
    result = sample_of([conv(f"c{i}") for i in range(80)], max_conversations=50)
    assert len(result.conversation_ids) == 50


def test_each_conversation_is_cut_to_its_share_so_the_sample_spans_many() -> None:
    conversations = [conv(f"long{i}", 200, chars=1000) for i in range(15)]
    result = sample_of(conversations, budget_chars=200_000, max_conversation_chars=20_000)
    assert len(result.conversation_ids) >= 9  # (200K minus separators) / 20K
    for part in result.text.split(CONVERSATION_SEPARATOR):
        assert len(part) <= 20_000
        assert part.endswith(CONVERSATION_CUT_MARK)
    assert result.stats.shortened == 15


def test_without_the_per_conversation_cut_the_predecessors_behaviour_returns() -> None:
    conversations = [conv(f"long{i}", 200, chars=300) for i in range(5)]  # ~65K chars each
    result = sample_of(conversations, budget_chars=200_000, max_conversation_chars=200_000)
    assert len(result.conversation_ids) == 3  # three whole ones fill the budget
    assert len(result.text) <= 200_000


def test_a_lowered_limit_shrinks_the_sample_and_cuts_the_best_if_nothing_fits() -> None:
    sampler = QuickPassSampler(hard_cap_chars=BIG, max_conversation_chars=50_000)
    for conversation in [conv("a", 30, chars=100), conv("b", 20, chars=100)]:
        sampler.offer(conversation)
    full = sampler.sample()
    smaller = sampler.sample(limit_chars=2_500)
    assert full.conversation_ids == ("a", "b")
    assert smaller.conversation_ids == ("b",)  # "a" no longer fits, "b" does
    tiny = sampler.sample(limit_chars=1_000)
    assert tiny.stats.fallback == "shortened_best"
    assert tiny.conversation_ids == ("a",)
    assert len(tiny.text) <= 1_000
    assert tiny.text.endswith(CONVERSATION_CUT_MARK)


def test_no_eligible_conversation_falls_back_to_the_first_ones_in_offer_order() -> None:
    conversations = [conv(f"c{i}", 2, chars=50, time=float(2e9 - i)) for i in range(5)]
    conversations.insert(2, conv("empty", 0))
    result = sample_of(conversations, max_conversations=3)
    assert result.stats.fallback == "first_conversations"
    assert result.conversation_ids == ("c0", "c1", "c2")
    assert result.stats.empty == 1


def test_nothing_offered_is_an_empty_sample() -> None:
    result = sample_of([])
    assert result.text == ""
    assert result.conversation_ids == ()
    assert result.stats.fallback == "empty"


def test_discard_removes_a_stale_duplicate_and_offer_replaces_by_id() -> None:
    sampler = QuickPassSampler(hard_cap_chars=BIG)
    sampler.offer(conv("dup", 10))
    sampler.offer(conv("other", 4))
    sampler.discard("dup")
    sampler.discard("never-seen")
    result = sampler.sample()
    assert result.conversation_ids == ("other",)
    assert result.stats.discarded == 1
    assert [r.conversation_id for r in sampler.top_ids()] == ["other"]

    sampler.offer(conv("other", 12, title="Newer version"))  # same id: replaces
    again = sampler.sample()
    assert again.conversation_ids == ("other",)
    assert "Newer version" in again.text


def test_top_ids_keep_the_best_n_eligible_first() -> None:
    sampler = QuickPassSampler(hard_cap_chars=BIG, top_n=3)
    sizes = {"a": 4, "b": 9, "c": 2, "d": 6, "e": 5, "f": 3}
    for name, messages in sizes.items():
        sampler.offer(conv(name, messages))
    top = sampler.top_ids()
    assert [r.conversation_id for r in top] == ["b", "d", "e"]
    assert all(r.eligible for r in top)
    assert top[0].score == score_conversation(conv("b", 9))
    small = QuickPassSampler(hard_cap_chars=BIG, top_n=3)
    for name in ("c", "f"):
        small.offer(conv(name, sizes[name]))
    assert [r.conversation_id for r in small.top_ids()] == ["f", "c"]  # ineligible still ranked


def test_memory_stays_bounded_however_many_conversations_stream_past() -> None:
    limit = 20_000
    sampler = QuickPassSampler(hard_cap_chars=limit, max_conversations=10, top_n=50)
    for i in range(3_000):
        sampler.offer(conv(f"c{i}", 4 + i % 17, chars=50 + (i * 37) % 400))
        stats = sampler.sample().stats if i % 500 == 0 else None
        if stats is not None:
            assert stats.candidates <= CANDIDATE_COUNT_FACTOR * 10
    result = sampler.sample()
    assert result.stats.candidates <= CANDIDATE_COUNT_FACTOR * 10
    held = sum(len(e.text) for e in sampler._candidates.values())  # the bound itself
    assert held <= CANDIDATE_CHARS_FACTOR * limit
    assert len(sampler.top_ids()) == 50
    assert len(result.text) <= limit


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="limit"):
        QuickPassSampler(hard_cap_chars=10)
    with pytest.raises(ValueError, match="positive"):
        QuickPassSampler(hard_cap_chars=BIG, max_conversations=0)


CONVERSATIONS = st.lists(
    st.builds(
        conv,
        st.sampled_from([f"id{i}" for i in range(30)]),
        st.integers(min_value=0, max_value=30),
        chars=st.integers(min_value=0, max_value=900),
        time=st.none() | st.floats(min_value=1e9, max_value=2e9),
    ),
    max_size=60,
)


def latest_versions(conversations: list[Conversation]) -> list[tuple[int, Conversation]]:
    """The last version offered of each id that has messages, with its offer position, in the
    order of those last offers (a replacement moves to the end, as in the sampler)."""
    latest: dict[str, tuple[int, Conversation]] = {}
    for seq, conversation in enumerate(conversations):
        if conversation.messages:
            latest.pop(conversation.id, None)
            latest[conversation.id] = (seq, conversation)
    return list(latest.values())


def formatted_length(conversation: Conversation, limit: int) -> int:
    return len(format_conversation(conversation, message_cap_chars=2000, max_chars=limit)[0])


def offline(conversations: list[Conversation], limit: int, max_count: int) -> tuple[str, ...]:
    """The selection computed the obvious way, over everything at once, for comparison."""
    ranked = sorted(
        (
            (
                score_conversation(c),
                c.first_known_time if c.first_known_time is not None else 0.0,
                -seq,
                c,
            )
            for seq, c in latest_versions(conversations)
            if len(c.messages) >= MIN_MESSAGES
        ),
        key=lambda item: item[:3],
        reverse=True,
    )
    chosen: list[str] = []
    used = 0
    for *_, c in ranked:
        if len(chosen) == max_count:
            break
        cost = formatted_length(c, limit) + (2 if chosen else 0)
        if used + cost <= limit:
            chosen.append(c.id)
            used += cost
    return tuple(chosen)


def never_pruned(conversations: list[Conversation], limit: int, max_count: int) -> bool:
    """Whether the candidates held stay within the sampler's bounds after every offer, so that
    no prune runs. Checked per offer, not on the final set: a version replaced later was held,
    and counted, until its replacement arrived."""
    held: dict[str, int] = {}
    for conversation in conversations:
        if not conversation.messages:
            continue  # an empty offer is only counted: it replaces nothing
        held.pop(conversation.id, None)
        if len(conversation.messages) >= MIN_MESSAGES:
            held[conversation.id] = formatted_length(conversation, limit)
            if (
                len(held) > CANDIDATE_COUNT_FACTOR * max_count
                or sum(held.values()) > CANDIDATE_CHARS_FACTOR * limit
            ):
                return False
    return True


@settings(max_examples=150, deadline=None)
@given(conversations=CONVERSATIONS, limit=st.integers(min_value=1_000, max_value=30_000))
def test_streaming_matches_the_offline_selection_while_nothing_is_pruned(
    conversations: list[Conversation], limit: int
) -> None:
    sampler = QuickPassSampler(
        hard_cap_chars=limit, max_conversations=50, max_conversation_chars=limit
    )
    for conversation in conversations:
        sampler.offer(conversation)
    result = sampler.sample()
    assert len(result.text) <= limit
    eligible = {c.id for _, c in latest_versions(conversations) if len(c.messages) >= MIN_MESSAGES}
    if eligible:
        # Pruned or not, only the latest versions of eligible conversations are chosen.
        assert set(result.conversation_ids) <= eligible
        if never_pruned(conversations, limit, 50):
            # Nothing was pruned, so streaming must equal the offline answer.
            assert result.conversation_ids == offline(conversations, limit, 50)
    # Deterministic for a given input order.
    again = QuickPassSampler(
        hard_cap_chars=limit, max_conversations=50, max_conversation_chars=limit
    )
    for conversation in conversations:
        again.offer(conversation)
    assert again.sample() == result


def test_a_prune_counts_versions_that_were_replaced_later() -> None:
    """Regression: the smallest failing input found. The stream held more than the bound at the
    fifth offer (the first version of "revised" was still held), so "small" was pruned; the
    final versions alone are under the bound. The better, shorter "revised" then leaves room
    that only the pruned "small" would have filled: the documented streaming difference."""
    limit = 1_000
    stream = [
        conv("long-a", 20, chars=300, time=None),
        conv("revised", 30, chars=50, time=None),
        conv("small", 16, chars=0, time=None),
        conv("best", 16, chars=900, time=None),
        conv("long-b", 5, chars=300, time=None),
        conv("revised", 20, chars=500, time=None),  # a better, shorter version
    ]
    final = sum(formatted_length(c, limit) for _, c in latest_versions(stream))
    assert final <= CANDIDATE_CHARS_FACTOR * limit  # what the old precondition looked at
    assert not never_pruned(stream, limit, 50)
    control = stream[:4] + stream[5:]  # without long-b the bound holds throughout
    assert never_pruned(control, limit, 50)
    expected_offline = offline(stream, limit, 50)
    assert "small" in expected_offline

    result = sample_of(stream, hard_cap_chars=limit, max_conversation_chars=limit)
    survivors = [c for c in stream if c.id != "small"]
    assert result.conversation_ids == offline(survivors, limit, 50)
    assert result.conversation_ids != expected_offline
    assert len(result.text) <= limit

    unpruned = sample_of(control, hard_cap_chars=limit, max_conversation_chars=limit)
    assert unpruned.conversation_ids == offline(control, limit, 50)


def test_each_conversations_share_follows_the_configured_budget() -> None:
    """A larger SOULWORKER_QUICK_PASS_SAMPLE_CHARS lets each conversation take its tenth of it,
    not the tenth of the default budget."""
    budget = 10 * DEFAULT_BUDGET_CHARS
    long_one = conv("long", messages=200, chars=1_500)  # far more than a tenth of the budget
    sample = sample_of([long_one], budget_chars=budget)
    assert DEFAULT_BUDGET_CHARS // 10 < len(sample.text) <= budget // 10
    default = sample_of([long_one])
    assert len(default.text) <= DEFAULT_BUDGET_CHARS // 10
