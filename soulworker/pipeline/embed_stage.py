"""Stage 4, embed (50–60 %): each chunk of the job to a vector in ``conversation_chunks.embedding``
(the column), exactly once and resumable (docs/pipeline.md, "Embed"; docs/embeddings.md).

Chunks are read a page at a time in ``chunk_index`` order after a cursor kept in the stage's own
checkpoint entry; each page's vectors are written in one fenced transaction with the advanced
cursor, so a rescued job embeds again at most the one page it was working on. The update matches
this job's own chunks only: once a newer import has replaced the set, nothing matches, nothing is
written to the new set, and the stage stops saying so.

Skipped (``embeddings: 0`` and the reason in the result) when ``SOULWORKER_EMBED_PROVIDER=off``
or the database has no embedding column (no pgvector). A blank chunk is never sent (the providers
refuse empty input); it is counted in ``embed_skipped`` with its reason, so at the end the job's
chunks without a vector are exactly ``embed_skipped``.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from psycopg.types import TypeInfo

from soulworker.embeddings.dimensions import embedding_column, wanted_dimensions
from soulworker.embeddings.embedder import HttpEmbedder
from soulworker.embeddings.errors import EmbeddingError
from soulworker.embeddings.factory import embedder_from_settings, embedding_enabled
from soulworker.embeddings.usage import EmbedUsage
from soulworker.embeddings.vector_wire import WireVector, binary_vectors
from soulworker.logs import get_logger
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.stages import EMBED
from soulworker.sql_files import query

log = get_logger(__name__)

MIN_PAGE_CHUNKS = 64
"""Fewest chunks per page, and so per fenced transaction: 64 medium chunks are ~130K tokens, a
fraction of a cent to embed twice after a rescue."""

MAX_PAGE_CHUNKS = 2_048
"""Most chunks per page: ~4M tokens (under a dollar at list price) is the most a rescued job
embeds twice, and ~15 MB of vectors is one transaction's write."""


def page_chunks(texts_per_request: int, concurrency: int) -> int:
    """Chunks per page: enough to fill every request slot at once (Bedrock takes one text per
    request, an OpenAI-compatible endpoint up to 96), within the bounds above. A page is the
    unit of the fenced write, so a smaller one would leave slots idle: one page of 64 is one
    OpenAI request, and concurrency would buy nothing (docs/embeddings.md, "Throughput and
    cost")."""
    wanted = max(1, texts_per_request) * max(1, concurrency)
    return max(MIN_PAGE_CHUNKS, min(MAX_PAGE_CHUNKS, wanted))


# Why the whole stage was skipped (``embed_skipped_reason``).
SKIPPED_OFF = "embedding_off"
SKIPPED_NO_COLUMN = "no_embedding_column"
STOPPED_REPLACED = "chunks_replaced"
# Why one chunk has no vector (``embed_skipped_reasons``).
EMPTY_TEXT = "empty_text"

USAGE_KEY = "embedding_usage"
"""The job result's running embedding usage (``EmbedUsage.to_json``), across attempts."""


class EmbedStage:
    spec = EMBED
    keeps: tuple[str, ...] = ()  # its work lives in conversation_chunks, not in artifacts

    def is_done(self, run: ImportRun) -> bool:
        return run.stage_done(EMBED.name)

    async def run(self, run: ImportRun) -> None:
        started = time.monotonic()
        await run.progress(EMBED).begin()
        if not embedding_enabled(run.settings):
            await self._skip(run, SKIPPED_OFF, started)
            return
        async with run.store_connection() as conn:
            column = await embedding_column(conn)
        if column is None:
            await self._skip(run, SKIPPED_NO_COLUMN, started)
            return
        try:
            dimensions = wanted_dimensions(column, run.settings.embed_dimensions)
            embedder = embedder_from_settings(
                run.settings, dimensions=dimensions, limiter=run.embed_limiter
            )
        except EmbeddingError as exc:
            log.error("embedding is misconfigured", fix=exc.operator_line, code=exc.code)
            raise
        seed_usage(embedder.usage, run.result.get(USAGE_KEY))
        try:
            await _EmbedPass(run, embedder, started).embed_all()
        except EmbeddingError as exc:
            # The operator line names a setting or an account, never anyone's text.
            log.error("embedding failed", fix=exc.operator_line, code=exc.code)
            raise
        finally:
            await embedder.aclose()

    async def _skip(self, run: ImportRun, reason: str, started: float) -> None:
        chunks = int(run.result.get("chunks") or 0)
        log.info("embedding skipped", reason=reason)
        outcome = {
            "embeddings": 0,
            "embed_skipped": chunks,
            "embed_skipped_reasons": {reason: chunks} if chunks else {},
            "embed_skipped_reason": reason,
            **run.record_stage_seconds(EMBED.name, time.monotonic() - started),
        }
        await _finish(run, outcome, {"done": True, "skipped": reason})


