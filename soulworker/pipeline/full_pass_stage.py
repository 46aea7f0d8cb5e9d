"""Stage 5, full pass (60–95 % by batches): facts from every chunk, resumable per batch.

The plan (see ``soulprint.full_pass_plan``) is saved before the first call. Each batch's facts are
saved as soon as they arrive, in their own fenced transaction, so a resumed job never asks for a
batch it already has. Batches run with bounded concurrency (the job's slice of the model client's
limit).

Per batch: a refusal skips the batch and counts it; an answer cut off is asked again with a
larger limit, then the batch is split in halves (bounded); past that it is a transient failure
of the attempt, and the retry resumes from the saved batches. The soft repairs of each answer are
saved with its facts and summed into ``result.degraded`` at the end (docs/model-answers.md).

When a batch fails, no new batch is started, and the ones in flight finish and are saved before
the failure ends the attempt: their calls are paid for, so their answers are kept for the retry.
Only a failure no retry can mend (a spend limit, a refused key) stops them at once. On a soft
stop (shutdown) it is the same: no new batch, the ones in flight are saved, then the job is
released.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from soulworker.conversations.chunk_layout import ChunkLayout
from soulworker.errors import JobError, TransientJobError
from soulworker.jobs.errors import JobControl, ReleaseRequested
from soulworker.llm.batches import MessageBatches
from soulworker.llm.client import StructuredRequest, effort_setting
from soulworker.llm.errors import ModelRefused, ModelTruncated
from soulworker.llm.schemas import FACT_EXTRACTION
from soulworker.logs import get_logger
from soulworker.pipeline.chunk_stats import load_chunk_stats
from soulworker.pipeline.full_pass_batch import BATCH_KEY, FullPassBatch, batch_mode
from soulworker.pipeline.handoffs import (
    FACTS_PREFIX,
    FactBatch,
    UnreadableHandoff,
    facts_artifact,
)
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.stages import FULL_PASS
from soulworker.soulprint import prompts
from soulworker.soulprint.degraded import count_repairs, repair_entries, skip_entry
from soulworker.soulprint.full_pass_plan import FullPassPlan, plan_full_pass
from soulworker.soulprint.memory import empty_facts
from soulworker.sql_files import query

log = get_logger(__name__)

PLAN_ARTIFACT = "full_pass_plan"
FACT_EXTRACTION_PURPOSE = "fact_extraction"
EXTRACTION_MAX_TOKENS = 6_000
EXTRACTION_RETRY_MAX_TOKENS = 12_000
# A batch still cut off at the larger limit is split in halves, at most this many times.
MAX_SPLIT_DEPTH = 3


class FullPassStage:
    spec = FULL_PASS
    keeps: tuple[str, ...] = (PLAN_ARTIFACT,)

    def is_done(self, run: ImportRun) -> bool:
        return run.stage_done(FULL_PASS.name)

    async def run(self, run: ImportRun) -> None:
        started = time.monotonic()
        ctx = run.ctx
        job = ctx.job
        progress = run.progress(FULL_PASS)
        async with ctx.transaction() as tx:
            await tx.conn.execute(
                query("profile_full_pass_started"), {"user_id": job.user_id, "job_id": job.id}
            )
        await progress.begin()

        layout = (await run.parse_output()).chunk_layout
        plan = await self._plan(run, layout)
        done = set(readable_batches(await ctx.artifacts(FACTS_PREFIX)))
        pending = [n for n in range(len(plan.batches)) if facts_artifact(n) not in done]
        counter = _Counter(done=len(plan.batches) - len(pending), total=len(plan.batches))
        log.info(
            "full pass planned",
            batches=len(plan.batches),
            already_done=counter.done,
            chunks=plan.selected_chunks,
            input_tokens=plan.selected_tokens,
            left_out_chunks=plan.left_out.get("chunks", 0),
        )

        extract = self._direct(run, plan, layout)
        # A job that already submitted its batch reads it even if the mode changed since: its
        # requests are paid for (docs/full-pass-batches.md, "Modes").
        if pending and (batch_mode(run.settings) or BATCH_KEY in ctx.checkpoint):
            extract = await self._from_batch(run, plan, layout, pending, extract)

        queue: asyncio.Queue[int] = asyncio.Queue()
        for number in pending:
            queue.put_nowait(number)
        workers = max(1, min(run.settings.model_concurrency_per_job, len(pending)))
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(self._work(run, extract, queue, counter))
        except BaseExceptionGroup as failures:
            raise most_telling(failures) from None
        if counter.failure is not None:
            raise counter.failure
        if not queue.empty():
            raise ReleaseRequested("released between full-pass batches for shutdown")

        saved = [
            FactBatch.from_json(name, content)
            for name, content in await ctx.artifacts(FACTS_PREFIX)
        ]
        refused = sum(batch.refused_parts for batch in saved)
        summary = {
            **plan.summary(),
            "refused_batches": sum(1 for batch in saved if batch.refused_parts),
            "split_batches": sum(1 for batch in saved if batch.splits),
        }
        repairs: Counter[str] = Counter()
        for batch in saved:
            repairs.update(batch.repairs)
        degraded = repair_entries(FULL_PASS.name, FACT_EXTRACTION_PURPOSE, repairs)
        if refused:
            degraded.append(
                skip_entry(FULL_PASS.name, FACT_EXTRACTION_PURPOSE, "model_refused", refused)
            )
        outcome = {
            "full_pass": summary,
            **run.usage_result(),
            **run.record_stage_seconds(FULL_PASS.name, time.monotonic() - started),
            **run.degraded_result(FULL_PASS.name, degraded),
        }
        run.result.update(outcome)  # kept in step with the job row (see FinishStage)
        await ctx.save_checkpoint(
            {FULL_PASS.name: {"done": True, "batches": len(plan.batches)}},
            stage=FULL_PASS.name,
            percent=FULL_PASS.end,
            label=FULL_PASS.label,
            result=outcome,
            completed=run.completes_job(FULL_PASS),
        )

    async def _plan(self, run: ImportRun, layout: ChunkLayout) -> FullPassPlan:
        saved = await run.ctx.artifact(PLAN_ARTIFACT)
        if saved:
            return FullPassPlan.from_json(saved)
        stats = await load_chunk_stats(run, layout)
        plan = plan_full_pass(
            stats,
            batch_tokens=run.settings.full_pass_batch_tokens,
            budget_tokens=run.settings.full_pass_token_budget,
        )
        async with run.ctx.transaction() as tx:
            await tx.put_artifact(PLAN_ARTIFACT, plan.to_json())
        return plan

    def _direct(self, run: ImportRun, plan: FullPassPlan, layout: ChunkLayout) -> Extract:
        async def extract(number: int) -> Extracted:
            return Extracted(await self._extract(run, layout, plan.batches[number], 0))

        return extract

    async def _from_batch(
        self,
        run: ImportRun,
        plan: FullPassPlan,
        layout: ChunkLayout,
        pending: list[int],
        direct: Extract,
    ) -> Extract:
        """The extraction of each pending plan batch from the job's Message Batch (submitted,
        found or waited for first: this parks the job until its batch has ended), or direct
        calls where the batch gave no usable answer (docs/full-pass-batches.md)."""
        assert run.model is not None
        batches = MessageBatches(run.model)

        async def request_for(number: int) -> StructuredRequest:
            content = prompts.fact_extraction_content(
                await self._excerpts(run, layout, plan.batches[number])
            )
            return self._request(run, content, EXTRACTION_MAX_TOKENS)

        found = await FullPassBatch(run, batches).results(pending, request_for)
        if found is None:
            return direct
        marker, results = found
        log.info(
            "reading the job's message batch",
            batch_id=marker.batch_id,
            results=len(results),
            pending=len(pending),
        )

        async def extract(number: int) -> Extracted:
            result = results.get(number)
            if result is None or result.kind != "succeeded":
                kind = "missing" if result is None else result.kind
                log.info("batch request not answered; asking directly", outcome=kind)
                return await direct(number)
            usage, cost = batches.billed(result)

            def record() -> None:
                run.ledger.record(BATCH_PURPOSE, usage, cost)

            try:
                answer = batches.judge(result, FACT_EXTRACTION, EXTRACTION_MAX_TOKENS)
            except ModelRefused:
                log.warning("the model declined a fact batch; skipped", number=number)
                return Extracted(FactBatch(empty_facts(), refused_parts=1), record)
            except ModelTruncated:
                # Asked again directly, from the larger limit (the smaller one was just tried).
                chunk_indexes = plan.batches[number]
                retried = await self._extract(run, layout, chunk_indexes, 0, first=1)
                return Extracted(retried, record)
            if answer is None:
                retried = await self._extract(run, layout, plan.batches[number], 0)
                return Extracted(retried, record)
            return Extracted(FactBatch(answer.data, repairs=count_repairs(answer.repairs)), record)

        return extract

    def _request(self, run: ImportRun, content: str, max_tokens: int) -> StructuredRequest:
        """A fact-extraction request: the same for a direct call and a batch request."""
        return StructuredRequest(
            purpose=FACT_EXTRACTION_PURPOSE,
            model=run.settings.full_pass_model,
            system=prompts.FACT_EXTRACTION_SYSTEM,
            content=content,
            schema=FACT_EXTRACTION,
            max_tokens=max_tokens,
            effort=effort_setting(run.settings.fact_extraction_effort),
        )

    async def _work(
        self,
        run: ImportRun,
        extract: Extract,
        queue: asyncio.Queue[int],
        counter: _Counter,
    ) -> None:
        ctx = run.ctx
        progress = run.progress(FULL_PASS)
        while not queue.empty():
            if ctx.release_requested or counter.failure is not None:
                return
            number = queue.get_nowait()
            try:
                extracted = await extract(number)
            except JobError as failure:
                if failure.permanent:
                    raise  # no retry can mend it: the batches in flight are stopped at once
                # The others finish the batches they hold, then this failure ends the attempt.
                counter.failure = counter.failure or failure
                return
            # One batch commits at a time: the usage written is a snapshot of the shared ledger,
            # and a snapshot taken earlier must never commit after a later one.
            async with counter.commit_lock:
                # A batch answer's usage is counted with its facts, in the same commit: read
                # again after a crash, it is not counted twice (it was billed once).
                if extracted.record is not None:
                    extracted.record()
                usage = run.usage_result()
                async with ctx.transaction() as tx:
                    await tx.put_artifact(facts_artifact(number), extracted.facts.to_json())
                    await tx.advance(
                        stage=FULL_PASS.name,
                        percent=int(FULL_PASS.percent((counter.done + 1) / max(counter.total, 1))),
                        label=FULL_PASS.label,
                        result=usage,
                    )
                    await run.write_cost(tx.conn, usage["cost"])
                counter.done += 1
            await progress.report(counter.done / max(counter.total, 1))

    async def _extract(
        self,
        run: ImportRun,
        layout: ChunkLayout,
        chunk_indexes: Sequence[int],
        depth: int,
        *,
        first: int = 0,
    ) -> FactBatch:
        """The facts of one batch, with what it took to get them, by direct calls; ``first``
        skips answer limits already tried (a batch answer cut off)."""
        assert run.model is not None
        excerpts = await self._excerpts(run, layout, chunk_indexes)
        content = prompts.fact_extraction_content(excerpts)
        for max_tokens in (EXTRACTION_MAX_TOKENS, EXTRACTION_RETRY_MAX_TOKENS)[first:]:
            try:
                answer = await run.model.ask(self._request(run, content, max_tokens))
                return FactBatch(answer.data, repairs=count_repairs(answer.repairs))
            except ModelRefused:
                log.warning("the model declined a fact batch; skipped", chunks=len(chunk_indexes))
                return FactBatch(empty_facts(), refused_parts=1)
            except ModelTruncated:
                log.warning("fact batch answer cut off", chunks=len(chunk_indexes), depth=depth)
        if len(chunk_indexes) < 2 or depth >= MAX_SPLIT_DEPTH:
            raise TransientJobError(
                "The model's answers were cut off repeatedly while building deep memory.",
                code="model_truncated",
            )
        half = len(chunk_indexes) // 2
        head = await self._extract(run, layout, chunk_indexes[:half], depth + 1)
        tail = await self._extract(run, layout, chunk_indexes[half:], depth + 1)
        return head.joined(tail)

    async def _excerpts(
        self, run: ImportRun, layout: ChunkLayout, chunk_indexes: Sequence[int]
    ) -> list[str]:
        async with run.store_connection() as conn:
            cur = await conn.execute(
                query("full_pass_chunk_texts"),
                {"job_id": run.ctx.job.id, "chunk_indexes": list(chunk_indexes)},
            )
            rows = await cur.fetchall()
        return [layout.new_text(row["chunk_index"], row["content"]) for row in rows]


def most_telling(failures: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one failure of concurrent batches that decides the attempt's outcome.

    A stop (lease lost, cancel, release) outranks an error with a message for the user, which
    outranks anything else; the others were side effects (batches cancelled by the first).
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [failures]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    for kind in (JobControl, JobError):
        for exc in leaves:
            if isinstance(exc, kind):
                return exc
    return leaves[0]


def readable_batches(saved: list[tuple[str, Any]]) -> list[str]:
    """The names of the saved batches that read as fact batches. One that does not is not done:
    it is asked for again, and its new answer replaces it (docs/pipeline.md)."""
    names = []
    for name, content in saved:
        try:
            FactBatch.from_json(name, content)
        except UnreadableHandoff as unreadable:
            log.warning(
                "a saved fact batch cannot be read; asked for again", problem=str(unreadable)
            )
            continue
        names.append(name)
    return names


BATCH_PURPOSE = "fact_extraction_batch"  # fact extraction through Message Batches (half price)


@dataclass(frozen=True)
class Extracted:
    """One plan batch's facts and, for a batch answer, how to count its usage (at commit)."""

    facts: FactBatch
    record: Callable[[], None] | None = None


Extract = Callable[[int], Awaitable[Extracted]]


class _Counter:
    def __init__(self, *, done: int, total: int) -> None:
        self.done = done
        self.total = total
        self.commit_lock = asyncio.Lock()
        # The first failure of a batch; the attempt ends with it once the others are saved.
        self.failure: JobError | None = None
