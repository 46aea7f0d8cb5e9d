"""Turns one raw export conversation (a dict as ijson builds it) into a ``Conversation``.

The rules, and the export facts behind them, are written down in docs/export-format.md.

The thread. ``mapping`` holds every branch ever created (edits, regenerations). The visible thread
is found by walking from ``current_node`` back through ``parent`` links, with a visited set so a
cycle cannot loop, then reversing. ``children`` and mapping order are never used: ``children`` is
absent from some exports and mapping order is not topological. The walk stops, keeping what it
collected, at a parent id that names no node (missing parent) or a node already visited (cycle);
neither is a failure. When ``current_node`` is missing or names no node, the walk starts from
the newest leaf instead (see ``_newest_leaf`` for how ties are broken).

Dialogue. A node becomes dialogue when its author is ``user`` or ``assistant``, its recipient is
``all`` (a missing recipient counts as ``all``), it is not hidden
(``metadata.is_visually_hidden_from_conversation``), its content type is not one of the dropped
types (tool I/O, reasoning, browsing output, code, errors: ``DROPPED_CONTENT_TYPES``), and it has
text (``message_text.content_text``: string parts, dict-part texts such as voice transcriptions,
``[image]`` for pictures and real video, nothing for audio). Content types this module does not
know are kept when they carry text, and counted by name in the stats. Consecutive assistant
messages (adjacent once the nodes above are dropped, e.g. an answer, a tool call, the rest of the
answer) are merged into one message: directly when the first part was cut off
(``finish_details.type`` ``max_tokens`` or ``interrupted``: the continuation resumes
mid-sentence), otherwise as paragraphs. ``end_turn`` false is not used for this, because it also
marks a turn that goes on with a tool call. Each finished message is cleaned
(``message_text.finalize_text``: citation, highlight and entity markers, NULs and lone
surrogates removed, whitespace stripped) and cut at ``max_message_bytes`` with a visible marker.

Canvas. The documents the assistant wrote with the Canvas tool are tool calls, yet they are the
person's work: ``canvas`` replays their creation and edits along the thread, and each document
that ends with text becomes one assistant message, ``[canvas: NAME]`` and its final text, at the
place it was last written. It is a message of its own, never merged with the answers around it.

Persona signals are taken apart from dialogue and never become chat text: custom instructions
(``user_editable_context``), the memory snapshot (``model_editable_context``), messages flagged
``is_user_system_message``, and memory writes (assistant messages to the ``bio`` tool).

Robustness. Anything that is not a conversation at all (not an object, a ``mapping`` that is not
an object) raises ``BadConversation``; nothing else is ever raised. A conversation without a
usable ``id``/``conversation_id`` gets one derived from its content (``derived_ids``). Wrong types
and nulls anywhere inside are skipped, so a damaged conversation yields what could be salvaged. A
conversation without ``mapping`` but with a ``messages`` list is linearized from that list in
order (older tools and hand-made exports have that shape; the predecessor accepted it too). A
conversation with no dialogue is returned with no messages: the caller counts and skips it, and
its persona signals still count.

Speed (measured on the 2-core reference VM over 5,000 conversations from
``soulworker/testing/export_generator.py``, p50 31 KB of JSON, 28 nodes each; runs vary by ~30 %):
40-60 µs for the median conversation and 75-105 µs on average when warm in the CPU cache, as a
conversation ijson has just built is; ~145 µs on average (~380 MB/s of JSON) when cold. Most of
it is per-node dictionary access, which is why ``_build_thread`` is one flat loop over locals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from soulworker.conversations.canvas import (
    CANVAS_CALLS,
    CANVAS_LABEL,
    CanvasDocument,
    find_canvas_documents,
)
from soulworker.conversations.conversation import (
    MAX_EPOCH_SECONDS,
    MIN_EPOCH_SECONDS,
    UNTITLED,
    Conversation,
    LinearizeStats,
    Message,
    PersonaKind,
    PersonaSignal,
    Role,
    StartKind,
)
from soulworker.conversations.derived_ids import derived_conversation_id
from soulworker.conversations.message_text import (
    IGNORED_PROFILE_TEXTS,
    MIN_MESSAGE_BYTES,
    clean_line,
    content_text,
    custom_instructions_text,
    finalize_text,
)

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
"""``SOULWORKER_MAX_MESSAGE_BYTES``: far above any typed message, below pasted dumps."""

MAX_TITLE_CHARS = 200
"""ChatGPT titles are a few words; a longer one would only bloat every chunk's header line."""

