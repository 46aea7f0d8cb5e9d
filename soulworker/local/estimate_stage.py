"""A stage for runs without model calls: what the model stages would have cost, in the job result.

``soulworker import`` without an API key (or with ``--dry-run``) runs the pipeline with the model
stages off and this stage after the parse. It has to run *inside* the job: the estimate needs the
parse stage's ``parse_output`` artifact (sample and persona sizes, chunk layout), and artifacts
are personal data that the queue deletes the moment the job succeeds. So the estimate is made
here, from the artifact and the stored chunk rows, exactly as the real stages would plan their
calls (``estimate_model_cost`` plans the full pass with the real planner; the v2 sample is built
by the finish stage's own code), and only numbers leave: ``result.cost_estimate`` holds counts,
tokens, USD and model ids, no conversation text.

The stage is appended to the daemon's stage list by the local import only; the daemon itself
never runs it.
"""

from __future__ import annotations

import time

from soulworker.pipeline.chunk_stats import load_chunk_stats
from soulworker.pipeline.handler import price_table
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.stages import PARSE, StageSpec
from soulworker.pipeline.v2_sample import v2_sample
from soulworker.soulprint.cost_estimate import estimate_model_cost

RESULT_KEY = "cost_estimate"
CHECKPOINT_KEY = "cost_estimate"
# Not a stage of the job table's vocabulary: the job row keeps saying "parse" (stage=None below)
# and only the profile's label changes, at the parse stage's final percent.
ESTIMATE = StageSpec("cost_estimate", "Estimating model cost", PARSE.end, PARSE.end)


class CostEstimateStage:
    spec = ESTIMATE
    keeps: tuple[str, ...] = ()

    def is_done(self, run: ImportRun) -> bool:
        return run.stage_done(CHECKPOINT_KEY)

    async def run(self, run: ImportRun) -> None:
        started = time.monotonic()
        settings = run.settings
        parse_output = await run.parse_output()
        stats = await load_chunk_stats(run, parse_output.chunk_layout)
        # The finish stage's own sample builder, so the v2 call is sized as it would really be.
        v2_sample_text = await v2_sample(run, parse_output)
        estimate = estimate_model_cost(
            sample_chars=len(parse_output.sample_text),
            persona_chars=len(parse_output.persona_text),
            v2_sample_chars=len(v2_sample_text),
            chunk_stats=stats,
            settings=settings,
            prices=price_table(settings.model_prices),
        )
        run.result[RESULT_KEY] = estimate
        async with run.ctx.transaction() as tx:
            await tx.advance(
                stage=None,
                percent=ESTIMATE.end,
                label=ESTIMATE.label,
                checkpoint={CHECKPOINT_KEY: {"done": True}},
                result={
                    RESULT_KEY: estimate,
                    **run.record_stage_seconds(ESTIMATE.name, time.monotonic() - started),
                },
                completed=run.completes_job(ESTIMATE),
            )
