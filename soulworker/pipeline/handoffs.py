"""What one stage hands on to the later ones, as frozen values (docs/pipeline.md, "What each
stage hands on").

Each contract sits beside the name of the artifact it is stored under and reads and writes
exactly the JSON shape stored today: a job in flight across a deploy resumes from what an
older worker saved. Stages read and write each other's working data only through these.

Reading is strict about the shape and lenient about age: a field that older workers did not
write yet reads as its empty value (as the stages always read it), while a value that is not
the contract's shape at all (absent, not an object, a field of the wrong type or missing since
the first version) raises :class:`UnreadableHandoff`. The pipeline then treats the stage that
keeps the artifact as not done and redoes it, as for pruned working data
(``ImportRun.forget_stages_without_their_data``); a fact batch that cannot be read is asked for
again by the full pass.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from soulworker.conversations.chunk_layout import ChunkLayout
from soulworker.llm.schemas import SECTION_NAMES
from soulworker.soulprint.degraded import add_counts

PARSE_OUTPUT_ARTIFACT = "parse_output"
QUICK_SECTIONS_ARTIFACT = "quick_pass_sections"
FACTS_PREFIX = "facts:"


class UnreadableHandoff(ValueError):
    """A stored handoff that is not its contract's shape. Names the artifact and the problem,
    never the content (which is conversation-derived)."""

    def __init__(self, artifact: str, problem: str) -> None:
        super().__init__(f"the artifact {artifact} cannot be read: {problem}")
        self.artifact = artifact


# --- the parse's output: what the model stages need from the export, so none reads it again


@dataclass(frozen=True)
class ParseOutput:
    """The quick-pass sample, the best conversations, the persona signals and the chunk layout.

    The counts the prompts quote are not here: they are the parse's counts in the job result
    (``soulprint.section_request.prompt_stats``).
    """

    sample_text: str
    sample_conversation_ids: tuple[str, ...]
    # The best conversations of the export with their sampler scores, best first.
    top_conversations: tuple[tuple[str, int], ...]
    persona_text: str
    # Mutable arrays inside a frozen value: built by the parse only, read-only after it.
    chunk_layout: ChunkLayout = field(default_factory=ChunkLayout)

    def best_conversation_ids(self, limit: int) -> list[str]:
        return [conversation_id for conversation_id, _ in self.top_conversations[:limit]]

    def to_json(self) -> dict[str, Any]:
        return {**self._fields_json(), "chunk_layout": self.chunk_layout.to_json()}

    def to_json_text(self) -> str:
        """``to_json()`` as JSON text, made in slices: one ``json.dumps`` of the chunk layout of
        a million chunks runs ~0.2 s in C without letting go of the GIL, which stalls the event
        loop while the parse thread encodes it; here no step holds the GIL for more than a few
        milliseconds."""
        layout = self.chunk_layout
        return "".join(
            (
                json.dumps(self._fields_json())[:-1],
                ', "chunk_layout": {"header_chars": ',
                _int_list_json(layout.header_chars),
                ', "overlap_chars": ',
                _int_list_json(layout.overlap_chars),
                "}}",
            )
        )

    def _fields_json(self) -> dict[str, Any]:
        return {
            "sample_text": self.sample_text,
            "sample_conversation_ids": list(self.sample_conversation_ids),
            "top_conversations": [[cid, score] for cid, score in self.top_conversations],
            "persona_text": self.persona_text,
        }

    @classmethod
    def from_json(cls, data: Any) -> ParseOutput:
        """Every field has been written since the first version: a missing one is unreadable."""
        fields = _object(PARSE_OUTPUT_ARTIFACT, data)
        layout = _object(PARSE_OUTPUT_ARTIFACT, _field(fields, "chunk_layout"), "chunk_layout")
        try:
            chunk_layout = ChunkLayout(
                _list(layout, "header_chars"), _list(layout, "overlap_chars")
            )
        except (TypeError, OverflowError):
            raise _unreadable("chunk_layout holds something else than chunk sizes") from None
        if len(chunk_layout.header_chars) != len(chunk_layout.overlap_chars):
            raise _unreadable("chunk_layout's two lists differ in length")
        return cls(
            sample_text=_str(fields, "sample_text"),
            sample_conversation_ids=tuple(_str_list(fields, "sample_conversation_ids")),
            top_conversations=tuple(_ranked(entry) for entry in _list(fields, "top_conversations")),
            persona_text=_str(fields, "persona_text"),
            chunk_layout=chunk_layout,
        )


def _unreadable(problem: str) -> UnreadableHandoff:
    return UnreadableHandoff(PARSE_OUTPUT_ARTIFACT, problem)


def _field(fields: Mapping[str, Any], name: str) -> Any:
    if name not in fields:
        raise _unreadable(f"{name} is missing")
    return fields[name]


def _str(fields: Mapping[str, Any], name: str) -> str:
    value = _field(fields, name)
    if not isinstance(value, str):
        raise _unreadable(f"{name} is not text")
    return value


def _list(fields: Mapping[str, Any], name: str) -> list[Any]:
    value = _field(fields, name)
    if not isinstance(value, list):
        raise _unreadable(f"{name} is not a list")
    return value


def _str_list(fields: Mapping[str, Any], name: str) -> list[str]:
    values = _list(fields, name)
    if not all(isinstance(value, str) for value in values):
        raise _unreadable(f"{name} holds something else than text")
    return values


def _ranked(entry: Any) -> tuple[str, int]:
    if (
        isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], int)
        and not isinstance(entry[1], bool)
    ):
        return entry[0], entry[1]
    raise _unreadable("top_conversations holds something else than [id, score] pairs")


JSON_SLICE = 65_536
"""Integers encoded per step by ``_int_list_json``: a few milliseconds of C each."""


def _int_list_json(values: Sequence[int]) -> str:
    """The JSON list of ``values``, encoded a slice at a time."""
    slices = (
        ",".join(map(str, values[start : start + JSON_SLICE]))
        for start in range(0, len(values), JSON_SLICE)
    )
    return "[" + ",".join(slices) + "]"


# --- the quick pass's sections: what the finish falls back to and takes the identity from


@dataclass(frozen=True)
class QuickSections:
    """The five sections of the quick pass's answer, stored as the bare answer object."""

    sections: Mapping[str, Mapping[str, Any]]

    @property
    def identity(self) -> Mapping[str, Any]:
        return self.sections["identity"]

    def to_json(self) -> dict[str, Any]:
        return {name: dict(section) for name, section in self.sections.items()}

    @classmethod
    def from_json(cls, data: Any) -> QuickSections:
        sections = _object(QUICK_SECTIONS_ARTIFACT, data)
        for name in SECTION_NAMES:
            if not isinstance(sections.get(name), dict):
                raise UnreadableHandoff(QUICK_SECTIONS_ARTIFACT, f"the {name} section is missing")
        return cls(sections)


