"""Canvas documents along a conversation's visible thread, in their final state.

A Canvas document is text the person wrote with the assistant (a letter, a story, a program),
shown beside the chat. The export keeps it only as tool calls (docs/export-format.md, "Canvas"):

- the assistant's message to ``canmore.create_textdoc``: JSON ``{"name", "type", "content"}``
  in its text (a ``code`` content's ``text`` in older exports, the first string part in newer);
- its messages to ``canmore.update_textdoc``: JSON ``{"updates": [...]}``, regular-expression
  edits of the current document (applied by ``canvas_edits``);
- after each call, the tool's reply (author ``tool``, named like the call): "Failed with
  error…" when ChatGPT refused the call, else a success whose ``metadata.canvas`` names the
  document (``textdoc_id``, ``title``, ``version``). Older replies carry ``textdoc_id`` in
  their text only.
- ``canmore.comment_textdoc`` calls are review comments, not document text: ignored.

The calls are replayed in thread order. An update goes to the document its reply names, else to
the one written last. A call the reply says failed changed nothing in ChatGPT and changes
nothing here. An update that cannot be applied here (its pattern does not match this text, does
not compile, is refused as too costly, or the conversation's work budget is spent) leaves the
document at its last good text and is counted. Each document that ends with text is returned
once, at the path index of the call that last changed it, where the linearizer puts it as an
assistant message under a ``[canvas: NAME]`` line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from soulworker.conversations.canvas_edits import Outcome, WorkBudget, apply_update_call
from soulworker.conversations.message_text import clean_line, content_text

TOOL_PREFIX = "canmore."
CREATE_CALL = "canmore.create_textdoc"
UPDATE_CALL = "canmore.update_textdoc"
CANVAS_CALLS = (CREATE_CALL, UPDATE_CALL)
"""The recipients of the calls that write a document (a tuple: recipients can be any JSON)."""

CANVAS_LABEL = "[canvas: {name}]\n"
"""The first line of a document's message: the text the person sees as the canvas title."""

UNNAMED = "Untitled"

MAX_NAME_CHARS = 200
"""Document names are a few words; this keeps a hostile one from bloating the message."""

CANVAS_WORK_UNITS = 64_000_000
"""Work allowed for the Canvas calls of one conversation besides what their own text pays for,
in units of about a character scanned or copied (``canvas_edits.WorkBudget``): about 60 ms on
the reference VM. Each targeted edit costs about twice its document's size, so this is some
200 edits of a 150 KB document; past the budget, updates are counted as not applied."""

UNITS_PER_ARGUMENT_CHAR = 4
"""Every character of a call's own JSON adds this much to the budget: reading it, and writing
the text it carries, cost about two units a character. A conversation that writes its documents
out in full (what the model is told to do) therefore never runs out, while a small call that
would make much more text than it carries (a hostile replacement repeating the whole match
thousands of times) is bounded by the fixed part. The documents' total size is bounded the same
way, since every character of new text is paid for."""

CALL_UNITS = 10_000
"""Budget units every call costs besides its text: reading and dispatching it is about 10 µs of
Python, and a flood of tiny calls must run the budget down too."""

FAILED_REPLY = "Failed with error"
"""How ChatGPT's reply to a call it refused begins."""

_REPLY_ID = re.compile(r"textdoc_id\W{1,6}([A-Za-z0-9_-]{1,128})")
"""``textdoc_id: '67…'`` or ``"textdoc_id": "67…"`` in the text of an older reply."""

_REPLY_SCAN_CHARS = 4096
"""Replies are one or two sentences; only their start is searched for an id."""


@dataclass(frozen=True, slots=True)
class CanvasDocument:
    """A document's final state: its label and text, and the ``create_time`` of the call that
    last wrote it, as the export has it (the linearizer validates times)."""

    name: str
    text: str
    raw_time: object


@dataclass(frozen=True, slots=True)
class CanvasFindings:
    """The documents to place, keyed by the path index of the call that last wrote them."""

    placed: dict[int, list[CanvasDocument]]
    documents: int
    updates_not_applied: int


@dataclass(slots=True)
class _Document:
    name: str
    text: str
    index: int
    raw_time: object
    textdoc_id: str | None = None


@dataclass(slots=True)
class _Call:
    """A create or update call waiting for its reply."""

    kind: str
    index: int
    raw_time: object
    arguments: str


