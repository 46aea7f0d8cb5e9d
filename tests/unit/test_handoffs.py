"""What the stages hand on: each contract reads exactly the JSON stored today (jobs in flight
across a deploy resume from it), writes it back unchanged, reads older shapes as before, and
calls a value that is not its shape unreadable (docs/pipeline.md, "What each stage hands on")."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from soulworker.llm.schemas import FACT_CATEGORIES
from soulworker.pipeline.full_pass_stage import readable_batches
from soulworker.pipeline.handoffs import (
    FACTS_PREFIX,
    PARSE_OUTPUT_ARTIFACT,
    QUICK_SECTIONS_ARTIFACT,
    FactBatch,
    ParseOutput,
    QuickSections,
    UnreadableHandoff,
    facts_artifact,
)

# A parse output as stored today (written by ParsePass.artifact_json).
STORED_PARSE_OUTPUT: dict[str, Any] = {
    "sample_text": "### Trip (2025-03-01)\nUser: Where to?\nAssistant: The coast.",
    "sample_conversation_ids": ["c-1", "c-2"],
    "top_conversations": [["c-1", 412], ["c-2", 96], ["c-3", 40]],
    "persona_text": "[custom instructions]\nKeep it short.",
    "chunk_layout": {"header_chars": [8, 9, 9], "overlap_chars": [0, 120, 0]},
}

# The quick pass's answer as stored today: the bare sections object.
STORED_QUICK_SECTIONS: dict[str, Any] = {
    "soul": {"essence": "Curious", "values": ["honesty"]},
    "identity": {"ai_name": "Wren", "archetype": "The Guide", "vibe": "warm"},
    "user": {"name": "not enough data", "interests": ["hiking"]},
    "agents": {"response_style": "brief"},
    "tools": {"likely_usage": ["planning"]},
}

# A fact batch as stored today, and as stored before repairs were recorded.
STORED_FACT_BATCH: dict[str, Any] = {
    "facts": {
        "preferences": ["Prefers paper maps."],
        "projects": [{"name": "Garden", "description": "A vegetable patch", "details": ""}],
        "dates": [],
        "beliefs": [],
        "decisions": [],
    },
    "refused_parts": 1,
    "splits": 2,
    "repairs": {"facts.preferences/max_items": 3},
}
OLDER_FACT_BATCH: dict[str, Any] = {
    "facts": STORED_FACT_BATCH["facts"],
    "refused_parts": 0,
    "splits": 0,
}


def stored(value: Any) -> Any:
    """As it comes back from the jsonb column."""
    return json.loads(json.dumps(value))


# --- the parse output


def test_a_stored_parse_output_round_trips() -> None:
    output = ParseOutput.from_json(stored(STORED_PARSE_OUTPUT))
    assert output.sample_text.startswith("### Trip")
    assert output.sample_conversation_ids == ("c-1", "c-2")
    assert output.top_conversations == (("c-1", 412), ("c-2", 96), ("c-3", 40))
    assert output.best_conversation_ids(2) == ["c-1", "c-2"]
    assert output.chunk_layout.new_text(1, "# header" + "x" * 130) == "# header" + "x" * 10
    assert output.to_json() == STORED_PARSE_OUTPUT
    assert json.loads(output.to_json_text()) == STORED_PARSE_OUTPUT


def test_an_empty_parse_output_round_trips() -> None:
    empty = {
        "sample_text": "",
        "sample_conversation_ids": [],
        "top_conversations": [],
        "persona_text": "",
        "chunk_layout": {"header_chars": [], "overlap_chars": []},
    }
    output = ParseOutput.from_json(stored(empty))
    assert output.best_conversation_ids(200) == []
    assert json.loads(output.to_json_text()) == empty == output.to_json()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "not there"),
        (["a list"], "not an object"),
        ({k: v for k, v in STORED_PARSE_OUTPUT.items() if k != "sample_text"}, "sample_text"),
        ({k: v for k, v in STORED_PARSE_OUTPUT.items() if k != "chunk_layout"}, "chunk_layout"),
        ({**STORED_PARSE_OUTPUT, "persona_text": 3}, "persona_text is not text"),
        ({**STORED_PARSE_OUTPUT, "top_conversations": [["c-1"]]}, "top_conversations"),
        ({**STORED_PARSE_OUTPUT, "top_conversations": [["c-1", "9"]]}, "top_conversations"),
        ({**STORED_PARSE_OUTPUT, "sample_conversation_ids": [1]}, "sample_conversation_ids"),
        ({**STORED_PARSE_OUTPUT, "chunk_layout": []}, "chunk_layout is not an object"),
        (
            {**STORED_PARSE_OUTPUT, "chunk_layout": {"header_chars": [-1], "overlap_chars": [0]}},
            "chunk sizes",
        ),
        (
            {**STORED_PARSE_OUTPUT, "chunk_layout": {"header_chars": [1], "overlap_chars": []}},
            "differ in length",
        ),
    ],
)
def test_a_parse_output_not_of_its_shape_is_unreadable(content: Any, problem: str) -> None:
    with pytest.raises(UnreadableHandoff, match=problem) as raised:
        ParseOutput.from_json(stored(content))
    assert raised.value.artifact == PARSE_OUTPUT_ARTIFACT


def test_an_unreadable_handoff_never_quotes_its_content() -> None:
    content = {**STORED_PARSE_OUTPUT, "sample_conversation_ids": ["c-1", {"secret": "diary"}]}
    with pytest.raises(UnreadableHandoff) as raised:
        ParseOutput.from_json(content)
    assert "diary" not in str(raised.value)
    assert "Trip" not in str(raised.value)


# --- the quick-pass sections


def test_stored_quick_sections_round_trip() -> None:
    quick = QuickSections.from_json(stored(STORED_QUICK_SECTIONS))
    assert quick.identity["ai_name"] == "Wren"
    assert quick.to_json() == STORED_QUICK_SECTIONS


@pytest.mark.parametrize(
    "content",
    [
        None,
        "sections",
        {k: v for k, v in STORED_QUICK_SECTIONS.items() if k != "identity"},
        {**STORED_QUICK_SECTIONS, "tools": ["not", "an", "object"]},
    ],
)
def test_quick_sections_not_of_their_shape_are_unreadable(content: Any) -> None:
    with pytest.raises(UnreadableHandoff) as raised:
        QuickSections.from_json(stored(content))
    assert raised.value.artifact == QUICK_SECTIONS_ARTIFACT


# --- the fact batches


def test_a_stored_fact_batch_round_trips() -> None:
    name = facts_artifact(7)
    assert name == "facts:000007" and name.startswith(FACTS_PREFIX)
    batch = FactBatch.from_json(name, stored(STORED_FACT_BATCH))
    assert (batch.refused_parts, batch.splits) == (1, 2)
    assert batch.repairs == Counter({"facts.preferences/max_items": 3})
    assert batch.to_json() == STORED_FACT_BATCH


def test_a_fact_batch_saved_before_repairs_were_recorded_reads_without_repairs() -> None:
    batch = FactBatch.from_json(facts_artifact(0), stored(OLDER_FACT_BATCH))
    assert batch.repairs == Counter()
    assert batch.to_json() == {**OLDER_FACT_BATCH, "repairs": {}}


def test_the_halves_of_a_split_batch_join() -> None:
    first = FactBatch({c: [f"{c} 1"] for c in FACT_CATEGORIES}, repairs=Counter(a=1))
    second = FactBatch(
        {c: [f"{c} 2"] for c in FACT_CATEGORIES}, refused_parts=1, splits=1, repairs=Counter(a=2)
    )
    joined = first.joined(second)
    assert joined.facts["beliefs"] == ["beliefs 1", "beliefs 2"]
    assert (joined.refused_parts, joined.splits, joined.repairs) == (1, 2, Counter(a=3))


@pytest.mark.parametrize(
    "content",
    [
        None,
        [],
        {"refused_parts": 0, "splits": 0},
        {**STORED_FACT_BATCH, "facts": ["Prefers paper maps."]},
        {**STORED_FACT_BATCH, "facts": {"preferences": "Prefers paper maps."}},
        {**STORED_FACT_BATCH, "splits": "2"},
        {**STORED_FACT_BATCH, "refused_parts": -1},
    ],
)
def test_a_fact_batch_not_of_its_shape_is_unreadable(content: Any) -> None:
    with pytest.raises(UnreadableHandoff) as raised:
        FactBatch.from_json(facts_artifact(3), stored(content))
    assert raised.value.artifact == "facts:000003"


def test_an_unreadable_fact_batch_is_not_done_so_the_full_pass_asks_for_it_again() -> None:
    saved = [
        (facts_artifact(0), stored(STORED_FACT_BATCH)),
        (facts_artifact(1), {"facts": "garbled"}),
        (facts_artifact(2), stored(OLDER_FACT_BATCH)),
    ]
    assert readable_batches(saved) == [facts_artifact(0), facts_artifact(2)]
