"""Splits a linearized conversation into searchable chunks (``conversation_chunks`` rows).

The transcript of a conversation is its messages as role-labelled lines (``User: …``,
``Assistant: …``) joined by newlines. A transcript that fits the tier's size is one chunk. A
longer one is cut into consecutive pieces, each ending at the last sentence boundary in the
second half of its window (``. ``, ``? ``, ``! ``, a newline, or CJK full stops), else at the
last space there, else at the size limit. Each chunk after the first starts with about the
tier's overlap taken from the end of the previous one, beginning at a sentence boundary where
there is one, so a fact near a cut is whole in at least one chunk.

Nothing is ever dropped: every chunk's body is a verbatim slice of the transcript, and the
bodies without their overlap, concatenated, are the transcript exactly. A message longer than a
chunk simply spans several chunks. Every chunk's content is a header (the ``# {title}`` line, plus
``User (continued): `` style label when the body starts inside a message, so the speaker of a
long message is never lost) followed by the body, which is at most the tier's size.

The work is linear in the transcript length: boundaries are found with ``str.rfind``/``str.find``
over bounded windows and each chunk is one slice.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta

from soulworker.conversations.conversation import (
    Chunk,
    ChunkTier,
    Conversation,
    Role,
    epoch_to_datetime,
)
from soulworker.llm.models import CHARS_PER_TOKEN, estimate_tokens

RECENT_DAYS = 180
"""``is_recent``: created within this many days of the job (docs/contract.md: "under 180 days")."""


@dataclass(frozen=True, slots=True)
class TierSpec:
    """The size of one tier's chunks, in estimated tokens, and the overlap between them."""

    max_tokens: int
    overlap_tokens: int

    @property
    def max_chars(self) -> int:
        return self.max_tokens * CHARS_PER_TOKEN

    @property
    def overlap_chars(self) -> int:
        return self.overlap_tokens * CHARS_PER_TOKEN


TIER_SPECS: dict[ChunkTier, TierSpec] = {
    # One exchange or a paragraph: precise hits for a single fact.
    ChunkTier.MICRO: TierSpec(max_tokens=250, overlap_tokens=25),
    # The predecessor's only tier; what the chat's retrieval (top-K, 2000-char cut) is tuned to.
    ChunkTier.MEDIUM: TierSpec(max_tokens=2000, overlap_tokens=200),
    # A whole topic: context for summaries and the full pass.
    ChunkTier.MACRO: TierSpec(max_tokens=5000, overlap_tokens=500),
}
"""Every tier keeps a 10 % overlap: enough to carry a sentence or two across a cut."""

DEFAULT_TIER = ChunkTier.MEDIUM
"""The tier the app's chat reads today."""

ROLE_LABELS: dict[Role, str] = {"user": "User", "assistant": "Assistant"}

SENTENCE_SEPARATORS = (". ", "? ", "! ", "\n", "\u3002", "\uff01", "\uff1f")
"""Where a chunk may end (just after the separator). The last three are the CJK full stop,
exclamation and question marks, which are not followed by spaces."""

MESSAGE_SEPARATOR = "\n"


def conversation_created_at(conversation: Conversation, fallback: datetime) -> datetime:
    """The chunk time: the conversation's creation time, else its update time, else its earliest
    message time, else ``fallback`` (the job's start); docs/contract.md."""
    moment = epoch_to_datetime(conversation.first_known_time)
    return moment if moment is not None else fallback


@dataclass(frozen=True, slots=True)
class _Transcript:
    """The labelled transcript and where each message's text (not its label) lies in it."""

    text: str
    text_starts: list[int]
    text_ends: list[int]
    label_starts: list[int]
    labels: list[str]


