"""The chunk layout: where each stored chunk's header and overlap end, so the full pass can send
every piece of a conversation once (docs/pipeline.md), kept compactly and carried through JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from soulworker.conversations.chunk_layout import ChunkLayout
from soulworker.conversations.chunker import chunk_conversation
from soulworker.conversations.conversation import (
    Chunk,
    ChunkTier,
    Conversation,
    LinearizeStats,
    Message,
    Role,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
STATS = LinearizeStats(0, 0, "current_node", False, False, 0, 0, ())


def conversation(conversation_id: str, *texts: str, title: str = "Sourdough") -> Conversation:
    roles: tuple[Role, Role] = ("user", "assistant")
    return Conversation(
        id=conversation_id,
        title=title,
        create_time=1_700_000_000.0,
        update_time=None,
        messages=tuple(Message(roles[i % 2], text, None) for i, text in enumerate(texts)),
        persona_signals=(),
        stats=STATS,
    )


def chunks_of(conv: Conversation, tier: ChunkTier = ChunkTier.MICRO) -> list[Chunk]:
    return chunk_conversation(conv, now=NOW, fallback_created_at=NOW, tier=tier)


def prose(count: int, tag: str) -> str:
    return " ".join(
        f"Step {i} of the {tag} loaf needs a little more patience." for i in range(count)
    )


def transcript(conv: Conversation) -> str:
    labels = {"user": "User", "assistant": "Assistant"}
    return "\n".join(f"{labels[m.role]}: {m.text}" for m in conv.messages)


def test_new_text_keeps_the_header_and_drops_only_the_repeated_overlap() -> None:
    conv = conversation("c1", prose(40, "rye"), prose(60, "spelt"))
    chunks = chunks_of(conv)
    assert len(chunks) > 3, "the test needs a conversation cut into several chunks"
    layout = ChunkLayout()
    layout.extend(range(len(chunks)), chunks)

    pieces = []
    for index, chunk in enumerate(chunks):
        text = layout.new_text(index, chunk.content)
        header = chunk.content[: chunk.header_chars]
        assert text.startswith(header), "the title line (and speaker label) stays"
        assert text.startswith("# Sourdough\n")
        assert layout.overlap(index) == chunk.overlap_chars
        pieces.append(text[len(header) :])
    assert chunks[0].overlap_chars == 0
    assert all(c.overlap_chars > 0 for c in chunks[1:]), "later chunks do repeat text"
    # Without the overlaps, the pieces are the conversation exactly once.
    assert "".join(pieces) == transcript(conv)


def test_layouts_follow_chunk_indexes_across_conversations_and_dropped_ranges() -> None:
    first = chunks_of(conversation("c1", prose(30, "wheat")))
    second = chunks_of(conversation("c2", prose(30, "barley"), title="Barley"))
    layout = ChunkLayout()
    layout.extend(range(0, len(first)), first)
    layout.extend(range(len(first), len(first) + len(second)), second)
    # A replaced duplicate's chunk indexes stay in the layout (they are deleted from the table,
    # not renumbered), so later indexes still find their own entries.
    last = len(first) + len(second) - 1
    assert layout.overlap(last) == second[-1].overlap_chars
    assert layout.new_text(len(first), second[0].content) == second[0].content


def test_indexes_out_of_order_are_refused() -> None:
    chunks = chunks_of(conversation("c1", "Hello there."))
    layout = ChunkLayout()
    with pytest.raises(ValueError, match="in order"):
        layout.extend(range(1, 2), chunks)
    layout.extend(range(0, 1), chunks)
    with pytest.raises(ValueError, match="in order"):
        layout.extend(range(0, 1), chunks)


def test_an_unknown_index_leaves_the_content_whole() -> None:
    layout = ChunkLayout()
    assert layout.new_text(7, "# T\nUser: hi") == "# T\nUser: hi"
    assert layout.overlap(7) == 0


def test_the_layout_survives_a_json_round_trip() -> None:
    chunks = chunks_of(conversation("c1", prose(25, "oat"), prose(25, "corn")))
    layout = ChunkLayout()
    layout.extend(range(len(chunks)), chunks)
    restored = ChunkLayout.from_json(json.loads(json.dumps(layout.to_json())))
    for index, chunk in enumerate(chunks):
        assert restored.new_text(index, chunk.content) == layout.new_text(index, chunk.content)
        assert restored.overlap(index) == layout.overlap(index)
    restored.extend(range(len(chunks), len(chunks) + 1), chunks[:1])  # and it can grow on


@pytest.mark.parametrize("stored", [None, [], "x", 3, {}, {"header_chars": None}])
def test_a_missing_or_malformed_layout_is_an_empty_one(stored: object) -> None:
    layout = ChunkLayout.from_json(stored)
    assert layout.to_json() == {"header_chars": [], "overlap_chars": []}
    assert layout.new_text(0, "# T\nbody") == "# T\nbody"


def test_the_layout_costs_a_few_bytes_per_chunk() -> None:
    chunks = chunks_of(conversation("c1", prose(10, "millet")))
    layout = ChunkLayout()
    count = 0
    for _ in range(5_000):
        layout.extend(range(count, count + len(chunks)), chunks)
        count += len(chunks)
    size = layout.header_chars.itemsize * len(layout.header_chars)
    size += layout.overlap_chars.itemsize * len(layout.overlap_chars)
    assert size <= 8 * count
