"""The data model the parse stage produces: conversations, their dialogue, persona signals, chunks.

Everything here is an immutable value (frozen, slotted dataclasses) so that a conversation can be
handed to the chunker, the quick-pass sampler and the persona collector without any of them being
able to change what the others see.

Times are epoch seconds as floats, exactly as the export carries them, and are already validated by
the linearizer: finite and inside the range ``datetime`` can represent, or ``None`` when the export
had none. Text is already cleaned (no NUL characters, no lone surrogates) so it can go to Postgres
as it is. All of it is personal data: never log it, never put it into an exception message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

Role = Literal["user", "assistant"]
"""The only two roles dialogue has; tool and system messages never become dialogue."""

UNTITLED = "Untitled"
"""The title given when the export's is null, absent, blank or not text (as the app shows it)."""

MIN_EPOCH_SECONDS = 0.0
"""Times at or before the epoch are treated as missing: exports never carry them, bugs do."""

MAX_EPOCH_SECONDS = 253402300799.0
"""9999-12-31T23:59:59Z, the last second ``datetime`` can represent; later values are missing."""


def epoch_to_datetime(seconds: float | None) -> datetime | None:
    """An aware UTC datetime for ``seconds``, or ``None`` when it is missing or out of range.

    Total: it never raises, whatever float it is given, so callers need no guard of their own.
    """
    if seconds is None or not math.isfinite(seconds):
        return None
    if not MIN_EPOCH_SECONDS < seconds <= MAX_EPOCH_SECONDS:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of dialogue: what the user said or what the assistant answered.

    ``text`` is never empty. Consecutive assistant nodes of the export are already merged into
    one message (continued answers); ``create_time`` is that of the first of them.
    """

    role: Role
    text: str
    create_time: float | None


class PersonaKind(StrEnum):
    """The kinds of persona signal: facts about the person that are not dialogue.

    - ``custom_instructions``: the "about me" / "how to respond" texts the user wrote
      (``user_editable_context``); one per conversation, a snapshot of the version then in force.
    - ``system_profile``: any other message flagged ``is_user_system_message`` (older exports
      carried custom instructions as such a system message).
    - ``memory_write``: what the assistant saved to its memory (a message to the ``bio`` tool).
    - ``memory_snapshot``: the whole saved memory as the model saw it when the conversation ran
      (``model_editable_context``). It is kept because it is the curated, user-approved list of
      facts, and it reflects memories the user deleted, which the ``bio`` writes do not. Each
      snapshot is the complete list at one moment, so only the newest one is worth keeping.
    """

    CUSTOM_INSTRUCTIONS = "custom_instructions"
    SYSTEM_PROFILE = "system_profile"
    MEMORY_SNAPSHOT = "memory_snapshot"
    MEMORY_WRITE = "memory_write"


@dataclass(frozen=True, slots=True)
class PersonaSignal:
    """A persona signal found in one conversation; ``text`` is never empty.

    ``time`` is the message's own time, else the conversation's creation time (these nodes
    usually carry no time of their own), else ``None``.
    """

    kind: PersonaKind
    text: str
    time: float | None


StartKind = Literal["current_node", "newest_leaf", "messages_list", "none"]
"""Where the walk started: the export's ``current_node``, the fallback leaf, a plain
``messages`` list (no ``mapping``), or nowhere (nothing to walk)."""


@dataclass(frozen=True, slots=True)
class LinearizeStats:
    """What the linearizer saw and did, for the job result and for debugging odd exports.

    ``unknown_content_types`` holds ``(content_type, count)`` pairs sorted by name, for content
    types the linearizer does not know but kept as dialogue because they carried text.
    ``canvas_documents`` counts the Canvas documents kept as messages, and
    ``canvas_updates_not_applied`` the Canvas calls that could not be replayed (each such
    document keeps its last good text; docs/export-format.md, "Canvas").
    """

    mapping_size: int
    path_length: int
    start: StartKind
    cycle: bool
    missing_parent: bool
    merged_messages: int
    truncated_messages: int
    unknown_content_types: tuple[tuple[str, int], ...]
    canvas_documents: int = 0
    canvas_updates_not_applied: int = 0


@dataclass(frozen=True, slots=True)
class Conversation:
    """One linearized conversation: the visible thread, in order, plus its persona signals.

    A conversation can have no messages (only tool traffic, or nothing at all); callers count
    those and skip them. ``title`` is a single line of at most a few hundred characters.
    """

    id: str
    title: str
    create_time: float | None
    update_time: float | None
    messages: tuple[Message, ...]
    persona_signals: tuple[PersonaSignal, ...]
    stats: LinearizeStats

    @property
    def first_known_time(self) -> float | None:
        """When the conversation happened: its creation time, else its update time, else the
        earliest message time, else ``None`` (the chunk's ``created_at`` rule, minus the job
        fallback)."""
        if self.create_time is not None:
            return self.create_time
        if self.update_time is not None:
            return self.update_time
        times = [m.create_time for m in self.messages if m.create_time is not None]
        return min(times) if times else None


class ChunkTier(StrEnum):
    """Chunk sizes; the value is what goes into ``conversation_chunks.chunk_tier``."""

    MICRO = "micro"
    MEDIUM = "medium"
    MACRO = "macro"


@dataclass(frozen=True, slots=True)
class Chunk:
    """One searchable piece of a conversation, ready to be written to ``conversation_chunks``.

    ``content`` is ``header + body``: the header is the ``# {title}`` line, plus a
    ``User (continued): `` style label when the body starts inside a message, and is
    ``header_chars`` long. The body is a verbatim slice of the conversation transcript whose
    first ``overlap_chars`` characters repeat the end of the previous chunk.

    ``message_count`` is the number of messages with any of their text in the body (overlap
    included). ``token_count`` is the estimate for the whole ``content``.
    """

    conversation_id: str
    title: str
    content: str
    message_count: int
    token_count: int
    chunk_index_in_conversation: int
    created_at: datetime
    is_recent: bool
    tier: ChunkTier
    header_chars: int
    overlap_chars: int

    @property
    def body(self) -> str:
        """The transcript slice, without the header."""
        return self.content[self.header_chars :]
