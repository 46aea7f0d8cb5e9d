"""Writing chunks to ``conversation_chunks`` with COPY, in batches, inside the parse transaction.

Rows are numbered in the order they are produced (``chunk_index``); together with the job id that
number is the table's unique key, so a job can never write a chunk twice. Batches are bounded in
rows and in bytes, so memory stays flat and no single COPY statement runs long enough to meet the
statement timeout, however large the export.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from soulworker.pipeline.conversation import Chunk
from soulworker.queue.store import Connection
from soulworker.sql_files import query

# A batch is sent when it reaches either bound: ~4 MB keeps a COPY statement well under a second
# and the buffer small, while being large enough that per-statement overhead does not matter.
BATCH_MAX_ROWS = 2000
BATCH_MAX_BYTES = 4 * 1024 * 1024

_COLUMN_TYPES = [
    "uuid", "text", "text", "text", "int4", "timestamptz", "bool", "text", "uuid", "int4", "int4",
]  # fmt: skip

Row = tuple[UUID, str, str, str, int, datetime, bool, str, UUID, int, int]


class ChunkWriter:
    def __init__(self, conn: Connection, *, job_id: UUID, user_id: UUID) -> None:
        self.conn = conn
        self.job_id = job_id
        self.user_id = user_id
        self.next_index = 0
        self.rows_written = 0
        self.bytes_written = 0
        self._batch: list[Row] = []
        self._batch_bytes = 0

    async def start(self) -> None:
        await self.conn.execute(query("use_fast_toast_compression"))
        await self.conn.execute(query("delete_job_chunks"), {"job_id": self.job_id})

    async def add(self, chunks: Sequence[Chunk]) -> range:
        """Queue ``chunks`` for writing; return the chunk indexes they were given."""
        first = self.next_index
        for chunk in chunks:
            self._batch.append(
                (
                    self.user_id,
                    chunk.conversation_id,
                    chunk.title,
                    chunk.content,
                    chunk.message_count,
                    chunk.created_at,
                    chunk.is_recent,
                    chunk.tier.value,
                    self.job_id,
                    self.next_index,
                    chunk.token_count,
                )
            )
            self._batch_bytes += utf8_size(chunk.content) + utf8_size(chunk.title)
            self.next_index += 1
        if len(self._batch) >= BATCH_MAX_ROWS or self._batch_bytes >= BATCH_MAX_BYTES:
            await self.flush()
        return range(first, self.next_index)

    async def flush(self) -> None:
        if not self._batch:
            return
        async with self.conn.cursor().copy(query("copy_chunks")) as copy:
            copy.set_types(_COLUMN_TYPES)
            for row in self._batch:
                await copy.write_row(row)
        self.rows_written += len(self._batch)
        self.bytes_written += self._batch_bytes
        self._batch.clear()
        self._batch_bytes = 0

    async def delete(self, indexes: range) -> None:
        """Remove already-added chunks (a stale duplicate conversation)."""
        if not indexes:
            return
        await self.flush()
        await self.conn.execute(
            query("delete_chunk_range"),
            {"job_id": self.job_id, "first_index": indexes.start, "last_index": indexes.stop - 1},
        )
        self.rows_written -= len(indexes)

    async def replace_previous_chunks(self) -> int:
        """Delete the user's chunks from earlier imports; return how many went."""
        await self.flush()
        cur = await self.conn.execute(
            query("replace_user_chunks"), {"user_id": self.user_id, "job_id": self.job_id}
        )
        return cur.rowcount


def utf8_size(text: str) -> int:
    """Bytes ``text`` takes on the wire. CJK or emoji text is 3-4 bytes a character, so
    counting characters would let a batch grow to four times its bound; ``isascii`` is a flag
    check in CPython, so the common ASCII case costs no encoding."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))
