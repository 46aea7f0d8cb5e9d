"""The job's stored chunks as the full pass plans with them: sizes and dates, no text, each
chunk's overlap known from the parse's chunk layout. Shared by the full pass and the local
import's cost estimate (docs/pipeline.md, "4. Full pass")."""

from __future__ import annotations

from soulworker.conversations.chunk_layout import ChunkLayout
from soulworker.pipeline.import_run import ImportRun
from soulworker.soulprint.full_pass_plan import ChunkStat
from soulworker.sql_files import query


async def load_chunk_stats(run: ImportRun, layout: ChunkLayout) -> list[ChunkStat]:
    """The job's stored chunks as the full pass plans with them (no text, overlaps known)."""
    async with run.store_connection() as conn:
        cur = await conn.execute(query("full_pass_chunk_stats"), {"job_id": run.ctx.job.id})
        return [
            ChunkStat(
                chunk_index=row["chunk_index"],
                token_count=row["token_count"] or 0,
                message_count=row["message_count"] or 0,
                is_recent=bool(row["is_recent"]),
                created_at=row["created_at"],
                overlap_chars=layout.overlap(row["chunk_index"]),
            )
            async for row in cur
        ]
