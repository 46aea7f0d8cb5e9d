"""Conversations as text: from a raw export conversation to dialogue, duplicates and chunks.

``linearize`` walks one conversation's graph into the dialogue the person saw (``message_text``,
``citations``, ``canvas``, ``canvas_edits``); ``conversation`` holds the result; ``derived_ids``
names a conversation without an id; ``duplicates`` keeps the newest copy; ``chunker`` cuts the
dialogue into searchable chunks and ``chunk_layout`` remembers their overlaps.
May import: the ground floor and ``soulworker.llm.models`` (the token estimate) only.
"""
