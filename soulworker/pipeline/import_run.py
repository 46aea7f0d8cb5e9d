"""One attempt of one import: the things every stage needs, in one place.

The pipeline builds an :class:`ImportRun` per attempt and hands it to each stage in turn. Stages
talk to the database and the queue only through ``run.ctx`` (fenced, throttled) and keep what the
next stage needs either in the checkpoint (small, no personal data) or in the job's artifacts
(personal working data such as the quick-pass sample).
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from soulworker.embeddings.pacing import AdaptiveLimiter
from soulworker.jobs.context import JobContext
from soulworker.jobs.store import Connection, JobStore
from soulworker.llm.client import ModelClient
from soulworker.llm.usage import UsageLedger
from soulworker.pipeline.download_in_flight import DownloadInFlight
from soulworker.pipeline.export_source import ExportSource
from soulworker.pipeline.handoffs import (
    PARSE_OUTPUT_ARTIFACT,
    QUICK_SECTIONS_ARTIFACT,
    ParseOutput,
    QuickSections,
)
from soulworker.pipeline.stages import StageProgress, StageSpec
from soulworker.settings import Settings
from soulworker.soulprint.cost import cost_summary
from soulworker.soulprint.degraded import replace_stage
from soulworker.sql_files import query


@dataclass
class ImportRun:
    ctx: JobContext
    settings: Settings
    export_path: Path
    export_source: ExportSource  # where this job's export comes from (download stage)
    model: ModelClient | None = None
    ledger: UsageLedger = field(default_factory=UsageLedger)
    result: dict[str, Any] = field(default_factory=dict)
    # The download's own state: its file lives only as long as the attempt, so it keeps no
    # checkpoint entry (docs/pipeline.md, "What each stage hands on").
    downloaded: bool = False
    # Whether a stage still to run in this attempt reads the export file (the parse); set by the
    # pipeline from the reading stage's own doneness. No export is fetched that nothing reads.
    export_needed: bool = True
    # The download the parse follows while it still runs (SOULWORKER_PARSE_DURING_DOWNLOAD):
    # started by the download stage, finished under the parse stage (``download_in_flight``).
    download: DownloadInFlight | None = None
    # Result keys of a stage without a checkpoint entry (the download), committed with the
    # next stage's checkpoint (see ``carry``).
    _carried: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    last_stage: str = ""  # the stage whose checkpoint marks the job's work complete
    # The process's embedding limiter, shared by the jobs' embedders (docs/embeddings.md).
    embed_limiter: AdaptiveLimiter | None = None

    def completes_job(self, spec: StageSpec) -> bool:
        return spec.name == self.last_stage

    @property
    def job_started(self) -> datetime:
        """The fallback time of conversations without any (docs/contract.md): the job's creation."""
        return self.ctx.job.created_at

    def store_connection(self) -> AbstractAsyncContextManager[Connection]:
        """A pooled connection for reads that need no fence (chunk texts, plans)."""
        store = self.ctx.store
        if not isinstance(store, JobStore):
            # The queue's logic runs on any store (docs/queue.md, "Two layers of tests"); the
            # import runs SQL of its own, so it runs on Postgres only.
            raise TypeError("the import pipeline runs on the Postgres job store")
        return store.pool.connection()

    def usage_result(self) -> dict[str, Any]:
        """The model usage so far, as written to the job result with each checkpoint.

        Also kept in ``self.result``: the pipeline's final result is merged into the job row
        last, so it must never carry an older usage than the checkpoints wrote.
        """
        embedding_usage = self.result.get("embedding_usage")
        cost = cost_summary(
            self.ledger, embedding_usage if isinstance(embedding_usage, dict) else None
        )
        export_mb = (self.result.get("uncompressed_bytes") or 0) / 1e6
        if export_mb:
            cost["input_tokens_per_export_mb"] = round(cost["total"]["input_tokens"] / export_mb)
        usage = {"model_usage": self.ledger.to_dict(), "cost": cost}
        self.result.update(usage)
        return usage

    def degraded_result(self, stage: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """Set ``stage``'s entries of ``result.degraded``; return the patch to write with its
        checkpoint (the whole list: a job result is merged key by key)."""
        degraded = replace_stage(self.result.get("degraded"), stage, entries)
        self.result["degraded"] = degraded
        return {"degraded": degraded}

    async def save_usage(self) -> None:
        """Write the usage so far to the job result and the profile, outside any checkpoint.

        For an attempt that ends without reaching its next checkpoint (a failure, a cancel, a
        shutdown past its budget): its calls were billed, so the next attempt, the operator and
        the profile's cost must see them. Fenced like every write.
        """
        usage = self.usage_result()
        async with self.ctx.transaction() as tx:
            await tx.advance(stage=None, percent=0, label=None, result=usage)
            await self.write_cost(tx.conn, usage["cost"])

    async def write_cost(self, conn: Connection, cost: dict[str, Any]) -> None:
        """Mirror the cost so far to ``user_profiles.import_cost_json`` (in the caller's tx)."""
        job = self.ctx.job
        await conn.execute(
            query("profile_cost"),
            {"import_cost_json": json.dumps(cost), "user_id": job.user_id, "job_id": job.id},
        )

    def carry(self, patch: dict[str, Any]) -> None:
        """Keep a result patch of a stage that writes no checkpoint; the next checkpoint
        commits it (``take_carried_result``)."""
        self.result.update(patch)
        self._carried.update(patch)

    def take_carried_result(self) -> dict[str, Any]:
        """The carried result patches, to write with the checkpoint being committed."""
        carried, self._carried = self._carried, {}
        return carried

    async def parse_output(self) -> ParseOutput:
        """What the parse handed on (raises ``UnreadableHandoff`` when it is gone or unreadable:
        the pipeline then redoes the parse, see ``handler.ImportPipeline``)."""
        return ParseOutput.from_json(await self.ctx.artifact(PARSE_OUTPUT_ARTIFACT))

    async def quick_sections(self) -> QuickSections | None:
        """The quick pass's sections; ``None`` when there are none (the model stages did not
        run); ``UnreadableHandoff`` when they are not their shape."""
        saved = await self.ctx.artifact(QUICK_SECTIONS_ARTIFACT)
        return None if saved is None else QuickSections.from_json(saved)

    def progress(self, spec: StageSpec) -> StageProgress:
        return StageProgress(self.ctx, spec)

    def stage_done(self, name: str) -> bool:
        entry = self.ctx.checkpoint.get(name)
        return isinstance(entry, dict) and bool(entry.get("done"))

    def forget_stages_without_their_data(
        self, stages: list[Stage], artifact_names: set[str]
    ) -> list[str]:
        """Undo "done" for every stage from the first one whose working data is gone.

        A stage is done only while what later stages need from it still exists: a failed job's
        artifacts are pruned after the retention period, and a retry must then redo the work
        (from the download, if the parse's output is gone), not go on from nothing. Returns
        the names of the stages forgotten (in this attempt's copy of the checkpoint only; each
        stage marks itself done again when it has redone its work).
        """
        forgotten: list[str] = []
        for stage in stages:
            name = stage.spec.name
            gone = any(kept not in artifact_names for kept in stage.keeps)
            if (forgotten or gone) and self.stage_done(name):
                self.ctx.checkpoint.pop(name)
                forgotten.append(name)
        return forgotten

    def record_stage_seconds(self, name: str, seconds: float) -> dict[str, Any]:
        """Add a stage's duration to the result; return the patch to write with its checkpoint."""
        durations = dict(self.result.get("stage_seconds") or {})
        durations[name] = round(durations.get(name, 0.0) + seconds, 3)
        self.result["stage_seconds"] = durations
        return {"stage_seconds": durations}


class Stage(Protocol):
    """One resumable step of the import.

    ``keeps`` names the artifacts later stages read from this one: while the checkpoint says it
    is done, they must exist (see ``ImportRun.forget_stages_without_their_data``).
    """

    spec: StageSpec
    keeps: tuple[str, ...]

    def is_done(self, run: ImportRun) -> bool:
        """Whether an earlier attempt already finished this stage (from the checkpoint)."""
        ...

    async def run(self, run: ImportRun) -> None:
        """Do the stage and, in the same transaction as its results, mark it done."""
        ...
