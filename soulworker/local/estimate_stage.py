"""A stage for runs without model calls: what the model stages would have cost, in the job result.

``soulworker import`` without an API key (or with ``--dry-run``) runs the pipeline with the model
stages off and this stage after the parse. It has to run *inside* the job: the estimate needs the
parse stage's ``parse_output`` artifact (sample and persona sizes, chunk layout), and artifacts
are personal data that the queue deletes the moment the job succeeds. So the estimate is made
here, from the artifact and the stored chunk rows, exactly as the real stages would plan their
calls (``estimate_model_cost`` plans the full pass with the real planner; the v2 sample is built
by the finish stage's own code), and only numbers leave: ``result.cost_estimate`` holds counts,
tokens, USD and model ids, no conversation text. With embedding on, ``embeddings`` beside the
model stages estimates the embed stage (``embedding_estimate``); like the real cost record, the
model ``total`` leaves it out.

The stage is appended to the daemon's stage list by the local import only; the daemon itself
never runs it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from soulworker.embeddings.factory import embed_model, embedding_enabled
from soulworker.embeddings.openai import BATCH_MAX_TEXTS
from soulworker.embeddings.usage import TOKENS_PER_MTOK, price_per_mtok
from soulworker.llm.models import CHARS_PER_TOKEN
from soulworker.pipeline.chunk_stats import load_chunk_stats
from soulworker.pipeline.handler import price_table
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.stages import PARSE, StageSpec
from soulworker.pipeline.v2_sample import v2_sample
from soulworker.settings import Settings
from soulworker.soulprint.cost_estimate import estimate_model_cost
from soulworker.soulprint.full_pass_plan import ChunkStat

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
        embeddings = embedding_estimate(settings, stats)
        if embeddings is not None:
            estimate["embeddings"] = embeddings
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


def embedding_estimate(settings: Settings, stats: Sequence[ChunkStat]) -> dict[str, Any] | None:
    """What the embed stage would cost (docs/embeddings.md, "Cost"): every chunk once, its tokens
    estimated as for the model (characters / 4; the provider's tokenizer decides the bill), Titan
    one text per call, an OpenAI-compatible endpoint up to 96 per call. ``None`` with embedding
    off."""
    if not embedding_enabled(settings):
        return None
    model = embed_model(settings)
    override = settings.embed_price_per_mtok
    price = price_per_mtok(model, None if override is None else Decimal(str(override)))
    texts = len(stats)
    tokens = sum(stat.token_count for stat in stats)
    per_call = 1 if settings.embed_provider == "bedrock" else BATCH_MAX_TEXTS
    usd = None if price is None else float(round(tokens * price / TOKENS_PER_MTOK, 6))
    return {
        "provider": settings.embed_provider,
        "model": model,
        "calls": math.ceil(texts / per_call),
        "texts": texts,
        "input_tokens": tokens,
        "usd": usd,
        "chars_per_token": CHARS_PER_TOKEN,
    }