def chunk_conversation(
    conversation: Conversation,
    *,
    now: datetime,
    fallback_created_at: datetime,
    tier: ChunkTier = DEFAULT_TIER,
) -> list[Chunk]:
    """The chunks of one conversation, in order; ``[]`` when it has no messages.

    ``now`` decides ``is_recent``; ``fallback_created_at`` is the time used when the conversation
    carries none. Both must be timezone-aware (``ValueError`` otherwise: a naive time would
    compare against the wrong zone).
    """
    if now.tzinfo is None or fallback_created_at.tzinfo is None:
        raise ValueError("now and fallback_created_at must be timezone-aware")
    transcript = _build_transcript(conversation)
    if not transcript.text:
        return []
    spec = TIER_SPECS[tier]
    created_at = conversation_created_at(conversation, fallback_created_at)
    is_recent = created_at >= now - timedelta(days=RECENT_DAYS)
    title_line = f"# {conversation.title}\n"

    chunks: list[Chunk] = []
    for index, (body_start, new_start, body_end) in enumerate(
        _spans(transcript.text, spec.max_chars, spec.overlap_chars)
    ):
        header = title_line + _continuation_label(transcript, body_start)
        content = header + transcript.text[body_start:body_end]
        first = bisect_right(transcript.text_ends, body_start)
        after_last = bisect_left(transcript.text_starts, body_end)
        chunks.append(
            Chunk(
                conversation_id=conversation.id,
                title=conversation.title,
                content=content,
                message_count=max(0, after_last - first),
                token_count=estimate_tokens(content),
                chunk_index_in_conversation=index,
                created_at=created_at,
                is_recent=is_recent,
                tier=tier,
                header_chars=len(header),
                overlap_chars=new_start - body_start,
            )
        )
    return chunks


def _build_transcript(conversation: Conversation) -> _Transcript:
    lines: list[str] = []
    text_starts: list[int] = []
    text_ends: list[int] = []
    label_starts: list[int] = []
    labels: list[str] = []
    position = 0
    for message in conversation.messages:
        if not message.text:
            continue
        label = ROLE_LABELS[message.role]
        prefix = f"{label}: "
        if lines:
            position += len(MESSAGE_SEPARATOR)
        label_starts.append(position)
        text_starts.append(position + len(prefix))
        position += len(prefix) + len(message.text)
        text_ends.append(position)
        labels.append(label)
        lines.append(prefix + message.text)
    return _Transcript(
        text=MESSAGE_SEPARATOR.join(lines),
        text_starts=text_starts,
        text_ends=text_ends,
        label_starts=label_starts,
        labels=labels,
    )


def _continuation_label(transcript: _Transcript, body_start: int) -> str:
    """``"User (continued): "`` when the body starts past the label of the message it is in."""
    index = bisect_right(transcript.text_ends, body_start)
    if index < len(transcript.labels) and transcript.label_starts[index] < body_start:
        return f"{transcript.labels[index]} (continued): "
    return ""


def _spans(text: str, max_chars: int, overlap_chars: int) -> list[tuple[int, int, int]]:
    """``(body_start, new_start, body_end)`` per chunk: the body is ``text[body_start:body_end]``
    and its new part (after the overlap) starts at ``new_start``. New parts tile ``text``."""
    length = len(text)
    spans: list[tuple[int, int, int]] = []
    body_start = new_start = 0
    while True:
        limit = body_start + max_chars
        if limit >= length:
            spans.append((body_start, new_start, length))
            return spans
        body_end = _split_point(text, new_start, limit)
        spans.append((body_start, new_start, body_end))
        body_start = _overlap_start(text, new_start, body_end, overlap_chars)
        new_start = body_end


def _split_point(text: str, new_start: int, limit: int) -> int:
    """Where a chunk whose new part starts at ``new_start`` ends, at most ``limit``; always
    after ``new_start``, so every chunk makes progress."""
    low = new_start + (limit - new_start) // 2  # only the window's second half: no tiny chunks
    best = -1
    for separator in SENTENCE_SEPARATORS:
        found = text.rfind(separator, low, limit)
        if found >= 0:
            best = max(best, found + len(separator))
    if best > new_start:
        return best
    found = text.rfind(" ", low, limit)
    if found >= 0 and found + 1 > new_start:
        return found + 1
    return limit


def _overlap_start(text: str, previous_new_start: int, end: int, overlap_chars: int) -> int:
    """Where the next chunk's overlap starts: the earliest sentence start in the last
    ``overlap_chars`` before ``end`` (longest clean overlap), else a word start, else exactly
    ``overlap_chars`` back. Never before the previous chunk's new part, so text repeats in at
    most two chunks."""
    low = max(previous_new_start, end - overlap_chars)
    if low >= end:
        return end
    best = end
    for separator in SENTENCE_SEPARATORS:
        found = text.find(separator, low, end)
        if found >= 0:
            best = min(best, found + len(separator))
    if best < end:
        return best
    found = text.find(" ", low, end)
    if found >= 0 and found + 1 < end:
        return found + 1
    return low
