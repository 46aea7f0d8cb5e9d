"""The parse's CPU work, from the export file to chunk rows, run in the parse thread.

One streaming pass: read conversations (``ExportReader``), linearize, resolve duplicates, chunk,
and keep the quick-pass sample, the persona signals and the chunk layout in bounded structures.
Nothing here touches the database: the rows to write (and the ranges of rows a better copy of a
conversation replaces) go to the event loop through a ``ParseChannel``, in order; chunk indexes
are numbered here, in the order the rows are sent, which is the order the writer stores them.

Everything this module builds is plain data, so it can run in any thread; ``parse_stage`` runs
it in a thread of its own (see ``parse_thread``) and does the writing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from soulworker.conversations.chunk_layout import ChunkLayout
from soulworker.conversations.chunker import chunk_conversation
from soulworker.conversations.conversation import Chunk, ChunkTier, Conversation
from soulworker.conversations.duplicates import DuplicateResolver, SeenConversation, Verdict
from soulworker.conversations.linearize import BadConversation, linearize
from soulworker.export.reader import ExportLimits, ExportReader
from soulworker.growing_file import GrowingFile
from soulworker.llm.models import sample_hard_cap_chars
from soulworker.pipeline.handoffs import ParseOutput
from soulworker.pipeline.parse_counts import ParseCounts
from soulworker.pipeline.parse_thread import ParseChannel
from soulworker.settings import Settings
from soulworker.soulprint.persona import PersonaCollector
from soulworker.soulprint.sampler import QuickPassSampler


@dataclass(frozen=True, slots=True)
class WriteChunks:
    """Rows to send into the COPY; ``indexes`` are the chunk indexes they must get."""

    indexes: range
    chunks: list[Chunk]


@dataclass(frozen=True, slots=True)
class DeleteChunks:
    """Rows already sent that a better copy of their conversation replaces."""

    indexes: range


ChunkRowChange = WriteChunks | DeleteChunks


@dataclass(frozen=True)
class ParseSummary:
    """What the pass found, once the whole export was read."""

    counts: ParseCounts
    uncompressed_bytes: int
    # The parse output (``handoffs.ParseOutput``), encoded here, in the parse thread: the chunk
    # layout of an export of a million tiny conversations takes ~0.2 s to encode, which would
    # be a stall on the loop.
    artifact_json: str
    persona_counts: dict[str, dict[str, int]]
    rows: int  # chunk indexes handed out (rows sent, replaced ones included)


class ParsePass:
    """The state of one streaming pass: counts, duplicates, the sample, persona, chunk layout.

    ``run`` is the parse thread's work; ``progress`` may be read from any thread.
    """

    def __init__(
        self,
        settings: Settings,
        export_path: Path,
        *,
        limits: ExportLimits,
        job_started: datetime,
        growing: GrowingFile | None = None,
        stream_zip: bool = True,
    ) -> None:
        self.export_path = export_path
        self.growing = growing  # the export while it still downloads (``growing_file``)
        self.stream_zip = stream_zip  # a ZIP may be read as it arrives (``ExportReader``)
        self.limits = limits
        self.max_message_bytes = settings.max_message_bytes
        self.tier = ChunkTier(settings.chunk_tier)
        self.now = datetime.now(UTC)
        self.fallback_time = job_started
        self.counts = ParseCounts()
        # Beside the export, in the job's private workspace; removed when the pass ends.
        self.duplicates = DuplicateResolver(
            spill_path=export_path.with_name(export_path.name + ".seen")
        )
        self.sampler = QuickPassSampler(
            budget_chars=settings.quick_pass_sample_chars,
            hard_cap_chars=sample_hard_cap_chars(settings.quick_pass_model),
        )
        self.persona = PersonaCollector(budget_chars=settings.persona_signal_chars)
        self.layout = ChunkLayout()
        self.next_index = 0
        self._reader: ExportReader | None = None
        self._channel: ParseChannel[ChunkRowChange, ParseSummary] | None = None

    @property
    def progress(self) -> float:
        """Fraction of the export read so far (0..1)."""
        reader = self._reader
        return reader.progress if reader is not None else 0.0

    def run(self, channel: ParseChannel[ChunkRowChange, ParseSummary]) -> ParseSummary:
        """Read the whole export, sending rows through ``channel``; the summary at the end."""
        self._channel = channel
        try:
            # Before each read of the export: stop if told to, and wait while the rows already
            # produced are not written, so no more of the export is in memory than that.
            with ExportReader(
                self.export_path,
                limits=self.limits,
                interrupt=channel.wait_for_room,
                growing=self.growing,
                stream_zip=self.stream_zip,
            ) as reader:
                self._reader = reader
                for raw in reader:
                    self.take(raw)
                    del raw  # so that it is freed before the next conversation is built
                self.counts.skipped_items = reader.skipped_items
                self.counts.numbers_read_as_text = reader.numbers_quoted
                uncompressed = reader.uncompressed_bytes_read
        finally:
            self.duplicates.close()
        return ParseSummary(
            counts=self.counts,
            uncompressed_bytes=uncompressed,
            artifact_json=self.artifact_json(),
            persona_counts=self.persona.digest().counts.to_result(),
            rows=self.next_index,
        )

    def take(self, raw: Any) -> None:
        """One raw conversation from the reader."""
        conversation = self._linearize(raw)
        if conversation is None:
            return
        self.persona.add_conversation(conversation)
        self._keep(conversation)

    def _send(self, output: ChunkRowChange, size: int) -> None:
        assert self._channel is not None
        self._channel.put(output, size)

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

    def _keep(self, conversation: Conversation) -> None:
        counts = self.counts
        verdict, previous = self.duplicates.judge(
            conversation.id, conversation.update_time, conversation.stats.mapping_size
        )
        if verdict is Verdict.STALE:
            counts.duplicates += 1
            return
        if verdict is Verdict.REPLACES and previous is not None:
            counts.duplicates += 1
            if previous.chunk_indexes:
                self._send(DeleteChunks(previous.chunk_indexes), 0)
            self.sampler.discard(conversation.id)
            self._uncount(previous)
        stats = conversation.stats
        indexes = range(0)
        if conversation.messages:
            chunks = chunk_conversation(
                conversation, now=self.now, fallback_created_at=self.fallback_time, tier=self.tier
            )
            indexes = range(self.next_index, self.next_index + len(chunks))
            self.next_index = indexes.stop
            self._send(WriteChunks(indexes, chunks), sum(len(chunk.content) for chunk in chunks))
            self.layout.extend(indexes, chunks)
            self.sampler.offer(conversation)
            counts.conversations += 1
            counts.messages += len(conversation.messages)
        else:
            counts.conversations_without_dialogue += 1
        # Counted for the copy kept only (and taken back out if a better copy comes), so the
        # result describes what was imported, not every copy the export happened to hold.
        counts.truncated_messages += stats.truncated_messages
        unknown = self._count_unknown(stats.unknown_content_types)
        self.duplicates.keep(
            conversation.id,
            conversation.update_time,
            stats.mapping_size,
            indexes,
            len(conversation.messages),
            truncated_messages=stats.truncated_messages,
            unknown_content_types=unknown,
        )

    def _count_unknown(self, seen: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
        """Count a conversation's unknown content types; what was counted under which key
        (at most one pair per key, so the record kept for the copy stays small)."""
        if not seen:
            return ()
        counted: dict[str, int] = {}
        add = self.counts.unknown_content_types.add
        for content_type, messages in seen:
            key = add(content_type, messages)
            counted[key] = counted.get(key, 0) + messages
        return tuple(counted.items())

    def _uncount(self, previous: SeenConversation) -> None:
        """Take a replaced copy back out of the counts, whether or not it had dialogue."""
        counts = self.counts
        if previous.message_count:
            counts.conversations -= 1
            counts.messages -= previous.message_count
        else:
            counts.conversations_without_dialogue -= 1
        counts.truncated_messages -= previous.truncated_messages
        for key, messages in previous.unknown_content_types:
            counts.unknown_content_types.remove(key, messages)

    def artifact(self) -> ParseOutput:
        """What the model stages need from the export, so none of them reads it again."""
        sample = self.sampler.sample()
        return ParseOutput(
            sample_text=sample.text,
            sample_conversation_ids=tuple(sample.conversation_ids),
            top_conversations=tuple(
                (ranked.conversation_id, ranked.score) for ranked in self.sampler.top_ids()
            ),
            persona_text=self.persona.digest().text,
            chunk_layout=self.layout,
        )

    def artifact_json(self) -> str:
        """``artifact()`` as JSON text (in slices: ``ParseOutput.to_json_text``)."""
        return self.artifact().to_json_text()
