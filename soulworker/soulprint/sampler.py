"""The quick-pass sample: the richest conversations, formatted, within a character budget.

The predecessor's sampling (docs/pipeline.md, "Quick-pass sampling"), fixed, and run while the
export streams:

Eligibility and score. A conversation with at least ``MIN_MESSAGES`` messages is eligible. Its
score is ``10 x messages + sum over user messages of min(len, 500) + 20 x min(#user,
#assistant)``: size, user effort and balance. Ties go to the newer conversation (the
predecessor's epoch/1e12 tiebreak, kept exact as a second key), then to the one offered first.

Formatting. Per conversation, a header line ``### {title} (YYYY-MM-DD)`` and then one
``User: …`` / ``Assistant: …`` line per message, each message cut at ``message_cap_chars``
(marked). A conversation's text is cut, at a line boundary and marked, to
``max_conversation_chars``. Conversations are separated by a blank line.

Selection. In score order, a conversation is added when its text fits in what is left of the
limit, otherwise skipped for smaller ones; at most ``max_conversations``. The limit is
``min(budget, hard cap)`` on the *formatted* text, separators included, and the sample never
exceeds it: the predecessor's rule that forced oversized conversations in (which once sent 2.4M
characters to a 200K-token model) is gone. When no conversation is eligible, the fallback is
the first conversations offered that have messages, in offer order, each added when it fits,
at most ``max_conversations``.

Change from the predecessor: the per-conversation cut. The score grows with size, so the
top-ranked conversations are the longest; without a cut, three 60K-character conversations
fill a 200K budget and the profile rests on three chats. Cutting each to 10 % of the budget
(its first ~10 exchanges) makes the sample span at least 10 conversations when there are that
many. ``max_conversation_chars=budget`` restores the predecessor's behaviour exactly.

Bounded memory. Texts are cut when offered. The candidates held are bounded by count
(``CANDIDATE_COUNT_FACTOR`` x the conversation cap) and characters (``CANDIDATE_CHARS_FACTOR``
x the limit); when a bound is passed they are pruned to three quarters of it, dropping, lowest
score first, candidates the current selection does not use. The selection therefore survives
every prune, and the result equals the offline selection except in rare orders where, after a
prune, a later conversation (or a new version of a held one, or a discard) frees room for one
already pruned. Whether a prune ran depends on what was held at each offer, not on the final set:
versions replaced later still counted while they were held. Besides: the fallback list
(within the limit) and the best ``top_n`` ids with their scores (ids only, for rebuilding a
larger sample from stored chunks later).

The sample text is personal data for the model prompt, never for logs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from soulworker.conversations.conversation import Conversation, Role, epoch_to_datetime

DEFAULT_BUDGET_CHARS = 200_000
"""The predecessor's budget (50K tokens x 4 chars)."""

DEFAULT_MAX_CONVERSATIONS = 50
"""The predecessor's cap: more, shorter excerpts add little to a persona profile."""

DEFAULT_MESSAGE_CAP_CHARS = 2_000
"""The predecessor's per-message cut: keeps one pasted document from filling the sample."""

CONVERSATION_SHARE_OF_BUDGET = 0.10
"""Each conversation's share of the budget: at least 10 conversations in a full sample (see the
module doc), whatever SOULWORKER_QUICK_PASS_SAMPLE_CHARS is."""

DEFAULT_MAX_CONVERSATION_CHARS = int(DEFAULT_BUDGET_CHARS * CONVERSATION_SHARE_OF_BUDGET)

DEFAULT_TOP_N = 200
"""The predecessor's v2 regeneration used the top 200 conversations by the same score."""

MIN_MESSAGES = 4
"""Eligibility: two exchanges at least; shorter chats say little about a person."""

MIN_LIMIT_CHARS = 1_000
"""The smallest limit accepted: below it not even one short conversation fits."""

MESSAGE_WEIGHT = 10
USER_CHARS_CAP = 500
BALANCE_WEIGHT = 20
"""The predecessor's score weights (docs/pipeline.md)."""

CANDIDATE_COUNT_FACTOR = 4
CANDIDATE_CHARS_FACTOR = 4
"""Candidates held: up to 4x what a sample can use, so that skipping ones that do not fit
still leaves enough to fill the sample; at 200K characters, under 1M characters of text."""

