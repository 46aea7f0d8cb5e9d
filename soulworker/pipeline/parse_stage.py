"""Stage 2, parse (20–35 % by bytes read): one streaming pass from the export to stored chunks.

In one pass over the file: read conversations (ijson), linearize, resolve duplicates, chunk, and
COPY the chunks into ``conversation_chunks``, while keeping the quick-pass sample and the persona
signals in bounded structures. Everything is written inside one transaction that also replaces the
user's previous chunks and marks the stage done, so:

* nothing is visible until the whole export was read (a ZIP's CRC fails only at its very end);
* the chat never sees an empty or a doubled chunk set;
* a killed or rescued parse leaves nothing behind, and its retry cannot duplicate a chunk.

The work is synchronous Python (ijson's C parser, the linearizer, the chunker); the loop hands
control back to the event loop every few milliseconds so heartbeats and other jobs keep running.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from soulworker.conversations.chunk_layout import ChunkLayout
from soulworker.conversations.chunker import chunk_conversation
from soulworker.conversations.conversation import ChunkTier, Conversation
from soulworker.conversations.duplicates import DuplicateResolver, SeenConversation, Verdict
from soulworker.conversations.linearize import BadConversation, linearize
from soulworker.export.errors import EmptyExport
from soulworker.export.reader import ExportLimits, ExportReader
from soulworker.llm.models import sample_hard_cap_chars
from soulworker.logs import get_logger
from soulworker.pipeline.chunk_writer import ChunkWriter
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.parse_counts import ParseCounts
from soulworker.pipeline.stages import PARSE
from soulworker.soulprint.persona import PersonaCollector
from soulworker.soulprint.sampler import QuickPassSampler

log = get_logger(__name__)

# Hand control back to the event loop this often (seconds of uninterrupted parsing).
YIELD_EVERY_SECONDS = 0.02
# Report progress this often; the queue throttles the database writes further.
PROGRESS_EVERY_SECONDS = 0.25
PARSE_OUTPUT_ARTIFACT = "parse_output"


class ParsePass:
    """The state of one streaming pass: counts, duplicates, the sample, persona, chunk layout."""

    def __init__(self, run: ImportRun, writer: ChunkWriter) -> None:
        settings = run.settings
        self.writer = writer
        self.max_message_bytes = settings.max_message_bytes
        self.tier = ChunkTier(settings.chunk_tier)
        self.now = datetime.now(UTC)
        self.fallback_time = run.job_started
        self.counts = ParseCounts()
        self.duplicates = DuplicateResolver()
        self.sampler = QuickPassSampler(
            budget_chars=settings.quick_pass_sample_chars,
            hard_cap_chars=sample_hard_cap_chars(settings.quick_pass_model),
        )
        self.persona = PersonaCollector(budget_chars=settings.persona_signal_chars)
        self.layout = ChunkLayout()
        self.write_seconds = 0.0  # waiting on COPY, for the log: where a slow parse spends time

    async def take(self, raw: Any) -> None:
        """One raw conversation from the reader."""
        conversation = self._linearize(raw)
        if conversation is None:
            return
        self.persona.add_conversation(conversation)
        await self._keep(conversation)

    def _linearize(self, raw: Any) -> Conversation | None:
        counts = self.counts
        try:
            conversation = linearize(raw, max_message_bytes=self.max_message_bytes)
        except BadConversation as bad:
            counts.bad_conversations += 1
            counts.bad_conversation_reasons[bad.code] += 1
            return None
        counts.canvas_documents += conversation.stats.canvas_documents
        counts.canvas_updates_not_applied += conversation.stats.canvas_updates_not_applied
        return conversation

    async def _keep(self, conversation: Conversation) -> None:
        counts = self.counts
        verdict, previous = self.duplicates.judge(
            conversation.id, conversation.update_time, conversation.stats.mapping_size
        )
        if verdict is Verdict.STALE:
            counts.duplicates += 1
            return
        if verdict is Verdict.REPLACES and previous is not None:
            counts.duplicates += 1
            await self.writer.delete(previous.chunk_indexes)
            self.sampler.discard(conversation.id)
            self._uncount(previous)
        stats = conversation.stats
        indexes = range(0)
        if conversation.messages:
            chunks = chunk_conversation(
                conversation, now=self.now, fallback_created_at=self.fallback_time, tier=self.tier
            )
            writing = time.perf_counter()
            indexes = await self.writer.add(chunks)
            self.write_seconds += time.perf_counter() - writing
            self.layout.extend(indexes, chunks)
            self.sampler.offer(conversation)
            counts.conversations += 1
            counts.messages += len(conversation.messages)
        else:
            counts.conversations_without_dialogue += 1
        # Counted for the copy kept only (and taken back out if a better copy comes), so the
        # result describes what was imported, not every copy the export happened to hold.
        counts.truncated_messages += stats.truncated_messages
        for content_type, seen in stats.unknown_content_types:
            counts.unknown_content_types[content_type] += seen
        self.duplicates.keep(
            conversation.id,
            conversation.update_time,
            stats.mapping_size,
            indexes,
            len(conversation.messages),
            truncated_messages=stats.truncated_messages,
            unknown_content_types=stats.unknown_content_types,
        )

    def _uncount(self, previous: SeenConversation) -> None:
        """Take a replaced copy back out of the counts, whether or not it had dialogue."""
        counts = self.counts
        if previous.message_count:
            counts.conversations -= 1
            counts.messages -= previous.message_count
        else:
            counts.conversations_without_dialogue -= 1
        counts.truncated_messages -= previous.truncated_messages
        unknown = counts.unknown_content_types
        for content_type, seen in previous.unknown_content_types:
            unknown[content_type] -= seen
            if unknown[content_type] <= 0:
                del unknown[content_type]

    def artifact(self) -> dict[str, Any]:
        """What the model stages need from the export, so none of them reads it again."""
        sample = self.sampler.sample()
        return {
            "sample_text": sample.text,
            "sample_conversation_ids": list(sample.conversation_ids),
            "top_conversations": [
                [ranked.conversation_id, ranked.score] for ranked in self.sampler.top_ids()
            ],
            "persona_text": self.persona.digest().text,
            "chunk_layout": self.layout.to_json(),
        }


class ParseStage:
    spec = PARSE
    keeps: tuple[str, ...] = (PARSE_OUTPUT_ARTIFACT,)

    def is_done(self, run: ImportRun) -> bool:
        return run.stage_done(PARSE.name)

    async def run(self, run: ImportRun) -> None:
        started = time.monotonic()
        job = run.ctx.job
        progress = run.progress(PARSE)
        await progress.begin()
        limits = ExportLimits(max_export_bytes=run.settings.max_export_bytes)

        async with run.ctx.transaction() as tx:
            async with ChunkWriter(tx.conn, job_id=job.id, user_id=job.user_id) as writer:
                await writer.start()
                parse = ParsePass(run, writer)
                with ExportReader(run.export_path, limits=limits) as reader:
                    slice_started = last_report = time.monotonic()
                    for raw in reader:
                        await parse.take(raw)
                        clock = time.monotonic()
                        if clock - slice_started >= YIELD_EVERY_SECONDS:
                            if clock - last_report >= PROGRESS_EVERY_SECONDS:
                                await progress.report(reader.progress)
                                last_report = clock
                            await asyncio.sleep(0)
                            slice_started = time.monotonic()
                    parse.counts.skipped_items = reader.skipped_items
                    uncompressed_bytes = reader.uncompressed_bytes_read
                await writer.flush()
            counts = parse.counts
            if counts.conversations == 0:
                raise EmptyExport(empty_export_detail(counts))
            counts.chunks = writer.rows_written
            replaced = await writer.replace_previous_chunks()
            await tx.put_artifact(PARSE_OUTPUT_ARTIFACT, parse.artifact())
            summary: dict[str, Any] = {
                **counts.to_result(),
                "uncompressed_bytes": uncompressed_bytes,
                "chunk_tier": parse.tier.value,
                "previous_chunks_replaced": replaced,
                "persona_signals": parse.persona.digest().counts.to_result(),
            }
            run.result.update(summary)
            seconds = run.record_stage_seconds(PARSE.name, time.monotonic() - started)
            carried: dict[str, Any] = {
                key: run.result[key] for key in ("export_bytes", "download") if key in run.result
            }
            await tx.advance(
                stage=PARSE.name,
                percent=PARSE.end,
                label=PARSE.label,
                checkpoint={PARSE.name: {"done": True, "chunks": counts.chunks}},
                result={**summary, **carried, **seconds},
                completed=run.completes_job(PARSE),
            )
        log.info(
            "export parsed",
            conversations=counts.conversations,
            messages=counts.messages,
            chunks=counts.chunks,
            bad_conversations=counts.bad_conversations,
            duplicates=counts.duplicates,
            seconds=round(time.monotonic() - started, 2),
            write_seconds=round(parse.write_seconds, 2),
        )


def empty_export_detail(counts: ParseCounts) -> str | None:
    """Why an export that parsed held no conversation with dialogue, for the user."""
    if counts.bad_conversations or counts.skipped_items:
        return (
            f"none of its {counts.bad_conversations + counts.skipped_items:,} entries is a "
            "readable conversation"
        )
    if counts.conversations_without_dialogue:
        return (
            f"its {counts.conversations_without_dialogue:,} conversations contain no messages "
            "from you or the assistant"
        )
    return None
