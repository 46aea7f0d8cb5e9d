"""Hostile and extreme uploads, written to disk in constant memory, for tests and benchmarks.

- ``write_zeros``: a JSON array of ``0`` items and nothing else (``[0,0,0,…]``): no
  conversation at all, but every item costs the parser work.
- ``write_tiny_conversations``: a valid export of many minimal conversations, one exchange
  each, ~230 bytes apiece: the worst legal case for anything kept per conversation.
- ``write_many_entry_zip``: a ZIP with a small valid ``conversations.json`` and a huge number
  of tiny other members, like a media folder gone wild: the worst case for the central
  directory.
"""

from __future__ import annotations

import json
import uuid
import zipfile
from pathlib import Path

BLOCK_BYTES = 1024 * 1024


def write_zeros(path: Path, size: int) -> Path:
    """``[0,0,…,0]`` of about ``size`` bytes."""
    items = max(1, (size - 1) // 2)
    block = b"0," * (BLOCK_BYTES // 2)
    with path.open("wb") as out:
        out.write(b"[")
        remaining = items - 1
        while remaining > 0:
            count = min(remaining, len(block) // 2)
            out.write(block[: 2 * count])
            remaining -= count
        out.write(b"0]")
    return path


def tiny_conversation(number: int) -> dict[str, object]:
    """A minimal conversation with one user message and one answer, with a stable id."""
    when = 1_700_000_000.0 + number
    return {
        "id": str(uuid.UUID(int=number + 1)),
        "title": f"t{number}",
        "create_time": when,
        "update_time": when,
        "current_node": "b",
        "mapping": {
            "a": {
                "id": "a",
                "parent": None,
                "message": {
                    "author": {"role": "user"},
                    "content": {"content_type": "text", "parts": [f"hi {number}"]},
                },
            },
            "b": {
                "id": "b",
                "parent": "a",
                "message": {
                    "author": {"role": "assistant"},
                    "content": {"content_type": "text", "parts": ["hello"]},
                },
            },
        },
    }


def write_tiny_conversations(path: Path, count: int) -> Path:
    """A bare JSON array of ``count`` tiny conversations."""
    with path.open("w", encoding="utf-8") as out:
        out.write("[")
        for number in range(count):
            if number:
                out.write(",")
            out.write(json.dumps(tiny_conversation(number), separators=(",", ":")))
        out.write("]")
    return path


def write_many_entry_zip(path: Path, entries: int, *, conversations: int = 3) -> Path:
    """A ZIP with ``conversations.json`` (``conversations`` tiny ones) and ``entries - 1``
    one-byte members in a ``media/`` folder (stored, so the archive stays small)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(
            "conversations.json",
            json.dumps([tiny_conversation(number) for number in range(conversations)]),
        )
        for number in range(entries - 1):
            archive.writestr(f"media/{number:07d}", b"x")
    return path


def write_giant_conversations(path: Path, count: int, conversation_bytes: int) -> Path:
    """``count`` conversations of about ``conversation_bytes`` of JSON each: long chains of
    ~2 KB user and assistant messages, the largest single step a parse can be asked for."""
    text = ("lorem ipsum dolor sit amet " * 80)[:2000]
    node_bytes = len(text) + 160
    nodes = max(2, conversation_bytes // node_bytes)
    with path.open("w", encoding="utf-8") as out:
        out.write("[")
        for number in range(count):
            if number:
                out.write(",")
            mapping = {}
            parent = None
            for index in range(nodes):
                node_id = f"n{index}"
                mapping[node_id] = {
                    "id": node_id,
                    "parent": parent,
                    "message": {
                        "author": {"role": "user" if index % 2 == 0 else "assistant"},
                        "content": {"content_type": "text", "parts": [f"{index} {text}"]},
                    },
                }
                parent = node_id
            conversation = tiny_conversation(number) | {"mapping": mapping, "current_node": parent}
            out.write(json.dumps(conversation, separators=(",", ":")))
        out.write("]")
    return path