MAX_ID_CHARS = 256
"""Conversation ids are UUIDs (36 characters); a much longer value is not an id."""

DIALOGUE_CONTENT_TYPES = frozenset({"text", "multimodal_text"})
"""The content types that are ordinary dialogue; any other type that carries text is "unknown"."""

DROPPED_CONTENT_TYPES = frozenset(
    {
        "thoughts",  # reasoning models' hidden chain of thought
        "reasoning_recap",  # "Thought for 12 s"
        "code",  # tool calls: python source, search queries, image prompts
        "execution_output",  # python results
        "tether_browsing_display",  # browser tool output
        "tether_browsing_code",  # legacy browsing
        "tether_quote",  # quotes from web pages and searched files
        "sonic_webpage",  # whole scraped pages
        "system_error",  # tool errors
        "computer_output",  # agent-mode screenshots and state
        "citable_code_output",  # connector output
        "app_pairing_content",  # text of the user's other apps, not the user's words
    }
)
"""Content types that are never dialogue, whoever sent them (docs/export-format.md)."""

CUT_OFF_FINISH_TYPES = frozenset({"max_tokens", "interrupted"})
"""``finish_details.type`` values of an answer cut off mid-output, whose continuation follows."""

MEMORY_TOOL = "bio"
"""The recipient of the assistant's memory writes."""

_PERSONA_CONTENT_TYPES = frozenset({"user_editable_context", "model_editable_context"})
_DIALOGUE_ROLES = ("user", "assistant")

ALL_RECIPIENTS = "all"

_MISSING_TYPE = "(missing)"
"""How a missing ``content_type`` is counted among unknown types."""
_INVALID_TYPE = "(invalid)"
"""How a ``content_type`` that is not a string is counted."""
_MAX_TYPE_NAME_CHARS = 80
"""Real type names are short; a huge one must not bloat the job result."""
_CUT_OFF_JOINER = ""
"""A cut-off answer continues exactly where it stopped, possibly mid-word: join directly."""
_PARAGRAPH_JOINER = "\n\n"
"""Otherwise the parts are separate paragraphs (e.g. before and after a tool call)."""

_NO_TIME = float("-inf")
_EMPTY: dict[str, object] = {}


