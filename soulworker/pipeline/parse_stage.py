"""Stage 2, parse (20–35 % by bytes read): one streaming pass from the export to stored chunks.

The pass itself (``parse_pass``: read, linearize, resolve duplicates, chunk, sample) runs in a
thread of its own (``parse_thread``), so however long one of its steps takes, the event loop,
and with it the heartbeats and every other job of the process, keeps running. This module is
the loop's side: it sends the rows the thread produces into an open COPY, reports progress, and
writes everything inside one transaction that also replaces the user's previous chunks and marks
the stage done, so:

* nothing is visible until the whole export was read (a ZIP's CRC fails only at its very end);
* the chat never sees an empty or a doubled chunk set;
* a killed or rescued parse leaves nothing behind, and its retry cannot duplicate a chunk.

While the download still runs (``SOULWORKER_PARSE_DURING_DOWNLOAD``, ``download_in_flight``), the
pass reads the file as it grows and waits for the bytes not yet written; the download's own
outcome decides what a failed pass means: a changed object (the download started over) rolls the
pass back and parses again, a failed download's error is the job's, and the parse's own error
stops the download (docs/pipeline.md, "Parsing while the export downloads").

The export's temp file is removed as soon as the reader is done with it: the later stages
never read it, and a large export should not hold the disk through minutes of model calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from soulworker.export.errors import EmptyExport
from soulworker.export.reader import ExportLimits
from soulworker.export.zip_stream import NeedsWholeFile
from soulworker.growing_file import DownloadAbandoned
from soulworker.logs import get_logger
from soulworker.pipeline.chunk_writer import MAX_OPEN_SECONDS, ChunkWriter
from soulworker.pipeline.download_in_flight import (
    DownloadInFlight,
    download_result_patch,
)
from soulworker.pipeline.handoffs import PARSE_OUTPUT_ARTIFACT
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.parse_counts import ParseCounts
from soulworker.pipeline.parse_pass import (
    ChunkRowChange,
    DeleteChunks,
    ParsePass,
    ParseSummary,
)
from soulworker.pipeline.parse_thread import ParseChannel, start_parse_thread
from soulworker.pipeline.stages import DOWNLOAD, PARSE, StageProgress
from soulworker.sql_files import query
from soulworker.tempfiles import remove_file

log = get_logger(__name__)

PROGRESS_EVERY_SECONDS = 0.25
"""How often the loop side looks at the parse's progress when it has nothing else to do; the
queue throttles the database writes further."""

STOP_WAIT_SECONDS = 10.0
"""How long a stopped parse may take to notice: it checks at every read of the export, so it
normally stops within milliseconds; this only bounds a thread stuck in a single step."""


class ParseStage:
    spec = PARSE
    keeps: tuple[str, ...] = (PARSE_OUTPUT_ARTIFACT,)

    def is_done(self, run: ImportRun) -> bool:
        return run.stage_done(PARSE.name)

    async def run(self, run: ImportRun) -> None:
        flight = run.download
        if flight is None:
            await self._parse(run, None)
            return
        growing = flight.growing
        stream_zip = True
        try:
            while True:
                generation = growing.generation
                try:
                    await self._parse(run, flight, stream_zip=stream_zip)
                    return
                except Exception as error:
                    # Whatever the parse met, the download's state decides what it means: bytes
                    # of an object that changed (the download started over) mean nothing, so
                    # this pass and everything it wrote (rolled back with its transaction) go,
                    # and the parse starts again; a failed download's own error is the job's.
                    if growing.generation != generation:
                        log.warning(
                            "the export changed while it was parsed; parsing it again",
                            parse_error=type(error).__name__,
                        )
                        continue
                    if growing.abandoned or isinstance(error, DownloadAbandoned):
                        await flight.result()
                    if isinstance(error, NeedsWholeFile) and stream_zip:
                        # A ZIP read as it arrived could not be read or verified that way: this
                        # pass rolls back, and the archive is read once whole, as without it.
                        log.info("reading the ZIP export once it is whole", reason=error.reason)
                        stream_zip = False
                        continue
                    # The parse's own failure (not an export, a hostile upload, a truncated
                    # file), maybe before the download ended: the download is stopped, and the
                    # job's stage moves on to the parse (if the parse had not reported yet) so
                    # that the error history names it.
                    await flight.stop()
                    with contextlib.suppress(Exception):  # the parse's error is the job's
                        await run.progress(PARSE).report(flight.parsed)
                    raise
        finally:
            await flight.stop()
            run.download = None

    async def _parse(
        self, run: ImportRun, flight: DownloadInFlight | None, *, stream_zip: bool = True
    ) -> None:
        """One pass over the export (following the download in flight, if any), committed."""
        started = time.monotonic()
        job = run.ctx.job
        progress = run.progress(PARSE)
        if flight is None or not flight.downloading:
            await progress.begin()
        settings = run.settings
        limits = ExportLimits(
            max_export_bytes=settings.max_export_bytes,
            max_conversation_bytes=settings.max_conversation_bytes,
            max_zip_entries=settings.max_zip_entries,
        )

        async with run.ctx.transaction() as tx:
            async with ChunkWriter(tx.conn, job_id=job.id, user_id=job.user_id) as writer:
                await writer.start()
                parse = ParsePass(
                    run.settings,
                    run.export_path,
                    limits=limits,
                    job_started=run.job_started,
                    growing=flight.growing if flight is not None else None,
                    stream_zip=stream_zip,
                )
                copy_seconds = min(MAX_OPEN_SECONDS, settings.statement_timeout_seconds / 4)
                summary = await self._write_rows(parse, writer, progress, copy_seconds, flight)
                await writer.flush()
            # The reader is done with the export (and its helper has exited): free the disk now.
            await remove_file(run.export_path)
            counts = summary.counts
            if counts.conversations == 0:
                raise EmptyExport(empty_export_detail(counts))
            counts.chunks = writer.rows_written
            replaced = await writer.replace_previous_chunks()
            # What tx.put_artifact does, with the JSON already encoded by the parse thread.
            await tx.conn.execute(
                query("put_job_artifact"),
                {"job_id": job.id, "name": PARSE_OUTPUT_ARTIFACT, "content": summary.artifact_json},
            )
            result: dict[str, Any] = {
                **counts.to_result(),
                "uncompressed_bytes": summary.uncompressed_bytes,
                "chunk_tier": parse.tier.value,
                "previous_chunks_replaced": replaced,
                "persona_signals": summary.persona_counts,
            }
            run.result.update(result)
            if flight is not None:
                # The reader met the end of the export: the download has finished.
                download = await flight.result()
                assert flight.seconds is not None
                run.carry(
                    {
                        **download_result_patch(download),
                        **run.record_stage_seconds(DOWNLOAD.name, flight.seconds),
                    }
                )
            seconds = run.record_stage_seconds(PARSE.name, time.monotonic() - started)
            carried = run.take_carried_result()  # the download's (docs/pipeline.md)
            await tx.advance(
                stage=PARSE.name,
                percent=PARSE.end,
                label=PARSE.label,
                checkpoint={PARSE.name: {"done": True, "chunks": counts.chunks}},
                result={**result, **carried, **seconds},
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
        )

    async def _write_rows(
        self,
        parse: ParsePass,
        writer: ChunkWriter,
        progress: StageProgress,
        copy_seconds: float,
        flight: DownloadInFlight | None,
    ) -> ParseSummary:
        """Run the pass in its thread and store the rows it produces, in order; its summary."""
        channel: ParseChannel[ChunkRowChange, ParseSummary] = ParseChannel(
            asyncio.get_running_loop()
        )
        start_parse_thread(channel, parse.run, name="soulworker-parse")
        finished = False
        try:
            last_report = time.monotonic()
            while (outputs := await channel.take(PROGRESS_EVERY_SECONDS)) is not None:
                await _write_outputs(writer, outputs)
                # Written: let the rows go now, not once the next ones have been parsed (one
                # conversation's rows can be tens of MB).
                outputs.clear()
                await writer.close_if_open_for(copy_seconds)
                clock = time.monotonic()
                # While the download runs, it reports (its own stage, by bytes).
                if flight is not None:
                    flight.parsed = parse.progress
                due = clock - last_report >= PROGRESS_EVERY_SECONDS
                if due and (flight is None or not flight.downloading):
                    await progress.report(parse.progress)
                    last_report = clock
            finished = True
            return channel.outcome()
        finally:
            if not finished:
                channel.stop()
                if not await asyncio.shield(channel.wait_finished(STOP_WAIT_SECONDS)):
                    log.warning("the parse thread did not stop in time; left to finish alone")


async def _write_outputs(writer: ChunkWriter, outputs: list[ChunkRowChange]) -> None:
    """Send one batch of the parse's output to the database, in order."""
    for output in outputs:
        if isinstance(output, DeleteChunks):
            await writer.delete(output.indexes)
        else:
            indexes = await writer.add(output.chunks)
            if indexes != output.indexes:
                raise RuntimeError("chunk rows were numbered out of order")


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