class _EmbedPass:
    """One attempt's pages, from the checkpoint's cursor to the end of the job's chunks."""

    def __init__(self, run: ImportRun, embedder: HttpEmbedder, started: float) -> None:
        self.run = run
        self.embedder = embedder
        self.started = started
        entry = run.ctx.checkpoint.get(EMBED.name)
        saved = entry if isinstance(entry, dict) else {}
        self.cursor = int(saved.get("cursor", -1))
        self.embedded = int(saved.get("embedded", 0))
        self.skipped: Counter[str] = Counter(saved.get("skipped_reasons") or {})
        self.page_size = page_chunks(embedder.texts_per_request, embedder.limiter.limit)
        self.vector_type: TypeInfo | None = None  # looked up on the first write

    def entry(self, **extra: Any) -> dict[str, Any]:
        return {
            "cursor": self.cursor,
            "embedded": self.embedded,
            "skipped_reasons": dict(self.skipped),
            **extra,
        }

    async def embed_all(self) -> None:
        run, job = self.run, self.run.ctx.job
        async with run.store_connection() as conn:
            cur = await conn.execute(query("embed_chunk_count"), {"job_id": job.id})
            counts = await cur.fetchone()
        assert counts is not None
        total = int(counts["chunks"])
        if total == 0 and int(run.result.get("chunks") or 0) > 0:
            # The parse wrote chunks that are gone: a newer import replaced them.
            await self._stop_replaced()
            return
        progress = run.progress(EMBED)
        while True:
            page = await self._page()
            if not page:
                break
            indexes = [row["chunk_index"] for row in page if row["content"].strip()]
            texts = [row["content"] for row in page if row["content"].strip()]
            blank = len(page) - len(texts)
            vectors = await self.embedder.embed(texts) if texts else []
            async with run.ctx.transaction() as tx:
                written = 0
                if texts:
                    self.vector_type = await binary_vectors(tx.conn, self.vector_type)
                    cur = await tx.conn.execute(
                        query("embed_chunk_vectors"),
                        {
                            "chunk_indexes": indexes,
                            "embeddings": [WireVector(vector) for vector in vectors],
                            "job_id": job.id,
                            "user_id": job.user_id,
                        },
                    )
                    written = cur.rowcount
                if texts and written == 0:
                    replaced = True
                else:
                    replaced = False
                    self.cursor = page[-1]["chunk_index"]
                    self.embedded += written
                    if blank:
                        self.skipped[EMPTY_TEXT] += blank
                    done = self.embedded + self.skipped.total()
                    await tx.advance(
                        stage=EMBED.name,
                        percent=round(EMBED.percent(done / max(total, 1))),
                        label=EMBED.label,
                        checkpoint={EMBED.name: self.entry()},
                        result={USAGE_KEY: self.embedder.usage.to_json()},
                    )
            if replaced:
                await self._stop_replaced()
                return
            run.result[USAGE_KEY] = self.embedder.usage.to_json()
            await progress.report((self.embedded + self.skipped.total()) / max(total, 1))
        await self._complete()

    async def _page(self) -> list[dict[str, Any]]:
        async with self.run.store_connection() as conn:
            cur = await conn.execute(
                query("embed_chunk_page"),
                {
                    "job_id": self.run.ctx.job.id,
                    "after_index": self.cursor,
                    "page_size": self.page_size,
                },
            )
            return list(await cur.fetchall())

    async def _complete(self) -> None:
        run = self.run
        async with run.store_connection() as conn:
            cur = await conn.execute(query("embed_chunk_count"), {"job_id": run.ctx.job.id})
            counts = await cur.fetchone()
        assert counts is not None
        without = int(counts["without_embedding"])
        if without != self.skipped.total():
            # Cannot happen while this job alone writes its chunks; reported, never hidden.
            log.warning(
                "chunks without a vector differ from those skipped",
                without_embedding=without,
                skipped=self.skipped.total(),
            )
            self.skipped["unaccounted"] += without - self.skipped.total()
        log.info(
            "chunks embedded",
            embeddings=self.embedded,
            skipped=self.skipped.total(),
            **self.embedder.usage.to_json(),
        )
        await _finish(run, self._outcome(), self.entry(done=True))

    async def _stop_replaced(self) -> None:
        log.warning("a newer import replaced this job's chunks; embedding stopped")
        await _finish(
            self.run,
            {**self._outcome(), "embed_skipped_reason": STOPPED_REPLACED},
            self.entry(done=True, skipped=STOPPED_REPLACED),
        )

    def _outcome(self) -> dict[str, Any]:
        return {
            "embeddings": self.embedded,
            "embed_skipped": self.skipped.total(),
            "embed_skipped_reasons": dict(self.skipped),
            USAGE_KEY: self.embedder.usage.to_json(),
            **self.run.record_stage_seconds(EMBED.name, time.monotonic() - self.started),
        }


async def _finish(run: ImportRun, outcome: dict[str, Any], entry: dict[str, Any]) -> None:
    """Mark the stage done with its result, the cost so far (embeddings included) mirrored to
    the profile, in one fenced transaction."""
    run.result.update(outcome)
    outcome = {**outcome, **run.usage_result()}
    run.result.update(outcome)  # kept in step with the job row (see FinishStage)
    async with run.ctx.transaction() as tx:
        await run.write_cost(tx.conn, outcome["cost"])
        await tx.advance(
            stage=EMBED.name,
            percent=EMBED.end,
            label=EMBED.label,
            checkpoint={EMBED.name: entry},
            result=outcome,
            completed=run.completes_job(EMBED),
        )


def seed_usage(usage: EmbedUsage, saved: Any) -> None:
    """Start this attempt's counts from the earlier attempts' (the job's cost covers every call
    it paid for); a record of another model is not added to this one's."""
    if not isinstance(saved, dict) or saved.get("model") != usage.model:
        return
    for name in ("calls", "texts", "input_tokens", "cut_texts", "throttled", "retries"):
        value = saved.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(usage, name, value)
