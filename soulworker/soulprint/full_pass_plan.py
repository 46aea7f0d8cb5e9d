"""Which chunks the full pass reads, and how they are grouped into model calls.

Every chunk is sent at most once, without the overlap it repeats from the chunk before it, so no
conversation text is paid for twice. Chunks are grouped in stored order (a conversation's chunks
stay together) into batches of about ``batch_tokens`` input tokens: the instructions are paid once
per batch rather than once per chunk.

Over the job's token budget, the richest and most recent chunks are kept: recent conversations
first (the chat's ``is_recent``, under 180 days), then chunks with more turns (more of the person
speaking), then the newest. The plan says what was left out; the result reports it.

The plan is a pure function of the stored chunks and the settings, and it is saved before the
first call, so a resumed job works through exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from soulworker.llm.models import tokens_for_chars

# Tags and numbering around each excerpt in a batch prompt.
EXCERPT_OVERHEAD_TOKENS = 20


@dataclass(frozen=True)
class ChunkStat:
    chunk_index: int
    token_count: int
    message_count: int
    is_recent: bool
    created_at: datetime
    overlap_chars: int = 0

    @property
    def new_tokens(self) -> int:
        """Tokens this chunk adds to the full pass once its overlap is stripped."""
        return max(1, self.token_count - tokens_for_chars(self.overlap_chars))


@dataclass
class FullPassPlan:
    batches: list[list[int]]
    selected_chunks: int
    selected_tokens: int
    total_chunks: int
    total_tokens: int
    left_out: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "selected_chunks": self.selected_chunks,
            "selected_tokens": self.selected_tokens,
            "total_chunks": self.total_chunks,
            "total_tokens": self.total_tokens,
            "left_out": self.left_out,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FullPassPlan:
        return cls(
            batches=[list(batch) for batch in data["batches"]],
            selected_chunks=int(data["selected_chunks"]),
            selected_tokens=int(data["selected_tokens"]),
            total_chunks=int(data["total_chunks"]),
            total_tokens=int(data["total_tokens"]),
            left_out=dict(data.get("left_out") or {}),
        )

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "batches": len(self.batches),
            "chunks_read": self.selected_chunks,
            "input_tokens_planned": self.selected_tokens,
        }
        if self.left_out:
            out["left_out"] = self.left_out
        return out


def select_chunks(stats: Sequence[ChunkStat], budget_tokens: int) -> list[ChunkStat]:
    """All chunks when they fit the budget; else the richest and most recent that do.

    Either way in stored order (``chunk_index``), whatever order ``stats`` came in.
    """
    total = sum(stat.new_tokens + EXCERPT_OVERHEAD_TOKENS for stat in stats)
    if total <= budget_tokens:
        return sorted(stats, key=lambda s: s.chunk_index)
    ranked = sorted(
        stats,
        key=lambda s: (s.is_recent, s.message_count, s.created_at, -s.chunk_index),
        reverse=True,
    )
    chosen: list[ChunkStat] = []
    spent = 0
    for stat in ranked:
        cost = stat.new_tokens + EXCERPT_OVERHEAD_TOKENS
        if spent + cost > budget_tokens:
            continue
        chosen.append(stat)
        spent += cost
    return sorted(chosen, key=lambda s: s.chunk_index)


def plan_full_pass(
    stats: Sequence[ChunkStat], *, batch_tokens: int, budget_tokens: int
) -> FullPassPlan:
    selected = select_chunks(stats, budget_tokens)
    batches: list[list[int]] = []
    current: list[int] = []
    current_tokens = 0
    for stat in selected:
        cost = stat.new_tokens + EXCERPT_OVERHEAD_TOKENS
        if current and current_tokens + cost > batch_tokens:
            batches.append(current)
            current, current_tokens = [], 0
        current.append(stat.chunk_index)
        current_tokens += cost
    if current:
        batches.append(current)
    total_tokens = sum(stat.new_tokens for stat in stats)
    selected_tokens = sum(stat.new_tokens for stat in selected)
    left_out: dict[str, Any] = {}
    if len(selected) < len(stats):
        chosen = {stat.chunk_index for stat in selected}
        skipped = [stat for stat in stats if stat.chunk_index not in chosen]
        left_out = {
            "chunks": len(skipped),
            "input_tokens": total_tokens - selected_tokens,
            "oldest_kept": min(stat.created_at for stat in selected).isoformat()
            if selected
            else None,
            "reason": (
                f"the export needs about {total_tokens:,} input tokens; the full-pass budget is "
                f"{budget_tokens:,} (SOULWORKER_FULL_PASS_TOKEN_BUDGET), so the most recent "
                "chunks with the most turns were read and the rest left out"
            ),
        }
    return FullPassPlan(
        batches=batches,
        selected_chunks=len(selected),
        selected_tokens=selected_tokens,
        total_chunks=len(stats),
        total_tokens=total_tokens,
        left_out=left_out,
    )
