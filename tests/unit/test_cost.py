"""What an import cost, by stage (``cost_summary``), and what it would cost (``cost_estimate``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from soulworker.llm.pricing import PriceTable
from soulworker.llm.usage import CallUsage, UsageLedger
from soulworker.local.estimate_stage import embedding_estimate
from soulworker.settings import Settings
from soulworker.soulprint import prompts
from soulworker.soulprint.cost import cost_summary
from soulworker.soulprint.cost_estimate import estimate_model_cost
from soulworker.soulprint.full_pass_plan import ChunkStat, plan_full_pass

# Published list prices in USD per million tokens (docs/platform.md), written out so the code's
# price table is checked, not repeated.
HAIKU_5_5 = (0.10, 0.50)
HAIKU_4_5 = (1.0, 5.0)
CREATED = datetime(2026, 5, 1, tzinfo=UTC)


def usd(prices: tuple[float, float], input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * prices[0] + output_tokens * prices[1]) / 1e6


def record(ledger: UsageLedger, table: PriceTable, purpose: str, usage: CallUsage) -> None:
    ledger.record(purpose, usage, table.cost_usd(usage))


# --- cost_summary ------------------------------------------------------------------------------


def test_calls_are_grouped_by_the_stage_that_made_them() -> None:
    table = PriceTable.defaults()
    ledger = UsageLedger()
    model = "claude-haiku-5-5"
    record(ledger, table, "quick_pass", CallUsage(model, input_tokens=50_000, output_tokens=2_000))
    for _ in range(3):
        record(ledger, table, "fact_extraction", CallUsage(model, 6_000, 400))
    record(ledger, table, "fact_reduction", CallUsage(model, 20_000, 8_000))
    record(ledger, table, "soulprint_v2", CallUsage(model, 70_000, 2_500))

    summary = cost_summary(ledger)
    by_stage = summary["by_stage"]
    assert list(by_stage) == ["finish", "full_pass", "quick_pass"]
    assert by_stage["quick_pass"] == {
        "calls": 1,
        "input_tokens": 50_000,
        "output_tokens": 2_000,
        "usd": pytest.approx(usd(HAIKU_5_5, 50_000, 2_000)),
    }
    assert by_stage["full_pass"]["calls"] == 3
    assert by_stage["full_pass"]["usd"] == pytest.approx(3 * usd(HAIKU_5_5, 6_000, 400))
    assert by_stage["finish"]["calls"] == 2, "reduction and the v2 sections are the finish"
    assert by_stage["finish"]["input_tokens"] == 90_000
    assert by_stage["finish"]["usd"] == pytest.approx(
        usd(HAIKU_5_5, 20_000, 8_000) + usd(HAIKU_5_5, 70_000, 2_500)
    )
    total = summary["total"]
    for key in ("calls", "input_tokens", "output_tokens"):
        assert total[key] == sum(stage[key] for stage in by_stage.values())
    assert total["usd"] == pytest.approx(sum(stage["usd"] for stage in by_stage.values()))
    assert "unpriced_calls" not in summary


def test_cached_input_counts_as_input_and_is_priced_as_cached() -> None:
    table = PriceTable.defaults()
    ledger = UsageLedger()
    usage = CallUsage(
        "claude-haiku-4-5-20251001",
        input_tokens=1_000,
        output_tokens=100,
        cache_creation_input_tokens=4_000,
        cache_read_input_tokens=10_000,
    )
    record(ledger, table, "quick_pass", usage)
    stage = cost_summary(ledger)["by_stage"]["quick_pass"]
    assert stage["input_tokens"] == 15_000
    expected = (1_000 + 4_000 * 1.25 + 10_000 * 0.1) * HAIKU_4_5[0] / 1e6 + usd(HAIKU_4_5, 0, 100)
    assert stage["usd"] == pytest.approx(expected)


def test_calls_to_a_model_without_a_price_are_counted_not_priced() -> None:
    table = PriceTable.defaults()
    ledger = UsageLedger()
    record(ledger, table, "quick_pass", CallUsage("claude-haiku-5-5", 10_000, 1_000))
    record(ledger, table, "fact_extraction", CallUsage("someones-model", 10_000, 1_000))
    summary = cost_summary(ledger)
    assert summary["unpriced_calls"] == 1
    assert summary["by_stage"]["full_pass"]["usd"] == 0
    assert summary["by_stage"]["full_pass"]["input_tokens"] == 10_000
    assert summary["total"]["usd"] == pytest.approx(usd(HAIKU_5_5, 10_000, 1_000))


def test_failed_requests_cost_nothing_and_an_unknown_purpose_is_its_own_stage() -> None:
    table = PriceTable.defaults()
    ledger = UsageLedger()
    ledger.record_failed_request("fact_extraction", "claude-haiku-5-5")
    record(ledger, table, "embedding", CallUsage("claude-haiku-5-5", 100, 0))
    summary = cost_summary(ledger)
    assert summary["by_stage"]["full_pass"] == {
        "calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "usd": 0,
    }
    assert summary["by_stage"]["embedding"]["calls"] == 1


def test_a_ledger_reloaded_from_the_job_result_gives_the_same_summary() -> None:
    table = PriceTable.defaults()
    ledger = UsageLedger()
    record(ledger, table, "quick_pass", CallUsage("claude-haiku-5-5", 12_345, 678))
    record(ledger, table, "fact_extraction", CallUsage("claude-haiku-5-5", 9_999, 111))
    again = UsageLedger.from_dict(ledger.to_dict())
    assert cost_summary(again) == cost_summary(ledger)


# --- cost_estimate -----------------------------------------------------------------------------


def chunks(count: int, tokens: int = 1_500, overlap_chars: int = 800) -> list[ChunkStat]:
    return [
        ChunkStat(
            chunk_index=i,
            token_count=tokens,
            message_count=6,
            is_recent=i % 3 == 0,
            created_at=CREATED,
            overlap_chars=overlap_chars if i % 2 else 0,
        )
        for i in range(count)
    ]


def real_tokens(*texts: str) -> int:
    """What the fake Messages API (and roughly the real one) counts: characters / 4."""
    return math.ceil(sum(len(text) for text in texts) / 4)


def test_the_estimate_plans_the_full_pass_as_the_stage_does() -> None:
    settings = Settings(full_pass_batch_tokens=5_000, full_pass_token_budget=40_000)
    stats = chunks(60)
    estimate = estimate_model_cost(
        sample_chars=150_000,
        persona_chars=3_000,
        v2_sample_chars=250_000,
        chunk_stats=stats,
        settings=settings,
    )
    plan = plan_full_pass(stats, batch_tokens=5_000, budget_tokens=40_000)
    assert estimate["estimate"] is True
    assert estimate["full_pass"] == plan.summary()
    assert "left_out" in estimate["full_pass"], "the budget binds in this example"
    assert estimate["by_stage"]["full_pass"]["calls"] == len(plan.batches)
    assert estimate["by_stage"]["quick_pass"]["calls"] == 1
    assert estimate["by_stage"]["finish"]["calls"] == 1


def test_the_estimate_tracks_the_prompts_the_stages_send() -> None:
    settings = Settings(full_pass_batch_tokens=8_000)
    stats = chunks(12, tokens=1_000, overlap_chars=0)
    sample, persona = "s" * 120_000, "p" * 2_000
    estimate = estimate_model_cost(
        sample_chars=len(sample),
        persona_chars=len(persona),
        v2_sample_chars=0,
        chunk_stats=stats,
        settings=settings,
    )
    system = prompts.soulprint_system(with_memory=False)
    quick = real_tokens(system, prompts.soulprint_content(sample, persona, {"chunks": 12}))
    quick_estimate = estimate["by_stage"]["quick_pass"]["input_tokens"]
    assert quick <= quick_estimate <= quick * 1.02

    plan = plan_full_pass(stats, batch_tokens=8_000, budget_tokens=settings.full_pass_token_budget)
    sent = sum(
        real_tokens(
            prompts.FACT_EXTRACTION_SYSTEM,
            prompts.fact_extraction_content(["c" * 4_000 for _ in batch]),
        )
        for batch in plan.batches
    )
    facts_estimate = estimate["by_stage"]["full_pass"]["input_tokens"]
    assert sent <= facts_estimate <= sent * 1.05


def test_the_estimate_adds_up_at_the_list_prices() -> None:
    settings = Settings(full_pass_batch_tokens=6_000)
    estimate = estimate_model_cost(
        sample_chars=200_000,
        persona_chars=5_000,
        v2_sample_chars=280_000,
        chunk_stats=chunks(40),
        settings=settings,
    )
    stages = estimate["by_stage"]
    for name, stage in stages.items():
        # Every call here is under Haiku 5.5's 100K-token tier, so one rate applies.
        assert stage["usd"] == pytest.approx(
            usd(HAIKU_5_5, stage["input_tokens"], stage["output_tokens"]), abs=1e-6
        ), name
        assert stage["output_tokens"] <= stage["input_tokens"]
    total = estimate["total"]
    for key in ("calls", "input_tokens", "output_tokens"):
        assert total[key] == sum(stage[key] for stage in stages.values())
    assert total["usd"] == pytest.approx(sum(stage["usd"] for stage in stages.values()))
    assert Decimal(str(total["usd"])) > 0
    assert estimate["assumptions"]["models"] == {
        "quick_pass": "claude-haiku-5-5",
        "full_pass": "claude-haiku-5-5",
    }


def test_a_model_without_a_price_is_estimated_as_unpriced() -> None:
    settings = Settings(quick_pass_model="someones-model")
    estimate = estimate_model_cost(
        sample_chars=100_000,
        persona_chars=0,
        v2_sample_chars=100_000,
        chunk_stats=chunks(10),
        settings=settings,
    )
    stages = estimate["by_stage"]
    for name in ("quick_pass", "finish"):
        assert stages[name]["unpriced_model"] == "someones-model"
        assert stages[name]["usd"] == 0
        assert stages[name]["input_tokens"] > 0, "tokens are still estimated"
    assert "unpriced_model" not in stages["full_pass"]
    assert estimate["total"]["usd"] == pytest.approx(stages["full_pass"]["usd"])
    assert estimate["total"]["unpriced_models"] == ["someones-model"], "the total is partial"


def test_operator_prices_are_used_for_the_estimate() -> None:
    settings = Settings(quick_pass_model="someones-model", full_pass_model="someones-model")
    table = PriceTable.from_json('{"someones-model": {"input": 2, "output": 10}}')
    estimate = estimate_model_cost(
        sample_chars=10_000,
        persona_chars=0,
        v2_sample_chars=10_000,
        chunk_stats=chunks(4),
        settings=settings,
        prices=table,
    )
    total = estimate["total"]
    assert "unpriced_models" not in total
    assert total["usd"] == pytest.approx(
        usd((2.0, 10.0), total["input_tokens"], total["output_tokens"]), abs=1e-5
    )


def test_an_export_without_chunks_still_has_a_quick_pass_estimate() -> None:
    estimate = estimate_model_cost(
        sample_chars=0,
        persona_chars=0,
        v2_sample_chars=0,
        chunk_stats=[],
        settings=Settings(),
    )
    assert estimate["by_stage"]["full_pass"]["calls"] == 0
    assert estimate["total"]["calls"] == 2


def test_the_dry_run_estimates_the_embed_stage_only_when_embedding_is_on() -> None:
    stats = [ChunkStat(i, 2_000, 4, False, datetime(2025, 1, 1, tzinfo=UTC)) for i in range(200)]
    assert embedding_estimate(Settings(), stats) is None
    titan = embedding_estimate(Settings(embed_provider="bedrock"), stats)
    assert titan is not None
    assert (titan["model"], titan["calls"], titan["texts"]) == (
        "amazon.titan-embed-text-v2:0",
        200,
        200,
    )
    assert titan["input_tokens"] == 400_000
    assert titan["usd"] == pytest.approx(0.008)  # $0.02 per million tokens
    openai = embedding_estimate(Settings(embed_provider="openai", embed_price_per_mtok=0.0), stats)
    assert openai is not None
    assert (openai["calls"], openai["usd"]) == (3, 0.0)  # 96 texts a call
    unpriced = embedding_estimate(
        Settings(embed_provider="openai", embed_model="nomic-embed-text"), stats
    )
    assert unpriced is not None and unpriced["usd"] is None


def test_the_cost_record_gains_an_embeddings_part_and_keeps_the_model_total() -> None:
    ledger = UsageLedger()
    usage = {"model": "amazon.titan-embed-text-v2:0", "calls": 3, "texts": 3,
             "input_tokens": 900, "cost_usd": 0.000018}  # fmt: skip
    with_embeddings = cost_summary(ledger, usage)
    assert with_embeddings["embeddings"] == {
        "model": "amazon.titan-embed-text-v2:0",
        "calls": 3,
        "texts": 3,
        "input_tokens": 900,
        "usd": 0.000018,
    }
    assert with_embeddings["total"] == cost_summary(ledger)["total"]
    assert "embeddings" not in cost_summary(ledger)
