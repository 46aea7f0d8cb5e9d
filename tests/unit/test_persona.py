"""The persona collector: distinct signals per kind, newest first, deduplicated, within budget."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soulworker.conversations.conversation import PersonaKind, PersonaSignal
from soulworker.conversations.linearize import linearize
from soulworker.soulprint.persona import (
    BLOCK_HEADERS,
    CUT_MARK,
    DEFAULT_PERSONA_BUDGET_CHARS,
    KIND_ORDER,
    MIN_PERSONA_BUDGET_CHARS,
    UNDATED,
    PersonaCollector,
)

CI = PersonaKind.CUSTOM_INSTRUCTIONS
BIO = PersonaKind.MEMORY_WRITE
SNAPSHOT = PersonaKind.MEMORY_SNAPSHOT
PROFILE = PersonaKind.SYSTEM_PROFILE


def day(year: int, month: int, dom: int) -> float:
    return datetime(year, month, dom, 12, tzinfo=UTC).timestamp()


def items_of(block: str) -> list[str]:
    """The items of one rendered block: what follows its header line, blank-line separated."""
    header, _, body = block.partition("\n")
    assert header.startswith("## ")
    return body.split("\n\n")


def test_custom_instruction_versions_are_distinct_and_newest_first() -> None:
    collector = PersonaCollector()
    collector.add(PersonaSignal(CI, "About the user:\nI bake.", day(2024, 1, 5)))
    collector.add(PersonaSignal(CI, "About the user:\nI bake bread.", day(2024, 6, 1)))
    # The first version again, in a later conversation, with different spacing.
    collector.add(PersonaSignal(CI, "About the user:  \n I bake. ", day(2024, 3, 9)))
    digest = collector.digest()
    [(kind, block)] = digest.blocks
    assert kind is CI
    assert block.startswith(BLOCK_HEADERS[CI] + "\n")
    # The repeat refreshed the first version's time to 2024-03-09: still older than June.
    assert items_of(block) == [
        "[2024-06-01] About the user:\nI bake bread.",
        "[2024-03-09] About the user:\nI bake.",
    ]
    counts = digest.counts[CI]
    assert (counts.seen, counts.kept, counts.duplicates, counts.dropped) == (3, 2, 1, 0)
    assert digest.counts.to_result()["custom_instructions"] == {
        "seen": 3,
        "kept": 2,
        "duplicates": 1,
        "dropped": 0,
    }
    assert list(digest.counts.to_result()) == [kind.value for kind in KIND_ORDER]


def test_every_memory_write_is_kept_once() -> None:
    collector = PersonaCollector()
    facts = ["Lives in Oslo.", "Has a dog named Rex.", "Lives in Oslo.", "Works night shifts."]
    for index, fact in enumerate(facts):
        collector.add(PersonaSignal(BIO, fact, day(2024, 1, 1 + index)))
    block = dict(collector.digest().blocks)[BIO]
    assert items_of(block) == [
        "[2024-01-04] Works night shifts.",
        "[2024-01-03] Lives in Oslo.",
        "[2024-01-02] Has a dog named Rex.",
    ]


def test_only_the_newest_memory_snapshot_is_kept() -> None:
    collector = PersonaCollector()
    collector.add(PersonaSignal(SNAPSHOT, "1. Likes tea.", day(2024, 2, 1)))
    collector.add(PersonaSignal(SNAPSHOT, "1. Likes tea.\n2. Has a cat.", day(2024, 5, 1)))
    collector.add(PersonaSignal(SNAPSHOT, "1. Old list.", day(2023, 1, 1)))  # older: ignored
    digest = collector.digest()
    assert items_of(dict(digest.blocks)[SNAPSHOT]) == ["[2024-05-01] 1. Likes tea.\n2. Has a cat."]
    assert digest.counts[SNAPSHOT].kept == 1
    assert digest.counts[SNAPSHOT].dropped == 2


def test_blocks_come_in_a_fixed_order_with_undated_items_last() -> None:
    collector = PersonaCollector()
    collector.add(PersonaSignal(BIO, "Undated fact.", None))
    collector.add(PersonaSignal(BIO, "Dated fact.", day(2020, 1, 1)))
    collector.add(PersonaSignal(PROFILE, "Call me Cap.", None))
    collector.add(PersonaSignal(CI, "About the user:\nx", None))
    digest = collector.digest()
    assert [kind for kind, _ in digest.blocks] == [CI, PROFILE, BIO]
    assert [kind for kind, _ in digest.blocks] == [k for k in KIND_ORDER if k in (CI, PROFILE, BIO)]
    assert items_of(dict(digest.blocks)[BIO]) == [
        "[2020-01-01] Dated fact.",
        f"[{UNDATED}] Undated fact.",
    ]
    assert digest.text == "\n\n".join(block for _, block in digest.blocks)


def test_the_budget_is_shared_fairly_and_keeps_the_newest() -> None:
    budget = 3_000
    collector = PersonaCollector(budget_chars=budget)
    collector.add(PersonaSignal(CI, "About the user:\nShort and important.", day(2024, 1, 1)))
    for index in range(200):  # far more memory writes than fit
        collector.add(PersonaSignal(BIO, f"Memory number {index:03d}.", 1_700_000_000.0 + index))
    digest = collector.digest()
    assert len(digest.text) <= budget
    blocks = dict(digest.blocks)
    assert "Short and important." in blocks[CI]  # the small kind keeps everything
    kept = items_of(blocks[BIO])
    assert kept[0].endswith("Memory number 199.")  # the newest survive
    assert not any("Memory number 000." in item for item in kept)
    bio = digest.counts[BIO]
    assert bio.kept == len(kept)
    assert bio.kept + bio.dropped == 200


def test_a_long_signal_is_cut_with_a_mark() -> None:
    collector = PersonaCollector(max_signal_chars=100)
    collector.add(PersonaSignal(BIO, "word " * 500, None))
    [item] = items_of(dict(collector.digest().blocks)[BIO])
    assert item.endswith(CUT_MARK)
    assert len(item) <= len(f"[{UNDATED}] ") + 100


def test_signals_are_collected_from_linearized_conversations() -> None:
    raw = {
        "id": "c",
        "create_time": day(2024, 4, 2),
        "current_node": "b",
        "mapping": {
            "a": {
                "parent": None,
                "message": {
                    "author": {"role": "user"},
                    "content": {
                        "content_type": "user_editable_context",
                        "user_profile": "I am a nurse.",
                    },
                },
            },
            "b": {
                "parent": "a",
                "message": {
                    "author": {"role": "assistant"},
                    "recipient": "bio",
                    "content": {"content_type": "text", "parts": ["Is a nurse."]},
                },
            },
        },
    }
    collector = PersonaCollector()
    collector.add_conversation(linearize(raw))
    assert collector.digest().text == (
        f"{BLOCK_HEADERS[CI]}\n[2024-04-02] About the user:\nI am a nurse."
        f"\n\n{BLOCK_HEADERS[BIO]}\n[2024-04-02] Is a nurse."
    )


def test_an_empty_collector_renders_nothing_and_counts_zero() -> None:
    digest = PersonaCollector().digest()
    assert digest.text == ""
    assert digest.blocks == ()
    assert set(digest.counts) == set(KIND_ORDER)
    assert all(c.seen == 0 for c in digest.counts.values())


def test_budget_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="budget_chars"):
        PersonaCollector(budget_chars=MIN_PERSONA_BUDGET_CHARS - 1)
    with pytest.raises(ValueError, match="max_signal_chars"):
        PersonaCollector(max_signal_chars=0)
    assert DEFAULT_PERSONA_BUDGET_CHARS >= MIN_PERSONA_BUDGET_CHARS


SIGNALS = st.lists(
    st.builds(
        PersonaSignal,
        kind=st.sampled_from(list(PersonaKind)),
        text=st.text(alphabet=st.sampled_from("ab \n."), min_size=1, max_size=400),
        time=st.none() | st.floats(min_value=1e9, max_value=2e9),
    ),
    max_size=150,
)


@settings(max_examples=150, deadline=None)
@given(signals=SIGNALS, budget=st.integers(min_value=MIN_PERSONA_BUDGET_CHARS, max_value=4000))
def test_output_never_exceeds_the_budget_after_any_prefix(
    signals: list[PersonaSignal], budget: int
) -> None:
    """The digest renders everything held, so its length bounds what is held at every step."""
    collector = PersonaCollector(budget_chars=budget)
    for signal in signals:
        collector.add(signal)
        assert len(collector.digest().text) <= budget
    again = PersonaCollector(budget_chars=budget)
    for signal in signals:
        again.add(signal)
    assert again.digest() == collector.digest()  # deterministic


@settings(max_examples=100, deadline=None)
@given(signals=SIGNALS)
def test_with_room_every_distinct_text_is_kept_exactly_once(signals: list[PersonaSignal]) -> None:
    collector = PersonaCollector(budget_chars=1_000_000)
    for signal in signals:
        collector.add(signal)
    digest = collector.digest()
    for kind in KIND_ORDER:
        distinct = {" ".join(s.text.split()) for s in signals if s.kind is kind and s.text.strip()}
        expected = min(len(distinct), 1) if kind is SNAPSHOT else len(distinct)
        assert digest.counts[kind].kept == expected
