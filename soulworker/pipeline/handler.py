"""The import pipeline as a job handler: a list of resumable stages the queue runs in order.

Each stage marks itself done in the checkpoint in the same transaction as its results, so a
retried or rescued job skips what is finished (and never pays for a model call twice). The
process-wide pieces — the temp workspace, the HTTP client, the model client — are made once per
worker process here and shared by all its jobs.
"""

from __future__ import annotations

from typing import Any

import httpx2

from soulworker.embeddings.factory import embedding_enabled, shared_limiter
from soulworker.export.reader import require_fast_json_backend
from soulworker.jobs.context import JobContext
from soulworker.llm.client import ModelClient, ModelClientConfig
from soulworker.llm.pricing import PriceTable
from soulworker.llm.retry import RetryPolicy
from soulworker.llm.usage import UsageLedger
from soulworker.logs import get_logger
from soulworker.pipeline.download_stage import DownloadStage
from soulworker.pipeline.embed_stage import EmbedStage
from soulworker.pipeline.export_source import ExportSourceFor, StorageExportSource
from soulworker.pipeline.finish_stage import FinishStage
from soulworker.pipeline.full_pass_batch import cancel_job_batch
from soulworker.pipeline.full_pass_stage import FullPassStage
from soulworker.pipeline.handoffs import UnreadableHandoff
from soulworker.pipeline.import_run import ImportRun, Stage
from soulworker.pipeline.parse_stage import ParseStage
from soulworker.pipeline.quick_pass_stage import QuickPassStage
from soulworker.pipeline.stages import PARSE
from soulworker.pipeline.stall_monitor import StallMonitor
from soulworker.settings import Settings, SettingsError
from soulworker.storage.download import DEFAULT_TIMEOUT, StorageConfig, StorageConfigError
from soulworker.tempfiles import WorkspaceRoot, remove_file

log = get_logger(__name__)

# A model call may take this many times SOULWORKER_MODEL_TIMEOUT_SECONDS in all, retries included.
MODEL_CALL_BUDGET_FACTOR = 3


class ImportPipeline:
    """Runs ``stages`` for each job; ``export_source_for`` picks where each job's export comes
    from (docs/pipeline.md, "Export sources"): Supabase Storage unless told otherwise, and then
    SUPABASE_URL and SUPABASE_SERVICE_KEY are checked here, at start."""

    def __init__(
        self,
        settings: Settings,
        stages: list[Stage],
        *,
        export_source_for: ExportSourceFor | None = None,
    ) -> None:
        self.settings = settings
        self.stages = stages
        # Refuse to start rather than parse every export ten times slower.
        require_fast_json_backend()
        storage = storage_config(settings) if export_source_for is None else None
        self.model = model_client(settings)
        # SOULWORKER_EMBED_CONCURRENCY bounds the process: every job's embedder shares it.
        self.embed_limiter = shared_limiter(settings) if embedding_enabled(settings) else None
        self.workspace = WorkspaceRoot.open()
        cleanup = self.workspace.cleanup
        if cleanup.workspaces_removed:
            log.info(
                "removed temp files left by dead workers",
                workspaces=cleanup.workspaces_removed,
                files=cleanup.files_removed,
                bytes=cleanup.bytes_removed,
            )
        self.http = httpx2.AsyncClient(timeout=DEFAULT_TIMEOUT, follow_redirects=False)
        if storage is not None:
            storage_source = StorageExportSource(storage, self.http)
            self.export_source_for: ExportSourceFor = lambda job: storage_source
        else:
            assert export_source_for is not None
            self.export_source_for = export_source_for

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        if not self.settings.loop_stall_monitor:
            return await self._run_stages(ctx)
        monitor = StallMonitor()
        async with monitor.watching():
            try:
                result = await self._run_stages(ctx)
            finally:
                stall = round(monitor.max_stall_seconds, 4)
                log.info("event loop stall", max_stall_seconds=stall, wakeups=monitor.wakeups)
        result["loop_max_stall_seconds"] = stall
        return result

    async def _run_stages(self, ctx: JobContext) -> dict[str, Any]:
        with self.workspace.job_file(ctx.job.id, ".export") as export_path:
            ledger = previous_usage(ctx.job.result)
            run = ImportRun(
                ctx=ctx,
                settings=self.settings,
                export_path=export_path,
                export_source=self.export_source_for(ctx.job),
                ledger=ledger,
                model=self.model.for_job(
                    ledger, max_concurrent_calls=self.settings.model_concurrency_per_job
                )
                if self.model
                else None,
                result=dict(ctx.job.result),
                last_stage=self.stages[-1].spec.name,
                embed_limiter=self.embed_limiter,
            )
            try:
                forgotten = run.forget_stages_without_their_data(
                    self.stages, await ctx.artifact_names()
                )
                if forgotten:
                    log.warning(
                        "the working data of an earlier attempt is gone (pruned); redoing stages",
                        stages=forgotten,
                    )
                try:
                    await self._run_each(run)
                except UnreadableHandoff as unreadable:
                    # Read like pruned data: the stage that keeps it, and every one after it,
                    # are done again (docs/pipeline.md, "What each stage hands on"). Once.
                    names = await ctx.artifact_names() - {unreadable.artifact}
                    forgotten = run.forget_stages_without_their_data(self.stages, names)
                    if not forgotten:
                        raise
                    log.warning(
                        "the working data of an earlier attempt cannot be read; redoing stages",
                        artifact=unreadable.artifact,
                        stages=forgotten,
                    )
                    await self._run_each(run)
            except BaseException:
                # Also on a cancel: the task finishes this write before it ends.
                await keep_usage_of_unfinished_attempt(run)
                raise
            finally:
                if run.download is not None:  # a download the parse never got to follow
                    await run.download.stop()
                # Off the loop (a multi-GB unlink takes a while); job_file removes it if this
                # is cut short.
                await remove_file(export_path)
        return run.result

    async def _run_each(self, run: ImportRun) -> None:
        """Run every stage not done yet, in order."""
        run.export_needed = export_needed(self.stages, run)
        for stage in self.stages:
            if stage.is_done(run):
                log.info("stage already done; skipped", stage=stage.spec.name)
                continue
            log.info("stage started", stage=stage.spec.name)
            await stage.run(run)
            log.info("stage finished", stage=stage.spec.name)

    async def on_cancel(self, ctx: JobContext) -> None:
        """A cancelled job's outside work: the Message Batch of its full pass, if it still
        runs, is cancelled (docs/full-pass-batches.md, "Cancel"). Requests it already answered
        are billed all the same."""
        if self.model is None:
            return
        batch_id = await cancel_job_batch(self.model, ctx.checkpoint)
        if batch_id is not None:
            log.info("the cancelled job's message batch is cancelled", batch_id=batch_id)

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.model is not None:
            await self.model.aclose()
        self.workspace.close()


