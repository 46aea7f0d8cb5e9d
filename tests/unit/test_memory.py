"""Facts merged and deduplicated, and MEMORY rendered under its five headings (docs/pipeline.md)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from soulworker.llm.schemas import FACT_CATEGORIES
from soulworker.soulprint.memory import (
    EMPTY_CATEGORY,
    category_chars,
    consolidate,
    empty_facts,
    fact_counts,
    fact_key,
    render_memory,
)

HEADINGS = [
    "## Preferences",
    "## Projects",
    "## Important Dates",
    "## Beliefs & Values",
    "## Decisions & Context",
]


def sections(memory: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in memory.splitlines():
        if line.startswith("## "):
            current = found.setdefault(line, [])
        elif current is not None and line.strip():
            current.append(line)
    return found


def test_string_facts_are_the_same_whatever_their_case_spacing_or_final_stop() -> None:
    same = ["Prefers tea.", "prefers   tea", "PREFERS TEA!", " Prefers\ttea ;", "Ｐrefers tea"]
    assert len({fact_key("preferences", fact) for fact in same}) == 1
    assert fact_key("preferences", "Prefers tea") != fact_key("preferences", "Prefers coffee")
    assert fact_key("beliefs", "Dr. Who matters") != fact_key("beliefs", "Dr Who matters")


def test_structured_facts_are_keyed_by_what_identifies_them() -> None:
    project = {"name": "Garden App", "description": "A", "details": "x"}
    renamed = {"name": "garden app ", "description": "B", "details": "y"}
    assert fact_key("projects", project) == fact_key("projects", renamed)
    assert fact_key("projects", project) != fact_key("projects", {**project, "name": "Other"})
    birthday = {"event": "Birthday", "date": "May 3"}
    assert fact_key("dates", birthday) == fact_key("dates", {"event": "birthday.", "date": "may 3"})
    assert fact_key("dates", birthday) != fact_key("dates", {"event": "Birthday", "date": "May 4"})
    moved = {"decision": "Moved to Lisbon", "context": "work"}
    assert fact_key("decisions", moved) == fact_key(
        "decisions", {"decision": "moved to lisbon", "context": "family"}
    )


def test_consolidate_keeps_the_first_of_each_fact_in_order() -> None:
    batches = [
        {
            "preferences": ["Prefers tea.", "Runs daily."],
            "projects": [{"name": "Garden", "description": "first", "details": "d"}],
        },
        {
            "preferences": ["prefers tea", "Reads sci-fi."],
            "projects": [{"name": "garden", "description": "second", "details": "d"}],
            "dates": [{"event": "Wedding", "date": "June 2025"}],
        },
    ]
    facts = consolidate(batches)
    assert facts["preferences"] == ["Prefers tea.", "Runs daily.", "Reads sci-fi."]
    assert [p["description"] for p in facts["projects"]] == ["first"]
    assert facts["dates"] == [{"event": "Wedding", "date": "June 2025"}]
    assert facts["beliefs"] == facts["decisions"] == []
    assert fact_counts(facts) == {
        "preferences": 3,
        "projects": 1,
        "dates": 1,
        "beliefs": 0,
        "decisions": 0,
    }


def test_whitespace_is_tidied_and_blank_facts_are_dropped() -> None:
    facts = consolidate([{"preferences": ["  Likes\n\njazz  ", "   ", ""], "beliefs": None}])
    assert facts["preferences"] == ["Likes jazz"]
    assert facts["beliefs"] == []


def test_memory_has_the_five_headings_in_order_with_no_data_yet_when_empty() -> None:
    memory = render_memory(empty_facts())
    assert memory.startswith("# MEMORY\n")
    assert list(sections(memory)) == HEADINGS
    assert all(lines == [EMPTY_CATEGORY] for lines in sections(memory).values())
    assert EMPTY_CATEGORY == "No data yet."


def test_memory_renders_each_kind_of_fact_as_one_bullet() -> None:
    facts = consolidate(
        [
            {
                "preferences": ["Prefers tea."],
                "projects": [
                    {"name": "Garden", "description": "A planner.", "details": "In Rust."}
                ],
                "dates": [{"event": "Wedding", "date": "June 2025"}],
                "beliefs": [],
                "decisions": [{"decision": "Moved to Lisbon", "context": "A new job."}],
            }
        ]
    )
    found = sections(render_memory(facts))
    assert found["## Preferences"] == ["- Prefers tea."]
    assert found["## Projects"] == ["- **Garden**: A planner. (In Rust.)"]
    assert found["## Important Dates"] == ["- June 2025: Wedding"]
    assert found["## Beliefs & Values"] == [EMPTY_CATEGORY]
    assert found["## Decisions & Context"] == ["- Moved to Lisbon (context: A new job.)"]


def test_a_fact_cannot_break_the_layout_of_memory() -> None:
    facts = consolidate([{"preferences": ["Likes\n## Projects\n- fake bullet"]}])
    memory = render_memory(facts)
    assert list(sections(memory)) == HEADINGS
    assert sections(memory)["## Projects"] == [EMPTY_CATEGORY]


def test_category_chars_is_the_size_of_the_rendered_bullets() -> None:
    facts = consolidate([{"preferences": ["Prefers tea.", "Runs daily."]}])
    bullets = "".join(f"- {fact}\n" for fact in facts["preferences"])
    assert category_chars("preferences", facts["preferences"]) == len(bullets)


fact_text = st.text(alphabet=st.sampled_from("abcAB .!\n"), min_size=0, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(FACT_CATEGORIES), st.lists(fact_text)), max_size=6))
def test_consolidate_properties(batches: list[dict[str, list[str]]]) -> None:
    facts = consolidate(batches)
    for category in FACT_CATEGORIES:
        keys = [fact_key(category, fact) for fact in facts[category]]
        assert len(keys) == len(set(keys)), "no duplicates"
        assert all(keys), "no blank facts"
        given_keys = {
            fact_key(category, fact) for batch in batches for fact in batch.get(category, [])
        } - {""}
        assert set(keys) == given_keys, "nothing lost"
    assert consolidate([facts]) == facts, "idempotent"
    assert list(sections(render_memory(facts))) == HEADINGS