# --- the full pass's facts, one artifact per batch, saved as each batch returns


def facts_artifact(batch_number: int) -> str:
    return f"{FACTS_PREFIX}{batch_number:06d}"


@dataclass(frozen=True)
class FactBatch:
    """One batch's facts as saved in its artifact: the facts, the parts the model refused, how
    often the batch was split, and the soft repairs of its answers (``count_repairs``)."""

    facts: Mapping[str, list[Any]]
    refused_parts: int = 0
    splits: int = 0
    repairs: Counter[str] = field(default_factory=Counter)

    def joined(self, second: FactBatch) -> FactBatch:
        """The two halves of a split batch as one."""
        facts = {
            key: list(self.facts.get(key, [])) + list(second.facts.get(key, []))
            for key in self.facts
        }
        return FactBatch(
            facts,
            refused_parts=self.refused_parts + second.refused_parts,
            splits=1 + self.splits + second.splits,
            repairs=self.repairs + second.repairs,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "facts": dict(self.facts),
            "refused_parts": self.refused_parts,
            "splits": self.splits,
            "repairs": dict(self.repairs),
        }

    @classmethod
    def from_json(cls, name: str, data: Any) -> FactBatch:
        """``name`` is the artifact's (``facts_artifact``). ``repairs`` came later: a batch
        saved before reads as one without repairs."""
        content = _object(name, data)
        facts = content.get("facts")
        if not isinstance(facts, dict) or not all(
            isinstance(items, list) for items in facts.values()
        ):
            raise UnreadableHandoff(name, "facts is not an object of lists")
        counts = {key: content.get(key, 0) for key in ("refused_parts", "splits")}
        for key, value in counts.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UnreadableHandoff(name, f"{key} is not a count")
        repairs: Counter[str] = Counter()
        add_counts(repairs, content.get("repairs"))
        return cls(
            facts, refused_parts=counts["refused_parts"], splits=counts["splits"], repairs=repairs
        )


def _object(artifact: str, data: Any, what: str = "") -> dict[str, Any]:
    if data is None and not what:
        raise UnreadableHandoff(artifact, "it is not there")
    if not isinstance(data, dict):
        raise UnreadableHandoff(artifact, f"{what or 'it'} is not an object")
    return data