class BadConversation(Exception):
    """The raw value is not a conversation that can be linearized; count it and skip it.

    ``code`` is one of ``not_an_object``, ``bad_mapping`` and ``unexpected`` (a bug
    in this module met an input it did not foresee; ``cause_type`` names the original exception
    class, whose message is deliberately not kept because it could quote conversation text).
    The message never contains conversation content.
    """

    def __init__(self, code: str, message: str, *, cause_type: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.cause_type = cause_type


def linearize(raw: object, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Conversation:
    """Linearize one raw conversation; see the module docstring for every rule.

    ``max_message_bytes`` caps a single message (after merging) in UTF-8 bytes, and each Canvas
    document; longer ones are truncated with a visible marker and counted.

    Raises ``BadConversation`` for input that is not a conversation, and ``ValueError`` for a
    ``max_message_bytes`` below ``MIN_MESSAGE_BYTES`` (a programming error, checked first).
    """
    if max_message_bytes < MIN_MESSAGE_BYTES:
        raise ValueError(f"max_message_bytes must be at least {MIN_MESSAGE_BYTES}")
    try:
        return _linearize(raw, max_message_bytes)
    except BadConversation:
        raise
    except Exception as exc:
        # The contract is "one bad conversation never fails the job": an input no rule foresaw
        # is reported as bad, without the original message (it may quote the conversation).
        raise BadConversation(
            "unexpected",
            "This conversation could not be read.",
            cause_type=type(exc).__name__,
        ) from None


def _linearize(raw: object, max_bytes: int) -> Conversation:
    if not isinstance(raw, dict):
        raise BadConversation("not_an_object", "A conversation entry is not a JSON object.")
    conversation_id = _conversation_id(raw)
    title = clean_line(raw.get("title"), MAX_TITLE_CHARS) or UNTITLED
    create_time = parse_time(raw.get("create_time"))
    update_time = parse_time(raw.get("update_time"))

    mapping = raw.get("mapping")
    cycle = missing_parent = False
    start: StartKind
    if isinstance(mapping, dict):
        path, start, cycle, missing_parent = _walk(mapping, raw.get("current_node"))
        raw_messages: Sequence[object] = [node.get("message") for node in path]
        path_length = len(path)
        mapping_size = len(mapping)
    elif mapping is None:
        listed = raw.get("messages")
        if isinstance(listed, list):
            raw_messages = [_as_export_message(item) for item in listed]
            start = "messages_list"
            mapping_size = path_length = len(listed)
        else:
            raw_messages, start, mapping_size, path_length = (), "none", 0, 0
    else:
        raise BadConversation("bad_mapping", "A conversation's message tree is not a JSON object.")

    signal_fallback_time = create_time if create_time is not None else update_time
    canvas = None
    thread = _build_thread(raw_messages, max_bytes, signal_fallback_time, None)
    if thread is None:  # the thread has Canvas calls: replay them, then build it with them
        # One character more than the byte limit: a document cut there is over the limit, so
        # the message built from it is truncated with the visible marker and counted.
        canvas = find_canvas_documents(raw_messages, max_chars=max_bytes + 1)
        thread = _build_thread(
            raw_messages, max_bytes, signal_fallback_time, canvas.placed if canvas else {}
        )
        assert thread is not None  # with placements given, the build always completes
    if conversation_id is None:
        conversation_id = derived_conversation_id(
            raw,
            title=title,
            create_time=create_time,
            update_time=update_time,
            messages=thread.messages,
            signals=thread.signals,
        )
    return Conversation(
        id=conversation_id,
        title=title,
        create_time=create_time,
        update_time=update_time,
        messages=thread.messages,
        persona_signals=tuple(thread.signals),
        stats=LinearizeStats(
            mapping_size=mapping_size,
            path_length=path_length,
            start=start,
            cycle=cycle,
            missing_parent=missing_parent,
            merged_messages=thread.merged,
            truncated_messages=thread.truncated,
            unknown_content_types=tuple(sorted(thread.unknown_types.items())),
            canvas_documents=canvas.documents if canvas else 0,
            canvas_updates_not_applied=canvas.updates_not_applied if canvas else 0,
        ),
    )


def parse_time(value: object) -> float | None:
    """Epoch seconds from an export time field, or ``None`` for anything unusable.

    Accepts floats and ints (and ``Decimal``, should a reader run without ``use_float``);
    rejects booleans, strings, NaN, infinities and times outside what ``datetime`` represents.
    """
    if isinstance(value, float):
        seconds = value
    elif isinstance(value, int) and not isinstance(value, bool):
        if not MIN_EPOCH_SECONDS < value <= MAX_EPOCH_SECONDS:
            return None  # also keeps float() away from ints too large to convert
        seconds = float(value)
    elif isinstance(value, Decimal):
        try:
            seconds = float(value)
        except ValueError:  # signalling NaN
            return None
    else:
        return None
    # NaN fails both comparisons, infinities fail one.
    return seconds if MIN_EPOCH_SECONDS < seconds <= MAX_EPOCH_SECONDS else None


def _conversation_id(raw: dict[str, object]) -> str | None:
    """The export's id for the conversation, or ``None`` when it has no usable one (the caller
    then derives one from the content: ``derived_ids``)."""
    for key in ("id", "conversation_id"):
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        # isprintable() refuses control characters and lone surrogates, which Postgres refuses.
        if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and value.isprintable():
            return value
    return None


def _walk(
    mapping: dict[str, object], current_node: object
) -> tuple[list[dict[str, object]], StartKind, bool, bool]:
    """The node dicts of the visible thread, root first; where the walk started; whether it
    stopped at a cycle; whether it stopped at a missing parent."""
    start_id: str | None = None
    start: StartKind = "current_node"
    if isinstance(current_node, str) and isinstance(mapping.get(current_node), dict):
        start_id = current_node
    else:
        start_id = _newest_leaf(mapping)
        start = "newest_leaf" if start_id is not None else "none"
    path: list[dict[str, object]] = []
    cycle = missing = False
    seen: set[str] = set()
    # Bound methods in locals: this loop runs once per node of every conversation.
    lookup, remember, collect = mapping.get, seen.add, path.append
    node_id = start_id
    while node_id is not None:
        node = lookup(node_id)
        if not isinstance(node, dict):
            missing = True  # a parent id naming no node, or a null or non-object node
            break
        remember(node_id)
        collect(node)
        parent = node.get("parent")
        if not isinstance(parent, str):
            break  # the root (null parent), or a parent of the wrong type
        if parent in seen:
            cycle = True
            break
        node_id = parent  # an unknown id ends the walk on the next turn, as a missing parent
    path.reverse()
    return path, start, cycle, missing


def _newest_leaf(mapping: dict[str, object]) -> str | None:
    """The node to start from when ``current_node`` is unusable, or ``None`` for no nodes.

    A leaf is a node no other node names as its parent. The chosen leaf has the newest message
    ``create_time``: the branch the user touched last is what the app showed last. Ties (equal
    times, or no times at all, as in some older exports) go to the deepest leaf, the longest
    thread being the conversation's main line rather than an abandoned early edit; remaining
    ties go to the leaf that comes last in the mapping, since ChatGPT appends nodes as they are
    created. Without any leaf (every node is on a cycle), the same ordering picks among all nodes.
    """
    named_as_parent: set[object] = set()
    for node in mapping.values():
        if isinstance(node, dict):
            parent = node.get("parent")
            if isinstance(parent, str):
                named_as_parent.add(parent)
    candidates = [
        node_id
        for node_id, node in mapping.items()
        if isinstance(node, dict) and node_id not in named_as_parent
    ]
    if not candidates:
        candidates = [node_id for node_id, node in mapping.items() if isinstance(node, dict)]
    if not candidates:
        return None
    times = {node_id: _node_time(mapping[node_id]) for node_id in candidates}
    newest = max(times.values())
    tied = [node_id for node_id in candidates if times[node_id] == newest]
    if len(tied) == 1:
        return tied[0]
    depths = _depths(mapping, tied)
    position = {node_id: index for index, node_id in enumerate(mapping)}
    # .get: a key that is not a string (possible in hand-built dicts, never in JSON) has no depth.
    return max(tied, key=lambda node_id: (depths.get(node_id, 0), position[node_id]))


def _node_time(node: object) -> float:
    message = node.get("message") if isinstance(node, dict) else None
    if isinstance(message, dict):
        seconds = parse_time(message.get("create_time"))
        if seconds is not None:
            return seconds
    return _NO_TIME


def _depths(mapping: dict[str, object], targets: Iterable[str]) -> dict[str, int]:
    """How many nodes each target's walk to the root would collect, in linear total time.

    Memoised across targets so a wide, deep tree costs O(nodes), not O(leaves x depth).
    """
    memo: dict[str, int] = {}
    for target in targets:
        chain: list[str] = []
        on_chain: set[str] = set()
        node_id: object = target
        base = 0
        while isinstance(node_id, str):
            if node_id in memo:
                base = memo[node_id]
                break
            node = mapping.get(node_id)
            if not isinstance(node, dict) or node_id in on_chain:
                break
            chain.append(node_id)
            on_chain.add(node_id)
            node_id = node.get("parent")
        for chained in reversed(chain):
            base += 1
            memo[chained] = base
    return memo


def _as_export_message(item: object) -> object:
    """A ``messages``-list entry in the shape of an export message.

    Entries already shaped like export messages (with ``author``) pass through; simple
    ``{"role", "content" | "text", "create_time"}`` entries are wrapped.
    """
    if not isinstance(item, dict) or isinstance(item.get("author"), dict):
        return item
    content = item.get("content")
    if content is None:
        content = item.get("text")
    if isinstance(content, str):
        content = {"content_type": "text", "parts": [content]}
    create_time = item.get("create_time")
    if create_time is None:
        create_time = item.get("timestamp")
    return {
        "author": {"role": item.get("role")},
        "content": content,
        "create_time": create_time,
        "recipient": item.get("recipient"),
        "metadata": item.get("metadata"),
    }


@dataclass(slots=True)
class _Thread:
    """What ``_build_thread`` found along the path."""

    messages: tuple[Message, ...]
    signals: list[PersonaSignal]
    unknown_types: dict[str, int]
    merged: int
    truncated: int


def _build_thread(
    raw_messages: Sequence[object],
    max_bytes: int,
    signal_fallback_time: float | None,
    canvas: dict[int, list[CanvasDocument]] | None,
) -> _Thread | None:
    """Applies the per-message rules along the thread and merges continued answers; places
    each Canvas document (``canvas``, keyed by path index) as a message of its own.

    Without ``canvas`` (the first pass), returns ``None`` as soon as it meets a Canvas call:
    the caller then replays the calls and builds the thread again with the documents. Few
    conversations have any, and this costs the others nothing but a comparison per tool call.

    One flat loop with local state: it runs for every node of every conversation, and attribute
    and call overhead is most of its cost (see "Speed" in the module docstring).
    """
    messages: list[Message] = []
    signals: list[PersonaSignal] = []
    unknown_types: dict[str, int] = {}
    merged = truncated = 0
    parts: list[str] = []  # the message being built, possibly from several assistant nodes
    pending_role: Role = "user"
    pending_time: float | None = None
    prev_cut_off = False

    for index, message in enumerate(raw_messages):
        if canvas is not None and index in canvas:
            # The call that last wrote these documents: each becomes an assistant message of
            # its own, never merged with the answer around it (so a long document does not
            # push that answer past the size limit).
            if parts:
                truncated += _emit(messages, parts, pending_role, pending_time, max_bytes)
                parts = []
            for document in canvas[index]:
                label = CANVAS_LABEL.format(name=document.name)
                seconds = parse_time(document.raw_time)
                truncated += _emit(
                    messages, [label, document.text], "assistant", seconds, max_bytes
                )
            prev_cut_off = False
            continue
        if not isinstance(message, dict):
            continue
        author = message.get("author")
        role = author.get("role") if isinstance(author, dict) else None
        if role == "tool":
            continue  # tool output is neither dialogue nor a persona signal: skip it cheaply
        recipient = message.get("recipient")
        if recipient is None:
            recipient = ALL_RECIPIENTS
        elif canvas is None and role == "assistant" and recipient in CANVAS_CALLS:
            return None  # a tuple lookup: the recipient may be any JSON value
        content = message.get("content")
        if not isinstance(content, dict):
            continue
        content_type = content.get("content_type")
        if not isinstance(content_type, str):
            # Unhashable JSON values (lists, objects) must not reach the set lookups below.
            content_type = _MISSING_TYPE if content_type is None else _INVALID_TYPE
        metadata = message.get("metadata")
        if not isinstance(metadata, dict):
            metadata = _EMPTY

        # Persona signals first: they arrive with any role and are never dialogue.
        if (
            content_type in _PERSONA_CONTENT_TYPES
            or metadata.get("is_user_system_message") is True
            or (recipient == MEMORY_TOOL and role == "assistant")
        ):
            signal = _persona_signal(content_type, content, metadata, max_bytes)
            if signal is not None:
                kind, text, was_truncated = signal
                truncated += was_truncated
                seconds = parse_time(message.get("create_time"))
                if seconds is None:
                    seconds = signal_fallback_time
                signals.append(PersonaSignal(kind=kind, text=text, time=seconds))
            continue

        # A tuple, not a set: ``role`` may be any JSON value, and lists are unhashable.
        if role not in _DIALOGUE_ROLES or recipient != ALL_RECIPIENTS:
            continue  # system and tool messages, tool calls
        if metadata.get("is_visually_hidden_from_conversation"):
            continue
        if content_type in DROPPED_CONTENT_TYPES:
            continue
        part_list = content.get("parts")
        if type(part_list) is list and len(part_list) == 1 and type(part_list[0]) is str:
            text = part_list[0]  # the common case, without a call
        else:
            text = content_text(content)
        if not text or text.isspace():
            continue
        if content_type not in DIALOGUE_CONTENT_TYPES:
            name = content_type[:_MAX_TYPE_NAME_CHARS]
            unknown_types[name] = unknown_types.get(name, 0) + 1

        if role == "assistant" and parts and pending_role == "assistant":
            parts.append(_CUT_OFF_JOINER if prev_cut_off else _PARAGRAPH_JOINER)
            parts.append(text)
            merged += 1
        else:
            if parts:
                truncated += _emit(messages, parts, pending_role, pending_time, max_bytes)
            parts = [text]
            pending_role = "user" if role == "user" else "assistant"
            pending_time = parse_time(message.get("create_time"))
        if role == "assistant":
            # end_turn false alone is not evidence of a cut: it also marks a turn that goes on
            # with a tool call or a commentary-then-answer handoff, whose parts are paragraphs.
            finish = metadata.get("finish_details")
            finish_type = finish.get("type") if isinstance(finish, dict) else None
            prev_cut_off = isinstance(finish_type, str) and finish_type in CUT_OFF_FINISH_TYPES

    if parts:
        truncated += _emit(messages, parts, pending_role, pending_time, max_bytes)
    return _Thread(tuple(messages), signals, unknown_types, merged, truncated)


def _emit(
    messages: list[Message], parts: list[str], role: Role, time: float | None, max_bytes: int
) -> bool:
    """Append the finished message built from ``parts`` (if any text survives cleaning);
    returns whether it was truncated."""
    joined = parts[0] if len(parts) == 1 else "".join(parts)
    text, truncated = finalize_text(joined, max_bytes)
    if not text:
        return False
    messages.append(Message(role=role, text=text, create_time=time))
    return truncated


def _persona_signal(
    content_type: str, content: dict[str, object], metadata: dict[str, object], max_bytes: int
) -> tuple[PersonaKind, str, bool] | None:
    """The kind, cleaned text and truncation flag of a persona node, or ``None`` if empty."""
    kind: PersonaKind
    if content_type == "user_editable_context":
        kind, text = PersonaKind.CUSTOM_INSTRUCTIONS, custom_instructions_text(content, metadata)
    elif content_type == "model_editable_context":
        snapshot = content.get("model_set_context")
        kind, text = PersonaKind.MEMORY_SNAPSHOT, snapshot if isinstance(snapshot, str) else ""
    elif metadata.get("is_user_system_message") is True:
        # Older exports carried custom instructions as a flagged system message with the texts
        # in metadata: file those as custom instructions, so that one version is not listed
        # twice under two labels.
        text = custom_instructions_text(_EMPTY, metadata)
        if text:
            kind = PersonaKind.CUSTOM_INSTRUCTIONS
        else:
            kind, text = PersonaKind.SYSTEM_PROFILE, content_text(content)
    else:
        kind, text = PersonaKind.MEMORY_WRITE, content_text(content)
    if not text:
        return None
    cleaned, truncated = finalize_text(text, max_bytes)
    if not cleaned or cleaned in IGNORED_PROFILE_TEXTS:
        return None
    return kind, cleaned, truncated
