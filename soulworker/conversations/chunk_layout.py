"""Where each stored chunk's header and overlap end, so the full pass can send each piece of
conversation text once: a chunk repeats the end of the previous one (its overlap), and the full
pass strips that repeat (no conversation text is sent twice within a stage; docs/pipeline.md).

Kept as two compact integer arrays indexed by ``chunk_index`` (8 bytes a chunk), not as objects,
so memory stays flat however large the export.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

from soulworker.conversations.conversation import Chunk


class ChunkLayout:
    def __init__(self, header_chars: Sequence[int] = (), overlap_chars: Sequence[int] = ()) -> None:
        self.header_chars = array("I", header_chars)
        self.overlap_chars = array("I", overlap_chars)

    def extend(self, indexes: range, chunks: Sequence[Chunk]) -> None:
        if indexes.start != len(self.header_chars):
            raise ValueError("chunk indexes must be added in order")
        for chunk in chunks:
            self.header_chars.append(chunk.header_chars)
            self.overlap_chars.append(chunk.overlap_chars)

    def new_text(self, chunk_index: int, content: str) -> str:
        """The chunk's content without the part that repeats the previous chunk."""
        if chunk_index >= len(self.header_chars):
            return content
        header = self.header_chars[chunk_index]
        overlap = self.overlap_chars[chunk_index]
        return content[:header] + content[header + overlap :]

    def overlap(self, chunk_index: int) -> int:
        if chunk_index >= len(self.overlap_chars):
            return 0
        return self.overlap_chars[chunk_index]

    def to_json(self) -> dict[str, Any]:
        return {
            "header_chars": self.header_chars.tolist(),
            "overlap_chars": self.overlap_chars.tolist(),
        }

    @classmethod
    def from_json(cls, data: Any) -> ChunkLayout:
        if not isinstance(data, dict):
            return cls()
        return cls(data.get("header_chars") or (), data.get("overlap_chars") or ())
