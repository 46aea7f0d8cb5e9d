"""The cost of an import per stage and in total, from the usage ledger.

Written to the job's ``result.cost`` and to ``user_profiles.import_cost_json``: calls, input and
output tokens and USD for the quick pass, the full pass and the finish, and the total; the embed
stage's calls, tokens and USD beside them as ``embeddings`` (``total`` stays the model's, so its
shape and meaning are unchanged; docs/embeddings.md, "Cost").
"""

from __future__ import annotations

from typing import Any

from soulworker.llm.usage import UsageLedger, UsageTotals

# Which stage each call purpose belongs to.
PURPOSE_STAGES = {
    "quick_pass": "quick_pass",
    "fact_extraction": "full_pass",
    "fact_extraction_batch": "full_pass",  # the same requests through Message Batches
    "fact_reduction": "finish",
    "soulprint_v2": "finish",
}


def _brief(totals: UsageTotals) -> dict[str, Any]:
    data = totals.to_dict()
    return {
        "calls": data["calls"],
        "input_tokens": data["input_tokens"]
        + data["cache_creation_input_tokens"]
        + data["cache_read_input_tokens"],
        "output_tokens": data["output_tokens"],
        "usd": data["cost_usd"],
    }


def cost_summary(
    ledger: UsageLedger, embedding_usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    by_stage: dict[str, UsageTotals] = {}
    for purpose, totals in ledger.by_purpose.items():
        stage = PURPOSE_STAGES.get(purpose, purpose)
        by_stage.setdefault(stage, UsageTotals()).add(totals)
    total = ledger.total
    summary: dict[str, Any] = {
        "by_stage": {stage: _brief(by_stage[stage]) for stage in sorted(by_stage)},
        "total": _brief(total),
    }
    if total.unpriced_calls:
        summary["unpriced_calls"] = total.unpriced_calls
    if embedding_usage is not None:
        summary["embeddings"] = embedding_brief(embedding_usage)
    return summary


def embedding_brief(usage: dict[str, Any]) -> dict[str, Any]:
    """The embed stage's part, from its usage record (``EmbedUsage.to_json``): ``usd`` is
    ``None`` for a model without a price."""
    return {
        "model": usage.get("model"),
        "calls": usage.get("calls", 0),
        "texts": usage.get("texts", 0),
        "input_tokens": usage.get("input_tokens", 0),
        "usd": usage.get("cost_usd"),
    }
