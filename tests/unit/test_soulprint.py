"""The five sections as the app stores them (JSON strings) and as markdown (soulprint_text)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from soulworker.llm.ai_name import NOT_ENOUGH_DATA
from soulworker.llm.schemas import SECTION_NAMES, SOULPRINT
from soulworker.soulprint.sections import (
    SECTION_FILES,
    identity_fields,
    section_columns,
    section_markdown,
    soulprint_text,
)
from soulworker.testing.messages_api import generate_from_schema


def sections(seed: int = 1) -> dict[str, Any]:
    data = generate_from_schema(SOULPRINT.wire_schema, random.Random(seed))
    assert isinstance(data, dict)
    assert SOULPRINT.validate(data) == []
    return data


def test_each_column_is_the_json_string_of_its_section() -> None:
    data = sections()
    data["user"]["name"] = "Zoë"
    columns = section_columns(data)
    assert set(columns) == {f"{name}_md" for name in SECTION_NAMES}
    for name in SECTION_NAMES:
        assert json.loads(columns[f"{name}_md"]) == data[name]
    assert "Zoë" in columns["user_md"], "stored as text, not \\u escapes"
    assert section_columns(data) == columns, "the same sections give the same strings"


def test_markdown_shows_known_fields_with_title_case_labels() -> None:
    section = {
        "communication_style": "Direct and warm.",
        "personality_traits": ["Curious", "Patient"],
        "humor_style": NOT_ENOUGH_DATA,
        "boundaries": "Not enough data.",
        "tone_preferences": "  ",
        "emotional_patterns": "NOT ENOUGH DATA",
        "formality_level": "casual",
    }
    markdown = section_markdown("soul", section)
    assert markdown.splitlines()[0] == "## Soul"
    assert "**Communication Style:** Direct and warm." in markdown
    assert "**Personality Traits**\n- Curious\n- Patient" in markdown
    assert "**Formality Level:** casual" in markdown
    for hidden in ("Humor Style", "Boundaries", "Tone Preferences", "Emotional Patterns"):
        assert hidden not in markdown, hidden
    assert "enough data" not in markdown.lower()


def test_lists_leave_out_unknown_items_and_empty_lists() -> None:
    section = {
        "likely_usage": ["Coding", NOT_ENOUGH_DATA, ""],
        "capabilities_emphasis": [],
        "output_preferences": "Tables.",
        "depth_preference": NOT_ENOUGH_DATA,
    }
    markdown = section_markdown("tools", section)
    assert "**Likely Usage**\n- Coding\n" in markdown
    assert "- \n" not in markdown
    assert "Capabilities Emphasis" not in markdown


def test_a_section_with_nothing_known_says_so() -> None:
    markdown = section_markdown("user", {"name": NOT_ENOUGH_DATA, "interests": []})
    assert markdown == "## User\n\nNo data yet.\n"


def test_soulprint_text_has_the_five_sections_in_order_then_memory() -> None:
    data = sections(2)
    text = soulprint_text(data)
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Soul", "## Identity", "## User", "## Agents", "## Tools"]
    assert data["identity"]["ai_name"] in text
    with_memory = soulprint_text(data, "# MEMORY\n\n## Preferences\n\n- Tea\n")
    assert with_memory.startswith(text)
    assert with_memory[len(text) :].startswith("\n## Memory\n\n# MEMORY")
    assert soulprint_text(data, "") == text


def test_identity_fields_give_the_name_and_a_known_archetype() -> None:
    data = sections(3)
    data["identity"]["ai_name"] = "  Wren  "
    data["identity"]["archetype"] = "Quiet Cartographer"
    assert identity_fields(data) == ("Wren", "Quiet Cartographer")
    data["identity"]["archetype"] = NOT_ENOUGH_DATA
    assert identity_fields(data) == ("Wren", None)


@pytest.mark.parametrize("name", SECTION_NAMES)
def test_each_section_has_its_file_name(name: str) -> None:
    assert SECTION_FILES[name] == f"{name.upper()}.md"
