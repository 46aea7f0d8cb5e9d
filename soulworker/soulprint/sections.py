"""The five soulprint sections as the app stores them, and as readable markdown.

The web app parses each ``*_md`` column as a JSON string of its section (the predecessor's
format, kept because the app reads it). ``soulprint_text`` and the SOUL.md … TOOLS.md files of
``soulworker import`` are markdown rendered by our code from the same data: fields with "not
enough data" and empty lists are left out, labels are Title Case, as the chat renders them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from soulworker.llm.ai_name import NOT_ENOUGH_DATA
from soulworker.llm.schemas import SECTION_NAMES

SECTION_TITLES = {
    "soul": "Soul",
    "identity": "Identity",
    "user": "User",
    "agents": "Agents",
    "tools": "Tools",
}
SECTION_FILES = {name: f"{name.upper()}.md" for name in SECTION_NAMES}


def section_columns(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``{"soul_md": "<json>", …}`` for the five sections."""
    return {
        f"{name}_md": json.dumps(sections[name], ensure_ascii=False, sort_keys=True)
        for name in SECTION_NAMES
    }


def _known(value: Any) -> bool:
    if isinstance(value, str):
        # Models write the placeholder as asked, but not always in its exact case or without
        # a final stop ("Not enough data."): any such spelling is still no data.
        text = value.strip().rstrip(".!").strip().lower()
        return bool(text) and text != NOT_ENOUGH_DATA
    if isinstance(value, list):
        return any(_known(item) for item in value)
    return value is not None


# Labels that Title Case gets wrong.
LABELS = {"ai_name": "AI Name"}


def _label(key: str) -> str:
    return LABELS.get(key) or key.replace("_", " ").title()


def section_markdown(name: str, section: Mapping[str, Any], *, heading_level: int = 2) -> str:
    """One section as markdown: a heading, then one line or bullet list per known field."""
    lines = [f"{'#' * heading_level} {SECTION_TITLES.get(name, _label(name))}", ""]
    for key in sorted(section):
        value = section[key]
        if not _known(value):
            continue
        if isinstance(value, list):
            lines.append(f"**{_label(key)}**")
            lines.extend(f"- {item}" for item in value if _known(item))
            lines.append("")
        else:
            lines.append(f"**{_label(key)}:** {value}")
            lines.append("")
    if len(lines) == 2:
        lines.append("No data yet.")
    return "\n".join(lines).rstrip() + "\n"


def soulprint_text(sections: Mapping[str, Mapping[str, Any]], memory_md: str | None = None) -> str:
    """The flattened soulprint the chat puts in its system prompt."""
    parts = [section_markdown(name, sections[name]) for name in SECTION_NAMES]
    if memory_md:
        parts.append("## Memory\n\n" + memory_md.strip() + "\n")
    return "\n".join(parts)


def identity_fields(sections: Mapping[str, Mapping[str, Any]]) -> tuple[str, str | None]:
    """``(ai_name, archetype)``; the schema and its check guarantee a real ai_name."""
    identity = sections["identity"]
    archetype = identity.get("archetype")
    return str(identity["ai_name"]).strip(), (str(archetype).strip() if _known(archetype) else None)