@dataclass(slots=True)
class _Replay:
    max_chars: int
    budget: WorkBudget
    documents: list[_Document] = field(default_factory=list)
    by_id: dict[str, _Document] = field(default_factory=dict)
    current: _Document | None = None
    not_applied: int = 0

    def resolve(self, call: _Call, reply: dict[str, object] | None) -> None:
        failed, textdoc_id, title = _read_reply(reply)
        if failed:
            return  # refused by ChatGPT: the document did not change there either
        if not self.budget.charge(CALL_UNITS):
            self.not_applied += 1
            return
        arguments = _decode(call.arguments, self.budget)
        if call.kind == CREATE_CALL:
            self._create(call, arguments, textdoc_id, title)
        else:
            self._update(call, arguments, textdoc_id, title)

    def _create(
        self, call: _Call, arguments: object, textdoc_id: str | None, title: str | None
    ) -> None:
        name = arguments.get("name") if isinstance(arguments, dict) else None
        content = arguments.get("content") if isinstance(arguments, dict) else None
        if not isinstance(content, str):
            # The text is unknown (a later whole rewrite can still give it one).
            self.not_applied += 1
            content = ""
        elif not self.budget.charge(len(content)):
            self.not_applied += 1
            content = ""
        label = clean_line(name, MAX_NAME_CHARS) or clean_line(title, MAX_NAME_CHARS) or UNNAMED
        document = _Document(label, content[: self.max_chars], call.index, call.raw_time)
        self.documents.append(document)
        if textdoc_id is not None and textdoc_id not in self.by_id:
            document.textdoc_id = textdoc_id
            self.by_id[textdoc_id] = document
        self.current = document

    def _update(
        self, call: _Call, arguments: object, textdoc_id: str | None, title: str | None
    ) -> None:
        document = self.current
        if textdoc_id is not None:
            named = self.by_id.get(textdoc_id)
            if named is not None:
                document = named
            elif document is not None and document.textdoc_id is None:
                # The current document's own reply gave no id (older exports): this is it.
                document.textdoc_id = textdoc_id
                self.by_id[textdoc_id] = document
            else:
                # A document this thread never showed being created: start it empty, so that
                # a whole rewrite still gives it its text.
                label = clean_line(title, MAX_NAME_CHARS) or UNNAMED
                document = _Document(label, "", call.index, call.raw_time, textdoc_id)
                self.documents.append(document)
                self.by_id[textdoc_id] = document
        if document is None:
            self.not_applied += 1  # an update before any document: nothing to apply it to
            return
        self.current = document
        result = apply_update_call(
            document.text, arguments, max_chars=self.max_chars, budget=self.budget
        )
        if result.outcome is not Outcome.APPLIED:
            self.not_applied += 1
            return
        document.text = result.text
        document.index = call.index
        document.raw_time = call.raw_time


def find_canvas_documents(
    messages: Sequence[object], *, max_chars: int, work_units: int = CANVAS_WORK_UNITS
) -> CanvasFindings | None:
    """Replays the Canvas calls among ``messages`` (the thread's message dicts, in order);
    ``None`` when there are none, which costs one dictionary lookup per message.

    ``max_chars`` caps each document's text.
    """
    for message in messages:
        if type(message) is dict:
            recipient = message.get("recipient")
            if type(recipient) is str and recipient.startswith(TOOL_PREFIX):
                break
    else:
        return None
    replay = _Replay(max_chars, WorkBudget(work_units))
    pending: _Call | None = None
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        author = message.get("author")
        role = author.get("role") if isinstance(author, dict) else None
        if role == "tool":
            name = author.get("name") if isinstance(author, dict) else None
            if pending is not None and name == pending.kind:
                replay.resolve(pending, message)
                pending = None
            continue
        if pending is not None:
            replay.resolve(pending, None)
            pending = None
        recipient = message.get("recipient")
        if role == "assistant" and recipient in CANVAS_CALLS:
            assert isinstance(recipient, str)
            content = message.get("content")
            arguments = content_text(content) if isinstance(content, dict) else ""
            replay.budget.grant(UNITS_PER_ARGUMENT_CHAR * len(arguments))
            pending = _Call(recipient, index, message.get("create_time"), arguments)
    if pending is not None:
        replay.resolve(pending, None)
    placed: dict[int, list[CanvasDocument]] = {}
    kept = 0
    for document in replay.documents:
        if document.text.strip():
            placed.setdefault(document.index, []).append(
                CanvasDocument(document.name, document.text, document.raw_time)
            )
            kept += 1
    return CanvasFindings(placed, kept, replay.not_applied)


def _read_reply(reply: dict[str, object] | None) -> tuple[bool, str | None, str | None]:
    """(whether ChatGPT refused the call, the document id, the document title) from a reply."""
    if reply is None:
        return False, None, None
    content = reply.get("content")
    # Replies are a sentence or two; only their start is read, whatever a hostile file holds.
    text = (content_text(content) if isinstance(content, dict) else "")[:_REPLY_SCAN_CHARS]
    if text.lstrip().startswith(FAILED_REPLY):
        return True, None, None
    textdoc_id: str | None = None
    title: str | None = None
    metadata = reply.get("metadata")
    canvas = metadata.get("canvas") if isinstance(metadata, dict) else None
    if isinstance(canvas, dict):
        value = canvas.get("textdoc_id")
        if isinstance(value, str) and value:
            textdoc_id = value[:128]
        value = canvas.get("title")
        if isinstance(value, str):
            title = value
    if textdoc_id is None:
        found = _REPLY_ID.search(text)
        if found is not None:
            textdoc_id = found.group(1)
    return False, textdoc_id, title


def _decode(arguments: str, budget: WorkBudget) -> object:
    """The call's JSON arguments, or ``None`` when they are not JSON (or cost too much)."""
    if not budget.charge(len(arguments)):
        return None
    try:
        return json.loads(arguments)
    except (ValueError, RecursionError):  # not JSON, absurd nesting, or a 5,000-digit number
        return None
