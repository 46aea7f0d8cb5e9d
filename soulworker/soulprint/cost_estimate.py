"""What the model stages would cost for a parsed export, without calling the model.

Used by ``soulworker import`` without an API key (or with ``--dry-run``) and by the benchmark.
The estimate plans the full pass exactly as the real stage does (same selection, same batches)
and counts input tokens as the prompts' characters / 4, the same estimate the client uses
for budgeting. Output tokens cannot be known before the answers exist; the ratios below are
assumptions, stated in the result, from the answer sizes the schemas allow and that the fake
Messages API in the tests produces.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from soulworker.llm.models import CHARS_PER_TOKEN, estimate_tokens, tokens_for_chars
from soulworker.llm.pricing import BATCH_PRICE_FACTOR, PriceTable
from soulworker.llm.usage import CallUsage
from soulworker.settings import Settings
from soulworker.soulprint import prompts
from soulworker.soulprint.full_pass_plan import EXCERPT_OVERHEAD_TOKENS, ChunkStat, plan_full_pass

# A soulprint answer (five sections, ~40 fields) is ~2,500 tokens.
SOULPRINT_OUTPUT_TOKENS = 2_500
# Facts are a fraction of what they are extracted from: ~8 % of a batch's input, at most the
# answer limit.
FACT_OUTPUT_RATIO = 0.08
FACT_OUTPUT_MAX_TOKENS = 6_000
# MEMORY given to the v2 call: five categories of at most ~1,500 tokens each.
MEMORY_TOKENS = 7_500


def estimate_model_cost(
    *,
    sample_chars: int,
    persona_chars: int,
    v2_sample_chars: int,
    chunk_stats: Sequence[ChunkStat],
    settings: Settings,
    prices: PriceTable | None = None,
) -> dict[str, Any]:
    """Calls, tokens and USD per stage and in total, at the configured models' prices."""
    table = prices or PriceTable.defaults()
    soulprint_system = estimate_tokens(prompts.soulprint_system(with_memory=False))
    quick_input = soulprint_system + tokens_for_chars(sample_chars + persona_chars) + 200
    plan = plan_full_pass(
        chunk_stats,
        batch_tokens=settings.full_pass_batch_tokens,
        budget_tokens=settings.full_pass_token_budget,
    )
    by_index = {stat.chunk_index: stat for stat in chunk_stats}
    fact_system = estimate_tokens(prompts.FACT_EXTRACTION_SYSTEM)
    batch_inputs = [
        fact_system + 50 + sum(by_index[i].new_tokens + EXCERPT_OVERHEAD_TOKENS for i in batch)
        for batch in plan.batches
    ]
    batch_outputs = [min(FACT_OUTPUT_MAX_TOKENS, int(t * FACT_OUTPUT_RATIO)) for t in batch_inputs]
    v2_input = (
        estimate_tokens(prompts.soulprint_system(with_memory=True))
        + tokens_for_chars(v2_sample_chars + persona_chars)
        + MEMORY_TOKENS
    )
    stages = {
        "quick_pass": _stage(
            table, settings.quick_pass_model, [quick_input], [SOULPRINT_OUTPUT_TOKENS]
        ),
        "full_pass": _stage(table, settings.full_pass_model, batch_inputs, batch_outputs),
        "finish": _stage(table, settings.quick_pass_model, [v2_input], [SOULPRINT_OUTPUT_TOKENS]),
    }
    total: dict[str, Any] = {
        key: sum(stage[key] for stage in stages.values())
        for key in ("calls", "input_tokens", "output_tokens")
    }
    usd = sum((Decimal(str(stage["usd"])) for stage in stages.values()), Decimal(0))
    total["usd"] = float(round(usd, 6))
    # The same requests of the full pass through Message Batches cost half
    # (SOULWORKER_FULL_PASS_MODE, docs/full-pass-batches.md): both figures, whatever the mode.
    full_pass_usd = Decimal(str(stages["full_pass"]["usd"]))
    batch_usd = usd - full_pass_usd + full_pass_usd * BATCH_PRICE_FACTOR
    total["usd_by_full_pass_mode"] = {
        "direct": float(round(usd, 6)),
        "batch": float(round(batch_usd, 6)),
    }
    # Without this a total that leaves out an unpriced stage would read as the whole cost.
    unpriced = sorted(
        {stage["unpriced_model"] for stage in stages.values() if "unpriced_model" in stage}
    )
    if unpriced:
        total["unpriced_models"] = unpriced
    return {
        "estimate": True,
        "by_stage": stages,
        "total": total,
        "full_pass": plan.summary(),
        "assumptions": {
            "chars_per_token": CHARS_PER_TOKEN,
            "fact_output_ratio": FACT_OUTPUT_RATIO,
            "soulprint_output_tokens": SOULPRINT_OUTPUT_TOKENS,
            "models": {
                "quick_pass": settings.quick_pass_model,
                "full_pass": settings.full_pass_model,
            },
        },
    }


def _stage(
    table: PriceTable, model: str, inputs: Sequence[int], outputs: Sequence[int]
) -> dict[str, Any]:
    usd = Decimal(0)
    priced = True
    for input_tokens, output_tokens in zip(inputs, outputs, strict=True):
        cost = table.cost_usd(
            CallUsage(model, input_tokens=input_tokens, output_tokens=output_tokens)
        )
        if cost is None:
            priced = False
        else:
            usd += cost
    stage: dict[str, Any] = {
        "calls": len(inputs),
        "input_tokens": sum(inputs),
        "output_tokens": sum(outputs),
        "usd": float(round(usd, 6)),
    }
    if not priced:
        stage["unpriced_model"] = model
    return stage
