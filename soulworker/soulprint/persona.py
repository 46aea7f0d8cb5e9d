"""Collects persona signals across a whole export into one labelled, bounded text for the model.

Custom instructions and memory writes are the densest facts about a person (docs/pipeline.md
"Persona signals"). The export repeats them: every conversation carries the custom-instruction
version in force when it ran, and the same memory may be written several times. This collector
keeps every *distinct* signal (whitespace-normalised text) per kind, within a character budget,
and renders one block per kind, newest first.

Memory stays bounded while streaming: the collector never holds more signal text than the
budget, plus at most one signal in flight. When adding a signal would go over the budget, it
evicts the oldest signal of the kind that currently holds the most text. Kinds with little text
therefore keep all of it, and large kinds share what is left, keeping their newest signals.
A signal evicted earlier that appears again is treated as new (its text is no longer known), so
counts of duplicates are counts among the signals held at the time.

The memory snapshot kind keeps only the newest snapshot: each snapshot is ChatGPT's whole saved
memory at one moment, so an older one is an outdated copy of the newer.

Everything the collector renders is personal data for the model prompt, never for logs.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field

from soulworker.conversations.conversation import (
    Conversation,
    PersonaKind,
    PersonaSignal,
    epoch_to_datetime,
)

DEFAULT_PERSONA_BUDGET_CHARS = 20_000
"""About 5K tokens: several custom-instruction versions and a few hundred memories, while the
quick-pass conversation sample (200K characters) stays the bulk of the prompt."""

DEFAULT_MAX_SIGNAL_CHARS = 6_000
"""One signal is cut to this: ChatGPT caps each custom-instruction field at 1,500 characters and a
saved-memory snapshot runs to a few thousand, so only freak signals are cut, and one of them
cannot crowd every other signal out of the budget."""

MIN_PERSONA_BUDGET_CHARS = 1_000
"""Below this the headers alone would use most of the budget."""

KIND_ORDER = (
    PersonaKind.CUSTOM_INSTRUCTIONS,
    PersonaKind.SYSTEM_PROFILE,
    PersonaKind.MEMORY_SNAPSHOT,
    PersonaKind.MEMORY_WRITE,
)
"""Block order in the rendered text (what the user wrote first, then what the model remembered);
on a tie for the most text held, the later kind gives up text first."""

BLOCK_HEADERS = {
    PersonaKind.CUSTOM_INSTRUCTIONS: (
        "## Custom instructions the user wrote for ChatGPT (each version, newest first)"
    ),
    PersonaKind.SYSTEM_PROFILE: "## Profile notes the user set for ChatGPT (newest first)",
    PersonaKind.MEMORY_SNAPSHOT: "## ChatGPT's saved memory about the user (latest snapshot)",
    PersonaKind.MEMORY_WRITE: "## Memories ChatGPT saved during conversations (newest first)",
}

ITEM_SEPARATOR = "\n\n"
BLOCK_SEPARATOR = "\n\n"
UNDATED = "undated"
CUT_MARK = "…"

_HEADERS_RESERVE = sum(len(h) + 1 + len(BLOCK_SEPARATOR) for h in BLOCK_HEADERS.values())
"""Characters set aside for every header, so items and headers together fit the budget."""

_ITEM_OVERHEAD = len("[YYYY-MM-DD] ") + len(ITEM_SEPARATOR)
"""Characters an item costs besides its text (an ``[undated]`` label is shorter)."""

_COMPACT_SLACK = 64
"""Stale heap entries tolerated before the heap is rebuilt (bounds memory under churn)."""


@dataclass(frozen=True, slots=True)
class PersonaCounts:
    """What happened to the signals of one kind.

    ``seen``: signals offered (non-empty). ``kept``: distinct signals in the output.
    ``duplicates``: signals whose text matched one held at the time. ``dropped``: signals evicted
    for the budget, or superseded snapshots.
    """

    seen: int
    kept: int
    duplicates: int
    dropped: int


class PersonaCountsByKind(dict[PersonaKind, PersonaCounts]):
    """``PersonaCounts`` for every kind, in ``KIND_ORDER``."""

    def to_result(self) -> dict[str, dict[str, int]]:
        """The counts as plain JSON for the job result, keyed by kind name."""
        return {
            kind.value: {
                "seen": counts.seen,
                "kept": counts.kept,
                "duplicates": counts.duplicates,
                "dropped": counts.dropped,
            }
            for kind, counts in self.items()
        }


@dataclass(frozen=True, slots=True)
class PersonaDigest:
    """The rendered persona input: ``text`` is every non-empty block joined, in ``KIND_ORDER``.

    ``len(text)`` never exceeds the collector's budget. ``counts`` has an entry for every kind.
    """

    text: str
    blocks: tuple[tuple[PersonaKind, str], ...]
    counts: PersonaCountsByKind


@dataclass(slots=True)
class _Held:
    text: str
    time: float | None
    seq: int
    cost: int
    version: int = 0


@dataclass(slots=True)
class _Pool:
    """The held signals of one kind, with a min-heap of (recency, seq, version, key) entries for
    finding the oldest; entries whose version no longer matches are stale and skipped."""

    items: dict[bytes, _Held] = field(default_factory=dict)
    heap: list[tuple[float, int, int, bytes]] = field(default_factory=list)
    total: int = 0
    seen: int = 0
    duplicates: int = 0
    dropped: int = 0


class PersonaCollector:
    """Accumulates persona signals while an export streams; ``digest()`` renders them.

    Deterministic: the same signals offered in the same order give the same text.
    """

    def __init__(
        self,
        *,
        budget_chars: int = DEFAULT_PERSONA_BUDGET_CHARS,
        max_signal_chars: int = DEFAULT_MAX_SIGNAL_CHARS,
    ) -> None:
        """Raises ``ValueError`` for a budget below ``MIN_PERSONA_BUDGET_CHARS`` or a
        non-positive ``max_signal_chars`` (programming errors)."""
        if budget_chars < MIN_PERSONA_BUDGET_CHARS:
            raise ValueError(f"budget_chars must be at least {MIN_PERSONA_BUDGET_CHARS}")
        if max_signal_chars < 1:
            raise ValueError("max_signal_chars must be positive")
        self._items_budget = budget_chars - _HEADERS_RESERVE
        self._max_signal_chars = min(max_signal_chars, self._items_budget - _ITEM_OVERHEAD)
        self._pools = {kind: _Pool() for kind in KIND_ORDER}
        self._total = 0
        self._seq = 0

    def add_conversation(self, conversation: Conversation) -> None:
        """Add every persona signal of one linearized conversation."""
        for signal in conversation.persona_signals:
            self.add(signal)

    def add(self, signal: PersonaSignal) -> None:
        """Add one signal; a duplicate refreshes the time of the held copy to the newer one."""
        text = signal.text.strip()
        if not text:
            return
        if len(text) > self._max_signal_chars:
            text = text[: self._max_signal_chars - len(CUT_MARK)].rstrip() + CUT_MARK
        self._seq += 1
        pool = self._pools[signal.kind]
        pool.seen += 1
        key = _dedup_key(text)
        held = pool.items.get(key)
        if held is not None:
            pool.duplicates += 1
            if _recency(signal.time) >= _recency(held.time):
                self._refresh(pool, key, held, signal.time)
        elif signal.kind is PersonaKind.MEMORY_SNAPSHOT and pool.items:
            self._replace_snapshot(pool, key, text, signal.time)
        else:
            self._insert(pool, key, text, signal.time)
        self._enforce_budget()

    def digest(self) -> PersonaDigest:
        """The labelled text and the counts; does not change the collector."""
        blocks: list[tuple[PersonaKind, str]] = []
        counts = PersonaCountsByKind()
        for kind in KIND_ORDER:
            pool = self._pools[kind]
            counts[kind] = PersonaCounts(
                seen=pool.seen,
                kept=len(pool.items),
                duplicates=pool.duplicates,
                dropped=pool.dropped,
            )
            if not pool.items:
                continue
            newest_first = sorted(
                pool.items.values(), key=lambda h: (_recency(h.time), h.seq), reverse=True
            )
            body = ITEM_SEPARATOR.join(_render_item(h.text, h.time) for h in newest_first)
            blocks.append((kind, f"{BLOCK_HEADERS[kind]}\n{body}"))
        text = BLOCK_SEPARATOR.join(block for _, block in blocks)
        return PersonaDigest(text=text, blocks=tuple(blocks), counts=counts)

    def _insert(self, pool: _Pool, key: bytes, text: str, time: float | None) -> None:
        held = _Held(text=text, time=time, seq=self._seq, cost=_item_cost(text, time))
        pool.items[key] = held
        heapq.heappush(pool.heap, (_recency(time), held.seq, held.version, key))
        pool.total += held.cost
        self._total += held.cost

    def _refresh(self, pool: _Pool, key: bytes, held: _Held, time: float | None) -> None:
        new_cost = _item_cost(held.text, time)
        pool.total += new_cost - held.cost
        self._total += new_cost - held.cost
        held.time, held.seq, held.cost = time, self._seq, new_cost
        held.version += 1
        heapq.heappush(pool.heap, (_recency(time), held.seq, held.version, key))
        self._compact(pool)

    def _replace_snapshot(self, pool: _Pool, key: bytes, text: str, time: float | None) -> None:
        [(old_key, old)] = pool.items.items()
        if _recency(time) < _recency(old.time):
            pool.dropped += 1  # an older snapshot than the one held
            return
        self._remove(pool, old_key, old)
        pool.dropped += 1
        self._insert(pool, key, text, time)

    def _remove(self, pool: _Pool, key: bytes, held: _Held) -> None:
        del pool.items[key]
        pool.total -= held.cost
        self._total -= held.cost
        self._compact(pool)

    def _enforce_budget(self) -> None:
        while self._total > self._items_budget:
            # The kind holding the most text gives up its oldest signal; on a tie the kind
            # later in KIND_ORDER gives up first (max keeps the first maximum it meets).
            pool = max(reversed(self._pools.values()), key=lambda p: p.total)
            key, held = self._oldest(pool)
            self._remove(pool, key, held)
            pool.dropped += 1

    @staticmethod
    def _oldest(pool: _Pool) -> tuple[bytes, _Held]:
        while True:
            _, _, version, key = heapq.heappop(pool.heap)
            held = pool.items.get(key)
            if held is not None and held.version == version:
                return key, held

    @staticmethod
    def _compact(pool: _Pool) -> None:
        if len(pool.heap) > 2 * len(pool.items) + _COMPACT_SLACK:
            pool.heap = [(_recency(h.time), h.seq, h.version, k) for k, h in pool.items.items()]
            heapq.heapify(pool.heap)


def _dedup_key(text: str) -> bytes:
    """A short digest of the whitespace-normalised text: equal texts up to spacing match, and
    only 16 bytes per signal are held for the comparison."""
    normalized = " ".join(text.split())
    return hashlib.blake2b(normalized.encode("utf-8"), digest_size=16).digest()


def _recency(time: float | None) -> float:
    return time if time is not None else float("-inf")


def _date_label(time: float | None) -> str:
    moment = epoch_to_datetime(time)
    return moment.date().isoformat() if moment is not None else UNDATED


def _render_item(text: str, time: float | None) -> str:
    return f"[{_date_label(time)}] {text}"


def _item_cost(text: str, time: float | None) -> int:
    return len(_render_item(text, time)) + len(ITEM_SEPARATOR)