def export_needed(stages: list[Stage], run: ImportRun) -> bool:
    """Whether a stage still to run reads the export file: the parse alone does, by its own
    checkpoint entry. The download keeps no entry (its file lives only in the attempt), so it
    runs only then (docs/pipeline.md, "What each stage hands on")."""
    return any(stage.spec == PARSE and not stage.is_done(run) for stage in stages)


async def keep_usage_of_unfinished_attempt(run: ImportRun) -> None:
    """Save the usage of an attempt that is ending early: calls billed since its last
    checkpoint count too, whatever happens after them. Never raises: the attempt's own outcome
    is what the runner must record."""
    total = run.ledger.total
    if not (total.calls or total.failed_requests):
        return
    try:
        await run.save_usage()
    except Exception as exc:  # a lost lease, a database outage: the outcome matters more
        log.warning("could not save the usage of an unfinished attempt", error=type(exc).__name__)


def storage_config(settings: Settings) -> StorageConfig:
    """The Storage client's configuration, checked at start so a bad one stops the daemon."""
    if not settings.supabase_url or not settings.supabase_service_key:
        raise SettingsError(
            "SUPABASE_URL and SUPABASE_SERVICE_KEY must be set for the worker to download exports"
        )
    try:
        return StorageConfig(settings.supabase_url, settings.supabase_service_key)
    except StorageConfigError as exc:
        raise SettingsError(str(exc)) from None


def model_client(settings: Settings) -> ModelClient | None:
    """The process's model client; None when the model stages are off.

    Without a key the daemon refuses to start: running the pipeline up to the first model call
    and failing every job there would waste every upload.
    """
    if not settings.model_stages:
        return None
    if not settings.anthropic_api_key:
        raise SettingsError(
            "ANTHROPIC_API_KEY must be set for the model stages "
            "(or set SOULWORKER_MODEL_STAGES=off to run everything but the model calls)"
        )
    prices = price_table(settings.model_prices)
    config = ModelClientConfig(
        api_key=settings.anthropic_api_key,
        base_url=settings.anthropic_base_url,
        request_timeout_seconds=settings.model_timeout_seconds,
        max_concurrent_calls=settings.model_concurrency,
        retry=RetryPolicy(
            retry_after_cap_seconds=settings.model_retry_after_cap_seconds,
            # Room for a timed-out request to be asked again within the same call.
            max_total_seconds=settings.model_timeout_seconds * MODEL_CALL_BUDGET_FACTOR,
        ),
    )
    return ModelClient(config, prices=prices)


def price_table(model_prices: str | None) -> PriceTable:
    """The prices costs are computed with: SOULWORKER_MODEL_PRICES over the list prices."""
    if not model_prices:
        return PriceTable.defaults()
    try:
        return PriceTable.from_json(model_prices)
    except ValueError as exc:
        raise SettingsError(f"SOULWORKER_MODEL_PRICES: {exc}") from None


def previous_usage(result: dict[str, Any]) -> UsageLedger:
    """The usage of earlier attempts, so the job's cost covers every call it paid for."""
    try:
        return UsageLedger.from_dict(result["model_usage"])
    except (KeyError, ValueError):
        return UsageLedger()


def pipeline_stages(settings: Settings) -> list[Stage]:
    """The stages in order (docs/pipeline.md). The embed stage runs with the model stages off
    too: it needs only the chunks, and is skipped (saying why) when embedding is off."""
    if not settings.model_stages:
        return [DownloadStage(), ParseStage(), EmbedStage()]
    return [
        DownloadStage(),
        ParseStage(),
        QuickPassStage(),
        EmbedStage(),
        FullPassStage(),
        FinishStage(),
    ]


def create_handler(settings: Settings) -> ImportPipeline:
    """The default handler of ``soulworker run``."""
    return ImportPipeline(settings, pipeline_stages(settings))
