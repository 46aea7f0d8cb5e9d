"""Which copy of a conversation wins when an export holds the same id more than once.

Re-exports and shards repeat conversations. DESIGN §12: the newest ``update_time`` wins; a tie goes
to the larger mapping, then to the one read later. Decisions are made while streaming, so each
conversation is remembered by a small fixed-size record (never its content): memory grows by
about a hundred bytes per conversation, a few MB for the largest exports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


@dataclass(slots=True)
class SeenConversation:
    """What is remembered of the copy currently kept: enough to undo it if a better one comes."""

    update_time: float
    mapping_size: int
    chunk_indexes: range
    message_count: int
    # What the copy added to the job's counts besides its messages, so a replacement can take
    # it back out. Almost always 0 and the shared empty tuple: no per-conversation cost.
    truncated_messages: int = 0
    unknown_content_types: tuple[tuple[str, int], ...] = ()


class Verdict(Enum):
    NEW = "new"  # first time this id is seen: keep it
    REPLACES = "replaces"  # a better copy of one already kept: keep it, undo the old one
    STALE = "stale"  # an older (or equal and smaller) copy: skip it


def _when(update_time: float | None) -> float:
    return update_time if update_time is not None and math.isfinite(update_time) else -math.inf


class DuplicateResolver:
    def __init__(self) -> None:
        self._seen: dict[str, SeenConversation] = {}
        self.duplicates = 0

    def judge(
        self, conversation_id: str, update_time: float | None, mapping_size: int
    ) -> tuple[Verdict, SeenConversation | None]:
        """Decide about a newly read copy; for REPLACES also return the copy it replaces."""
        previous = self._seen.get(conversation_id)
        if previous is None:
            return Verdict.NEW, None
        self.duplicates += 1
        candidate = (_when(update_time), mapping_size)
        kept = (previous.update_time, previous.mapping_size)
        # ">=" gives ties to the copy read later, as the contract says.
        if candidate >= kept:
            return Verdict.REPLACES, previous
        return Verdict.STALE, None

    def keep(
        self,
        conversation_id: str,
        update_time: float | None,
        mapping_size: int,
        chunk_indexes: range,
        message_count: int,
        *,
        truncated_messages: int = 0,
        unknown_content_types: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self._seen[conversation_id] = SeenConversation(
            _when(update_time),
            mapping_size,
            chunk_indexes,
            message_count,
            truncated_messages,
            unknown_content_types,
        )

    def __len__(self) -> int:
        return len(self._seen)