PRUNE_TO = 0.75
"""Pruning goes below the bound by a quarter, so it runs once per many offers, not per offer."""

TOP_N_SLACK = 1.25
"""The top-N ids are pruned when 25 % over N (same amortisation)."""

CONVERSATION_SEPARATOR = "\n\n"
MESSAGE_CUT_MARK = " […]"
CONVERSATION_CUT_MARK = "\n[… conversation shortened]"
UNDATED = "undated"
ROLE_LABELS: dict[Role, str] = {"user": "User", "assistant": "Assistant"}

Fallback = Literal["none", "shortened_best", "first_conversations", "shortened_first", "empty"]
"""How the sample was made: ``none`` (normal selection); ``shortened_best`` (a lowered limit
that no candidate fitted: the best one, cut); ``first_conversations`` / ``shortened_first``
(no conversation eligible); ``empty`` (no conversation with messages was offered)."""

_RankKey = tuple[bool, int, float, int]
"""(eligible, score, time, -offer sequence): larger ranks higher."""


@dataclass(frozen=True, slots=True)
class RankedConversation:
    """A conversation's id and ranking, as kept for the top-N list."""

    conversation_id: str
    score: int
    time: float | None
    eligible: bool


@dataclass(frozen=True, slots=True)
class SampleStats:
    """Counts for the job result. ``offered`` and ``eligible`` count offers (a replaced or
    discarded conversation still counted when it was offered); ``shortened`` counts offered
    conversations whose text was cut to the per-conversation cap."""

    offered: int
    empty: int
    discarded: int
    eligible: int
    shortened: int
    candidates: int
    selected: int
    skipped_over_budget: int
    fallback: Fallback
    chars: int
    limit_chars: int


@dataclass(frozen=True, slots=True)
class QuickPassSample:
    """The formatted sample (at most ``stats.limit_chars`` long) and the ids it contains, in
    the order they appear."""

    text: str
    conversation_ids: tuple[str, ...]
    stats: SampleStats


@dataclass(frozen=True, slots=True)
class _Entry:
    conversation_id: str
    key: _RankKey
    text: str


def score_conversation(conversation: Conversation) -> int:
    """The predecessor's score, without the time tiebreak."""
    users = assistants = user_effort = 0
    for message in conversation.messages:
        if message.role == "user":
            users += 1
            user_effort += min(len(message.text), USER_CHARS_CAP)
        else:
            assistants += 1
    return (
        MESSAGE_WEIGHT * len(conversation.messages)
        + user_effort
        + BALANCE_WEIGHT * min(users, assistants)
    )


