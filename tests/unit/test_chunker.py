"""The chunker: sizes, overlap, sentence boundaries, fields, and that no dialogue is ever lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soulworker.conversations.chunker import (
    DEFAULT_TIER,
    RECENT_DAYS,
    TIER_SPECS,
    chunk_conversation,
)
from soulworker.conversations.conversation import (
    Chunk,
    ChunkTier,
    Conversation,
    LinearizeStats,
    Message,
    Role,
)
from soulworker.llm.models import CHARS_PER_TOKEN, estimate_tokens

NOW = datetime(2026, 6, 1, tzinfo=UTC)
JOB_START = datetime(2026, 5, 31, 23, 0, tzinfo=UTC)
STATS = LinearizeStats(0, 0, "current_node", False, False, 0, 0, ())


def conversation(
    *turns: tuple[Role, str],
    title: str = "Bread",
    create_time: float | None = 1_700_000_000.0,
    update_time: float | None = None,
    times: list[float | None] | None = None,
) -> Conversation:
    stamps = times or [None] * len(turns)
    return Conversation(
        id="conv-9",
        title=title,
        create_time=create_time,
        update_time=update_time,
        messages=tuple(
            Message(role, text, t) for (role, text), t in zip(turns, stamps, strict=True)
        ),
        persona_signals=(),
        stats=STATS,
    )


def chunk(conv: Conversation, tier: ChunkTier = DEFAULT_TIER) -> list[Chunk]:
    return chunk_conversation(conv, now=NOW, fallback_created_at=JOB_START, tier=tier)


def transcript(conv: Conversation) -> str:
    labels = {"user": "User", "assistant": "Assistant"}
    return "\n".join(f"{labels[m.role]}: {m.text}" for m in conv.messages)


def new_parts(chunks: list[Chunk]) -> list[str]:
    return [c.body[c.overlap_chars :] for c in chunks]


def sentences(count: int, words: int = 12) -> str:
    return " ".join(f"Sentence {i} has " + "word " * words + "in it." for i in range(count))


def test_a_short_conversation_is_one_chunk_with_a_title_line_and_role_lines() -> None:
    conv = conversation(("user", "How do I bake bread?"), ("assistant", "Flour, water, salt."))
    [only] = chunk(conv)
    assert only.content == "# Bread\nUser: How do I bake bread?\nAssistant: Flour, water, salt."
    assert only.message_count == 2
    assert only.token_count == estimate_tokens(only.content)
    assert only.token_count == -(-len(only.content) // CHARS_PER_TOKEN)
    assert (only.conversation_id, only.title, only.chunk_index_in_conversation) == (
        "conv-9",
        "Bread",
        0,
    )
    assert only.tier is ChunkTier.MEDIUM
    assert only.overlap_chars == 0


def test_a_long_conversation_splits_at_sentence_ends_with_overlap() -> None:
    spec = TIER_SPECS[ChunkTier.MEDIUM]
    turns: list[tuple[Role, str]] = [
        ("user" if i % 2 == 0 else "assistant", sentences(15)) for i in range(20)
    ]
    conv = conversation(*turns)
    chunks = chunk(conv)
    assert len(chunks) > 2
    assert "".join(new_parts(chunks)) == transcript(conv)
    for index, current in enumerate(chunks):
        assert current.content.startswith("# Bread\n")
        assert len(current.body) <= spec.max_chars
        assert current.chunk_index_in_conversation == index
        if index < len(chunks) - 1:
            assert current.body.endswith((". ", "\n")), "cut at a sentence or message end"
        if index > 0:
            previous = chunks[index - 1]
            overlap = current.body[: current.overlap_chars]
            assert 0 < len(overlap) <= spec.overlap_chars
            assert previous.body.endswith(overlap)
            assert overlap.startswith(("Sentence", "User:", "Assistant:"))  # a clean start


def test_a_message_longer_than_a_chunk_spans_chunks_and_keeps_its_speaker() -> None:
    spec = TIER_SPECS[ChunkTier.MICRO]
    long_text = sentences(60)
    conv = conversation(("user", "Summarise this."), ("assistant", long_text), ("user", "Thanks!"))
    chunks = chunk(conv, ChunkTier.MICRO)
    assert len(chunks) >= len(long_text) // spec.max_chars
    assert "".join(new_parts(chunks)) == transcript(conv)
    continued = [c for c in chunks if "Assistant (continued): " in c.content]
    assert continued, "chunks that start inside the answer say who is speaking"
    for current in continued:
        assert current.content.startswith("# Bread\nAssistant (continued): ")
        assert current.header_chars == len("# Bread\nAssistant (continued): ")
    assert all(len(c.body) <= spec.max_chars for c in chunks)


def test_text_without_any_boundary_is_cut_hard_and_still_complete() -> None:
    spec = TIER_SPECS[ChunkTier.MICRO]
    blob = "x" * (spec.max_chars * 5 + 17)
    conv = conversation(("user", blob))
    chunks = chunk(conv, ChunkTier.MICRO)
    assert "".join(new_parts(chunks)) == transcript(conv)
    assert all(len(c.body) <= spec.max_chars for c in chunks)
    assert all(c.overlap_chars == spec.overlap_chars for c in chunks[1:])


def test_cjk_text_splits_at_full_width_stops() -> None:
    text = "今日は晴れです。" * 400
    chunks = chunk(conversation(("user", text)), ChunkTier.MICRO)
    assert len(chunks) > 1
    assert all(c.body.endswith("。") for c in chunks[:-1])


def test_message_count_counts_every_message_with_text_in_the_chunk() -> None:
    turns: list[tuple[Role, str]] = [
        ("user" if i % 2 == 0 else "assistant", f"Message {i}. " + sentences(2)) for i in range(40)
    ]
    conv = conversation(*turns)
    full = transcript(conv)
    spans = []  # where each message's own text (not its label) sits in the transcript
    position = 0
    for message in conv.messages:
        start = full.index(message.text, position)
        spans.append((start, start + len(message.text)))
        position = start + len(message.text)
    chunks = chunk(conv, ChunkTier.MICRO)
    for current in chunks:
        # Body positions: the new part starts where the previous new parts ended.
        new_start = sum(len(p) for p in new_parts(chunks)[: current.chunk_index_in_conversation])
        body_start = new_start - current.overlap_chars
        body_end = body_start + len(current.body)
        expected = sum(1 for s, e in spans if s < body_end and e > body_start)
        assert current.message_count == expected
        assert current.message_count >= 1


def test_overlap_text_counts_for_the_message_it_came_from() -> None:
    # The first chunk ends exactly after the user's message (the reply has no boundary before
    # the size limit), so the second chunk's new part is only the reply and its overlap is
    # the end of the user's message.
    conv = conversation(("user", sentences(8)), ("assistant", "x" * 400))
    first, second = chunk(conv, ChunkTier.MICRO)
    assert first.body == "User: " + sentences(8) + "\n"
    assert first.message_count == 1
    assert second.body[second.overlap_chars :] == "Assistant: " + "x" * 400
    assert second.overlap_chars > 0
    assert sentences(8).endswith(second.body[: second.overlap_chars].rstrip("\n"))
    assert second.message_count == 2


@pytest.mark.parametrize(
    ("create_time", "update_time", "times", "expected"),
    [
        (1_700_000_000.0, 1_700_500_000.0, [1_600_000_000.0], 1_700_000_000.0),
        (None, 1_700_500_000.0, [1_600_000_000.0], 1_700_500_000.0),
        (None, None, [1_650_000_000.0, 1_600_000_000.0], 1_600_000_000.0),
        (None, None, [None, None], None),
    ],
)
def test_created_at_falls_back_in_the_designs_order(
    create_time: float | None,
    update_time: float | None,
    times: list[float | None],
    expected: float | None,
) -> None:
    turns: list[tuple[Role, str]] = [("user", f"m{i}") for i in range(len(times))]
    conv = conversation(*turns, create_time=create_time, update_time=update_time, times=times)
    [only] = chunk(conv)
    want = JOB_START if expected is None else datetime.fromtimestamp(expected, tz=UTC)
    assert only.created_at == want
    assert only.created_at.tzinfo is not None


def test_is_recent_means_within_180_days_of_now() -> None:
    edge = (NOW - timedelta(days=RECENT_DAYS)).timestamp()
    recent = chunk(conversation(("user", "x"), create_time=edge))[0]
    old = chunk(conversation(("user", "x"), create_time=edge - 1))[0]
    assert recent.is_recent
    assert not old.is_recent


@pytest.mark.parametrize("tier", list(ChunkTier))
def test_each_tier_respects_its_own_size(tier: ChunkTier) -> None:
    spec = TIER_SPECS[tier]
    conv = conversation(*[("user", sentences(30)) for _ in range(10)])
    chunks = chunk(conv, tier)
    assert all(c.tier is tier for c in chunks)
    assert all(len(c.body) <= spec.max_chars for c in chunks)
    assert max(len(c.body) for c in chunks) > spec.max_chars // 2  # and uses it
    assert "".join(new_parts(chunks)) == transcript(conv)


def test_tier_sizes_are_ordered_with_ten_percent_overlap() -> None:
    micro, medium, macro = (
        TIER_SPECS[t] for t in (ChunkTier.MICRO, ChunkTier.MEDIUM, ChunkTier.MACRO)
    )
    assert micro.max_tokens < medium.max_tokens < macro.max_tokens
    assert medium.max_tokens == 2000  # the predecessor's tier
    assert medium.overlap_tokens == 200
    for spec in (micro, medium, macro):
        assert spec.overlap_tokens * 10 == spec.max_tokens


def test_no_messages_no_chunks_and_naive_times_are_refused() -> None:
    assert chunk(conversation()) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        chunk_conversation(
            conversation(("user", "x")), now=datetime(2026, 1, 1), fallback_created_at=JOB_START
        )


def test_a_huge_conversation_is_chunked_in_linear_time() -> None:
    """A 4 MB answer: quadratic string building would take minutes; the test timeout catches it."""
    conv = conversation(("assistant", sentences(40_000)))
    chunks = chunk(conv)
    assert "".join(new_parts(chunks)) == transcript(conv)


WORDS = st.text(alphabet=st.sampled_from("ab .?!\n。"), min_size=1, max_size=600)


@settings(max_examples=200, deadline=None)
@given(
    turns=st.lists(
        st.tuples(st.sampled_from(["user", "assistant"]), WORDS).filter(lambda t: t[1].strip()),
        min_size=1,
        max_size=25,
    ),
    tier=st.sampled_from(list(ChunkTier)),
)
def test_nothing_is_lost_and_every_chunk_is_well_formed(
    turns: list[tuple[Role, str]], tier: ChunkTier
) -> None:
    conv = conversation(*turns)
    chunks = chunk(conv, tier)
    spec = TIER_SPECS[tier]
    full = transcript(conv)
    assert "".join(new_parts(chunks)) == full
    for message in conv.messages:
        assert message.text in full
    for index, current in enumerate(chunks):
        assert current.content.startswith(f"# {conv.title}\n")
        assert current.body
        assert len(current.body) <= spec.max_chars
        assert current.overlap_chars <= spec.overlap_chars
        assert len(current.body) > current.overlap_chars  # every chunk brings new text
        if index:
            overlap = current.body[: current.overlap_chars]
            assert chunks[index - 1].body.endswith(overlap)
