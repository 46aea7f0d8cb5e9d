"""What the parse stage counts while it streams, for the job result and the later stages.

Everything here ends up in the job's ``result`` column, which the web app reads with every
poll: its size must not depend on what an upload holds. The only open-ended part is the
content types the linearizer did not know (their names come from the export), so those are
counted for at most ``MAX_CONTENT_TYPES`` names of at most ``MAX_CONTENT_TYPE_CHARS``
characters of ``[A-Za-z0-9_.-]``; every other message is counted in ``omitted`` and the result
says how many there were (see docs/hostile-uploads.md).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_CONTENT_TYPES = 50
"""Distinct unknown content types named in the result. ChatGPT has added a handful a year;
a list this long already says "this export is unusual" without growing with the upload."""

MAX_CONTENT_TYPE_CHARS = 64
"""Real content types are short snake_case names (``tether_browsing_display``: 23)."""

OMITTED = ""
"""The key under which messages of content types that are not named are counted: no valid
name is empty, so it never collides with one."""

_CONTENT_TYPE_NAME = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_CONTENT_TYPE_CHARS}}}")


class ContentTypeCounts:
    """Message counts by unknown content type, for at most ``MAX_CONTENT_TYPES`` names.

    A name is named (counted under itself) if it looks like a content type and was first seen
    while fewer than ``max_names`` names were; every other message is counted under
    ``OMITTED``. Which bucket a name goes to never changes during a parse, so a count taken
    back out (a duplicate replaced) leaves the bucket it went to.
    """

    def __init__(self, max_names: int = MAX_CONTENT_TYPES) -> None:
        self.max_names = max_names
        self._counts: dict[str, int] = {}
        self._omitted = 0

    def add(self, content_type: str, messages: int) -> str:
        """Count ``messages`` of ``content_type``; returns the key it was counted under."""
        key = self.key(content_type)
        if key == OMITTED:
            self._omitted += messages
        else:
            self._counts[key] = self._counts.get(key, 0) + messages
        return key

    def remove(self, key: str, messages: int) -> None:
        """Take back ``messages`` counted under ``key`` (as ``add`` returned it)."""
        if key == OMITTED:
            self._omitted -= messages
        elif key in self._counts:
            self._counts[key] -= messages

    def key(self, content_type: str) -> str:
        if content_type in self._counts:
            return content_type
        if len(self._counts) < self.max_names and _CONTENT_TYPE_NAME.fullmatch(content_type):
            self._counts[content_type] = 0  # named from now on, even if its count drops to 0
            return content_type
        return OMITTED

    @property
    def omitted(self) -> int:
        """Messages whose content type is not named."""
        return self._omitted

    def named(self) -> dict[str, int]:
        """The named content types with a count, sorted by name."""
        return {name: count for name, count in sorted(self._counts.items()) if count > 0}


@dataclass
class ParseCounts:
    conversations: int = 0  # kept conversations that have dialogue (duplicates resolved)
    messages: int = 0  # dialogue messages in them
    chunks: int = 0
    bad_conversations: int = 0  # entries that are not conversations (counted, skipped)
    conversations_without_dialogue: int = 0
    duplicates: int = 0  # copies of an id already seen (older ones dropped)
    truncated_messages: int = 0
    skipped_items: int = 0  # array items that are not objects at all
    numbers_read_as_text: int = 0  # numbers too large for the parser (``export_numbers``)
    unknown_content_types: ContentTypeCounts = field(default_factory=ContentTypeCounts)
    bad_conversation_reasons: Counter[str] = field(default_factory=Counter)
    # Canvas documents kept as messages, and Canvas calls that could not be replayed (their
    # document keeps its last good text): counted for every copy read, like bad entries.
    canvas_documents: int = 0
    canvas_updates_not_applied: int = 0

    def to_result(self) -> dict[str, Any]:
        return {
            "conversations": self.conversations,
            "messages": self.messages,
            "chunks": self.chunks,
            "bad_conversations": self.bad_conversations,
            "conversations_without_dialogue": self.conversations_without_dialogue,
            "duplicate_conversations": self.duplicates,
            "truncated_messages": self.truncated_messages,
            "skipped_items": self.skipped_items,
            "numbers_read_as_text": self.numbers_read_as_text,
            "unknown_content_types": self.unknown_content_types.named(),
            # Messages of unknown content types beyond the named ones (or with odd names).
            "unknown_content_types_omitted": self.unknown_content_types.omitted,
            "bad_conversation_reasons": dict(sorted(self.bad_conversation_reasons.items())),
            "canvas_documents": self.canvas_documents,
            "canvas_updates_not_applied": self.canvas_updates_not_applied,
        }
