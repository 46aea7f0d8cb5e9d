"""Facts from the full pass: merged, deduplicated, and rendered by our code as MEMORY markdown.

Categories and their headings are fixed (docs/pipeline.md): Preferences, Projects, Important Dates,
Beliefs & Values, Decisions & Context, each with "No data yet." when empty. Duplicates are found
by a normalized key (case, whitespace and trailing punctuation ignored; projects by name, dates by
event and date, decisions by the decision), keeping the first occurrence, which comes from the
earliest batch and so from the start of the export.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from soulworker.llm.schemas import FACT_CATEGORIES

HEADINGS = {
    "preferences": "Preferences",
    "projects": "Projects",
    "dates": "Important Dates",
    "beliefs": "Beliefs & Values",
    "decisions": "Decisions & Context",
}
EMPTY_CATEGORY = "No data yet."
MEMORY_TITLE = "# MEMORY"

Facts = dict[str, list[Any]]

_SPACES = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s.!;,:]+$")


def empty_facts() -> Facts:
    return {category: [] for category in FACT_CATEGORIES}


def _normal(text: object) -> str:
    value = unicodedata.normalize("NFKC", str(text))
    return _TRAILING.sub("", _SPACES.sub(" ", value)).strip().casefold()


def fact_key(category: str, fact: Any) -> str:
    """The identity of a fact for deduplication."""
    if isinstance(fact, str):
        return _normal(fact)
    if not isinstance(fact, Mapping):
        return _normal(fact)
    if category == "projects":
        return _normal(fact.get("name", ""))
    if category == "dates":
        return _normal(fact.get("event", "")) + "|" + _normal(fact.get("date", ""))
    if category == "decisions":
        return _normal(fact.get("decision", ""))
    return _normal(sorted(fact.items()))


def _clean(fact: Any) -> Any:
    if isinstance(fact, str):
        return _SPACES.sub(" ", fact).strip()
    if isinstance(fact, Mapping):
        return {key: _SPACES.sub(" ", str(value)).strip() for key, value in fact.items()}
    return fact


def consolidate(batches: Iterable[Mapping[str, Any]]) -> Facts:
    """Merge fact batches into one set, without duplicates, in first-seen order."""
    merged = empty_facts()
    seen: dict[str, set[str]] = {category: set() for category in FACT_CATEGORIES}
    for batch in batches:
        for category in FACT_CATEGORIES:
            for fact in batch.get(category) or ():
                cleaned = _clean(fact)
                key = fact_key(category, cleaned)
                if not key or key in seen[category]:
                    continue
                seen[category].add(key)
                merged[category].append(cleaned)
    return merged


def fact_line(category: str, fact: Any) -> str:
    """One fact as one markdown bullet's text."""
    if isinstance(fact, str):
        return fact
    if category == "projects":
        # A project may come without a description or details (their default is empty).
        text = f"**{fact.get('name', '')}**"
        description = fact.get("description")
        text = f"{text}: {description}" if description else text
        details = fact.get("details")
        return f"{text} ({details})" if details else text
    if category == "dates":
        return f"{fact.get('date', '')}: {fact.get('event', '')}"
    if category == "decisions":
        context = fact.get("context")
        return f"{fact.get('decision', '')}" + (f" (context: {context})" if context else "")
    return str(fact)


def category_chars(category: str, facts: Iterable[Any]) -> int:
    return sum(len(fact_line(category, fact)) + 3 for fact in facts)


def render_memory(facts: Mapping[str, list[Any]]) -> str:
    """MEMORY markdown under the five fixed headings."""
    lines = [MEMORY_TITLE, ""]
    for category in FACT_CATEGORIES:
        lines.append(f"## {HEADINGS[category]}")
        lines.append("")
        items = facts.get(category) or []
        if items:
            lines.extend(f"- {fact_line(category, fact)}" for fact in items)
        else:
            lines.append(EMPTY_CATEGORY)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def fact_counts(facts: Mapping[str, list[Any]]) -> dict[str, int]:
    return {category: len(facts.get(category) or []) for category in FACT_CATEGORIES}