def format_conversation(
    conversation: Conversation, *, message_cap_chars: int, max_chars: int
) -> tuple[str, bool]:
    """The formatted text of one conversation, and whether it had to be cut to ``max_chars``.

    Stops formatting once past ``max_chars``, so a huge conversation costs no more than that.
    """
    moment = epoch_to_datetime(conversation.first_known_time)
    date = moment.date().isoformat() if moment is not None else UNDATED
    lines = [f"### {conversation.title} ({date})"]
    length = len(lines[0])
    for message in conversation.messages:
        text = message.text
        if len(text) > message_cap_chars:
            text = text[: message_cap_chars - len(MESSAGE_CUT_MARK)].rstrip() + MESSAGE_CUT_MARK
        line = f"{ROLE_LABELS[message.role]}: {text}"
        lines.append(line)
        length += 1 + len(line)
        if length > max_chars:
            return shorten("\n".join(lines), max_chars), True
    return "\n".join(lines), False


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a line boundary and marked; unchanged
    when it fits. Cuts inside a line only when not even the header and one line fit."""
    if len(text) <= limit:
        return text
    room = limit - len(CONVERSATION_CUT_MARK)
    cut = text.rfind("\n", 0, room + 1)
    if cut <= 0:
        cut = room
    return text[:cut] + CONVERSATION_CUT_MARK


class QuickPassSampler:
    """Keeps the quick-pass sample while conversations stream past; see the module docstring.

    Deterministic: the same offers and discards in the same order give the same sample.
    """

    def __init__(
        self,
        *,
        hard_cap_chars: int,
        budget_chars: int = DEFAULT_BUDGET_CHARS,
        max_conversations: int = DEFAULT_MAX_CONVERSATIONS,
        message_cap_chars: int = DEFAULT_MESSAGE_CAP_CHARS,
        max_conversation_chars: int | None = None,
        top_n: int = DEFAULT_TOP_N,
    ) -> None:
        """``hard_cap_chars`` has no default on purpose: the caller derives it from the model's
        context window. Raises ``ValueError`` for a limit below ``MIN_LIMIT_CHARS``, caps too
        small to hold their marks, or non-positive counts (programming errors).
        ``max_conversation_chars`` defaults to ``CONVERSATION_SHARE_OF_BUDGET`` of the budget."""
        if max_conversation_chars is None:
            max_conversation_chars = int(budget_chars * CONVERSATION_SHARE_OF_BUDGET)
        self._limit = min(budget_chars, hard_cap_chars)
        if self._limit < MIN_LIMIT_CHARS:
            raise ValueError(f"the sample limit must be at least {MIN_LIMIT_CHARS} characters")
        if max_conversations < 1 or top_n < 1:
            raise ValueError("max_conversations and top_n must be positive")
        if message_cap_chars <= len(MESSAGE_CUT_MARK):
            raise ValueError("message_cap_chars is too small")
        if max_conversation_chars <= len(CONVERSATION_CUT_MARK):
            raise ValueError("max_conversation_chars is too small")
        self._max_conversations = max_conversations
        self._message_cap = message_cap_chars
        self._conversation_cap = min(max_conversation_chars, self._limit)
        self._top_n = top_n
        self._max_candidates = CANDIDATE_COUNT_FACTOR * max_conversations
        self._max_candidate_chars = CANDIDATE_CHARS_FACTOR * self._limit
        self._candidates: dict[str, _Entry] = {}
        self._candidate_chars = 0
        self._fallback: dict[str, _Entry] = {}  # insertion order = offer order
        self._fallback_chars = 0
        self._top: dict[str, tuple[_RankKey, RankedConversation]] = {}
        self._seq = 0
        self._offered = self._empty = self._discarded = self._eligible = self._shortened = 0

    @property
    def limit_chars(self) -> int:
        """The sample's size limit: ``min(budget, hard cap)``."""
        return self._limit

    def offer(self, conversation: Conversation) -> None:
        """Consider one conversation. One already held under the same id is replaced (the
        caller resolves duplicates before offering). Conversations without messages are only
        counted."""
        if not conversation.messages:
            self._empty += 1
            return
        self._offered += 1
        self._seq += 1
        conversation_id = conversation.id
        self._forget(conversation_id)
        score = score_conversation(conversation)
        time = conversation.first_known_time
        eligible = len(conversation.messages) >= MIN_MESSAGES
        self._eligible += eligible
        key: _RankKey = (eligible, score, time if time is not None else 0.0, -self._seq)
        ranked = RankedConversation(conversation_id, score, time, eligible)
        self._add_top(conversation_id, key, ranked)
        if eligible:
            entry = self._entry(conversation, key)
            self._candidates[conversation_id] = entry
            self._candidate_chars += len(entry.text)
            if (
                len(self._candidates) > self._max_candidates
                or self._candidate_chars > self._max_candidate_chars
            ):
                self._prune_candidates()
        elif len(self._fallback) < self._max_conversations:
            entry = self._entry(conversation, key)
            cost = len(entry.text) + (len(CONVERSATION_SEPARATOR) if self._fallback else 0)
            if self._fallback_chars + cost <= self._limit:
                self._fallback[conversation_id] = entry
                self._fallback_chars += cost

    def discard(self, conversation_id: str) -> None:
        """Forget a conversation that turned out to be a stale duplicate (no-op if unknown)."""
        if self._forget(conversation_id):
            self._discarded += 1

    def top_ids(self) -> tuple[RankedConversation, ...]:
        """The best ``top_n`` conversations offered (eligible ones first), best first. Discards
        can leave fewer than ``top_n`` even when more were offered."""
        ranked = sorted(self._top.values(), key=lambda pair: pair[0], reverse=True)
        return tuple(ranked_conversation for _, ranked_conversation in ranked[: self._top_n])

    def sample(self, *, limit_chars: int | None = None) -> QuickPassSample:
        """The sample now. ``limit_chars`` can only lower the limit (to shrink a sample after a
        truncated model answer). Does not change the sampler."""
        limit = self._limit if limit_chars is None else min(limit_chars, self._limit)
        ranked = sorted(self._candidates.values(), key=lambda e: e.key, reverse=True)
        fallback: Fallback = "none"
        chosen, skipped = _select(ranked, limit, self._max_conversations)
        if not ranked:
            fallback = "first_conversations"
            chosen, skipped = _select(list(self._fallback.values()), limit, self._max_conversations)
        if not chosen:
            pool = ranked or list(self._fallback.values())
            if pool:
                first = pool[0]
                chosen = [_Entry(first.conversation_id, first.key, shorten(first.text, limit))]
                fallback = "shortened_best" if ranked else "shortened_first"
            else:
                fallback = "empty"
        text = CONVERSATION_SEPARATOR.join(entry.text for entry in chosen)
        return QuickPassSample(
            text=text,
            conversation_ids=tuple(entry.conversation_id for entry in chosen),
            stats=SampleStats(
                offered=self._offered,
                empty=self._empty,
                discarded=self._discarded,
                eligible=self._eligible,
                shortened=self._shortened,
                candidates=len(self._candidates),
                selected=len(chosen),
                skipped_over_budget=skipped,
                fallback=fallback,
                chars=len(text),
                limit_chars=limit,
            ),
        )

    def _entry(self, conversation: Conversation, key: _RankKey) -> _Entry:
        text, shortened = format_conversation(
            conversation, message_cap_chars=self._message_cap, max_chars=self._conversation_cap
        )
        self._shortened += shortened
        return _Entry(conversation.id, key, text)

    def _forget(self, conversation_id: str) -> bool:
        found = False
        entry = self._candidates.pop(conversation_id, None)
        if entry is not None:
            self._candidate_chars -= len(entry.text)
            found = True
        if self._fallback.pop(conversation_id, None) is not None:
            # Recount rather than subtract: the separator cost depends on list position.
            self._fallback_chars = _joined_length(self._fallback.values())
            found = True
        if self._top.pop(conversation_id, None) is not None:
            found = True
        return found

    def _prune_candidates(self) -> None:
        ranked = sorted(self._candidates.values(), key=lambda e: e.key, reverse=True)
        chosen, _ = _select(ranked, self._limit, self._max_conversations)
        keep = {entry.conversation_id for entry in chosen}
        count_target = int(self._max_candidates * PRUNE_TO)
        chars_target = int(self._max_candidate_chars * PRUNE_TO)
        for entry in reversed(ranked):  # lowest score first
            if len(self._candidates) <= count_target and self._candidate_chars <= chars_target:
                break
            if entry.conversation_id in keep:
                continue
            del self._candidates[entry.conversation_id]
            self._candidate_chars -= len(entry.text)

    def _add_top(self, conversation_id: str, key: _RankKey, ranked: RankedConversation) -> None:
        self._top[conversation_id] = (key, ranked)
        if len(self._top) > self._top_n * TOP_N_SLACK:
            best = sorted(self._top.items(), key=lambda item: item[1][0], reverse=True)
            self._top = dict(best[: self._top_n])


def _select(entries: list[_Entry], limit: int, max_count: int) -> tuple[list[_Entry], int]:
    """Greedy selection in the given order: add what fits, skip what does not. Returns the
    chosen entries and how many were skipped for size."""
    chosen: list[_Entry] = []
    used = skipped = 0
    for entry in entries:
        if len(chosen) >= max_count:
            break
        cost = len(entry.text) + (len(CONVERSATION_SEPARATOR) if chosen else 0)
        if used + cost <= limit:
            chosen.append(entry)
            used += cost
        else:
            skipped += 1
    return chosen, skipped


def _joined_length(entries: Iterable[_Entry]) -> int:
    texts = [entry.text for entry in entries]
    return sum(map(len, texts)) + len(CONVERSATION_SEPARATOR) * max(0, len(texts) - 1)
