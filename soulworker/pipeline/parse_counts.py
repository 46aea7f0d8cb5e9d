"""What the parse stage counts while it streams, for the job result and the later stages."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


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
    unknown_content_types: Counter[str] = field(default_factory=Counter)
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
            "unknown_content_types": dict(sorted(self.unknown_content_types.items())),
            "bad_conversation_reasons": dict(sorted(self.bad_conversation_reasons.items())),
            "canvas_documents": self.canvas_documents,
            "canvas_updates_not_applied": self.canvas_updates_not_applied,
        }
