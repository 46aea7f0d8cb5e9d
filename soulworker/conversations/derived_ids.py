"""The id given to a conversation that the export lists without a usable one.

Such a conversation is imported, not rejected (docs/export-format.md, "Conversations without an
id"). Its id must be the same every time the same export is read, so that a retried parse
writes the same chunks and duplicate resolution treats copies alike; it must differ between
different conversations.

It is a hash of the conversation's own content: the node ids of its ``mapping`` in file order
(ChatGPT's node ids are UUIDs, unique to one conversation), ``current_node``, and everything the
linearizer kept (title, times, every message and persona signal). Where the conversation sits
in the export (which file, which position) is deliberately left out: exports repeat
conversations across files (``conversations.json`` beside its shards, copies at the root and in
a folder) at different positions, and a position in the id would import each copy as a
conversation of its own. With the content alone, copies get one id and the newest-copy rule
keeps one of them; two conversations that differ in anything at all get two ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from soulworker.conversations.conversation import Message, PersonaSignal

DERIVED_ID_PREFIX = "derived-"
"""Marks an id soulworker made up, so it is never mistaken for one of ChatGPT's."""

_HEX_CHARS = 32
"""128 bits of SHA-256: collisions are out of reach for any number of conversations."""


def derived_conversation_id(
    raw: dict[str, object],
    *,
    title: str,
    create_time: float | None,
    update_time: float | None,
    messages: Iterable[Message],
    signals: Iterable[PersonaSignal],
) -> str:
    """The id for ``raw``, a conversation without a usable id, from its content."""
    digest = hashlib.sha256()

    def add(value: object) -> None:
        # Length-prefixed, so that no two different sequences of fields hash alike.
        encoded = (value if isinstance(value, str) else repr(value)).encode(
            "utf-8", "surrogatepass"
        )
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)

    mapping = raw.get("mapping")
    if isinstance(mapping, dict):
        add(len(mapping))
        for node_id in mapping:
            add(node_id)
    current_node = raw.get("current_node")
    add(current_node if isinstance(current_node, str) else None)
    add(title)
    add(create_time)
    add(update_time)
    for message in messages:
        add(message.role)
        add(message.text)
        add(message.create_time)
    for signal in signals:
        add(signal.kind.value)
        add(signal.text)
        add(signal.time)
    return DERIVED_ID_PREFIX + digest.hexdigest()[:_HEX_CHARS]
