"""Writing chunks to ``conversation_chunks`` with COPY, streamed, inside the parse transaction.

Rows are numbered in the order they are produced (``chunk_index``); together with the job id that
number is the table's unique key, so a job can never write a chunk twice.

Each row goes into an open COPY statement as soon as it is made, so the server stores chunks
(compression, indexes, WAL) on its own core while this process parses the next conversations;
buffering rows and sending them at once made the parse wait for the server instead. A statement
is closed after ``BATCH_MAX_ROWS`` rows or ``BATCH_MAX_BYTES`` bytes, before any other statement
on the connection (a COPY in progress admits none), and once it has been open for
``max_open_seconds``: the statement timeout counts from a statement's start, so a COPY opened
before a long stretch of the export with nothing to write (conversations without dialogue, or a
slow parse) would otherwise be cut off by it however few rows it carried. The caller checks the
age with ``close_if_open_for``, also while no rows come.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from uuid import UUID

from psycopg import AsyncCopy

from soulworker.conversations.conversation import Chunk
from soulworker.jobs.store import Connection
from soulworker.sql_files import query

# A COPY statement ends at either bound: ~4 MB keeps each statement well under a second, while
# being large enough that per-statement overhead does not matter.
BATCH_MAX_ROWS = 2000
BATCH_MAX_BYTES = 4 * 1024 * 1024

MAX_OPEN_SECONDS = 10.0
"""A COPY statement is ended after this long at most (or a quarter of the statement timeout,
if less): far from any timeout, while one extra statement per ten seconds costs nothing."""

_COLUMN_TYPES = [
    "uuid", "text", "text", "text", "int4", "timestamptz", "bool", "text", "uuid", "int4", "int4",
]  # fmt: skip


class ChunkWriter:
    def __init__(self, conn: Connection, *, job_id: UUID, user_id: UUID) -> None:
        self.conn = conn
        self.job_id = job_id
        self.user_id = user_id
        self.next_index = 0
        self.rows_written = 0
        self.bytes_written = 0
        self._copy: AsyncCopy | None = None
        self._copy_stack = AsyncExitStack()
        self._statement_rows = 0
        self._statement_bytes = 0
        self._opened_at = 0.0

    async def __aenter__(self) -> ChunkWriter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """On an error, abort a COPY in progress so the transaction can roll back cleanly."""
        self._copy = None
        await self._copy_stack.__aexit__(*exc_info)  # type: ignore[arg-type]

    @property
    def copy_open(self) -> bool:
        """Whether a COPY statement is in progress (rows sent, statement not yet ended)."""
        return self._copy is not None

    async def start(self) -> None:
        await self.conn.execute(query("use_fast_toast_compression"))
        await self.conn.execute(query("delete_job_chunks"), {"job_id": self.job_id})

    async def add(self, chunks: Sequence[Chunk]) -> range:
        """Send ``chunks`` into the open COPY; return the chunk indexes they were given."""
        first = self.next_index
        for chunk in chunks:
            copy = self._copy or await self._open()
            await copy.write_row(
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
            size = utf8_size(chunk.content) + utf8_size(chunk.title)
            self._statement_rows += 1
            self._statement_bytes += size
            self.bytes_written += size
            self.next_index += 1
            if self._statement_rows >= BATCH_MAX_ROWS or self._statement_bytes >= BATCH_MAX_BYTES:
                await self.flush()
        return range(first, self.next_index)

    async def close_if_open_for(self, seconds: float) -> bool:
        """End the COPY in progress if it started ``seconds`` ago or more; whether it did."""
        if self._copy is None or time.monotonic() - self._opened_at < seconds:
            return False
        await self.flush()
        return True

    async def flush(self) -> None:
        """End the COPY statement in progress (the server confirms every row it was sent)."""
        if self._copy is None:
            return
        self._copy = None
        await self._copy_stack.aclose()
        self.rows_written += self._statement_rows
        self._statement_rows = 0
        self._statement_bytes = 0

    async def _open(self) -> AsyncCopy:
        cursor = self.conn.cursor()
        copy = await self._copy_stack.enter_async_context(cursor.copy(query("copy_chunks")))
        copy.set_types(_COLUMN_TYPES)
        self._copy = copy
        self._opened_at = time.monotonic()
        return copy

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
