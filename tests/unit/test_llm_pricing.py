"""Prices, the cost of a call, and the usage ledger."""

from __future__ import annotations

import json
from decimal import Decimal
from types import SimpleNamespace

import pytest
import structlog

from soulworker.llm.pricing import (
    DEFAULT_CACHE_READ_MULTIPLIER,
    DEFAULT_CACHE_WRITE_1H_MULTIPLIER,
    DEFAULT_CACHE_WRITE_5M_MULTIPLIER,
    DEFAULT_PRICES,
    PriceTable,
    call_cost_usd,
    parse_price_config,
)
from soulworker.llm.usage import CallUsage, UsageLedger, UsageTotals

MTOK = Decimal(1_000_000)


def test_haiku_4_5_costs_one_and_five_dollars_per_mtok() -> None:
    price = DEFAULT_PRICES["claude-haiku-4-5"]
    usage = CallUsage("claude-haiku-4-5", input_tokens=2000, output_tokens=500)
    expected = (2000 * price.input_per_mtok + 500 * price.output_per_mtok) / MTOK
    assert PriceTable.defaults().cost_usd(usage) == expected
    # The predecessor's arithmetic: 500 chunks x (2000 in + 500 out) on Haiku 4.5 ~ $2.25.
    assert expected * 500 == Decimal("2.25")


def test_dated_snapshot_ids_use_their_alias_price() -> None:
    table = PriceTable.defaults()
    assert table.lookup("claude-haiku-4-5-20251001") == DEFAULT_PRICES["claude-haiku-4-5"]
    usage = CallUsage("claude-haiku-4-5-20251001", input_tokens=10, output_tokens=10)
    assert table.cost_usd(usage) == table.cost_usd(
        CallUsage("claude-haiku-4-5", input_tokens=10, output_tokens=10)
    )


def test_haiku_5_5_long_context_tier_applies_to_the_whole_request() -> None:
    price = DEFAULT_PRICES["claude-haiku-5-5"]
    tier = price.long_context
    assert tier is not None
    at_limit = CallUsage(
        "claude-haiku-5-5", input_tokens=tier.above_prompt_tokens, output_tokens=1000
    )
    above = CallUsage(
        "claude-haiku-5-5", input_tokens=tier.above_prompt_tokens + 1, output_tokens=1000
    )
    assert (
        call_cost_usd(price, at_limit)
        == (at_limit.input_tokens * price.input_per_mtok + 1000 * price.output_per_mtok) / MTOK
    )
    assert (
        call_cost_usd(price, above)
        == (above.input_tokens * tier.input_per_mtok + 1000 * tier.output_per_mtok) / MTOK
    )
    # Cached prompt tokens count towards the tier threshold.
    cached = CallUsage(
        "claude-haiku-5-5",
        input_tokens=10,
        cache_read_input_tokens=tier.above_prompt_tokens,
        output_tokens=0,
    )
    input_rate, _ = price.rates_for(cached.prompt_tokens)
    assert input_rate == tier.input_per_mtok


def test_cache_tokens_use_their_multipliers() -> None:
    price = DEFAULT_PRICES["claude-haiku-4-5"]
    usage = CallUsage(
        "claude-haiku-4-5",
        input_tokens=100,
        output_tokens=50,
        cache_creation_input_tokens=1000,
        cache_creation_1h_input_tokens=400,
        cache_read_input_tokens=5000,
    )
    rate = price.input_per_mtok / MTOK
    expected = (
        100 * rate
        + 600 * rate * DEFAULT_CACHE_WRITE_5M_MULTIPLIER
        + 400 * rate * DEFAULT_CACHE_WRITE_1H_MULTIPLIER
        + 5000 * rate * DEFAULT_CACHE_READ_MULTIPLIER
        + 50 * price.output_per_mtok / MTOK
    )
    assert call_cost_usd(price, usage) == expected


def test_unknown_model_costs_none_and_warns_once() -> None:
    table = PriceTable.defaults()
    usage = CallUsage("claude-unheard-of-9", input_tokens=1, output_tokens=1)
    with structlog.testing.capture_logs() as logs:  # warnings pass the session's filter
        assert table.cost_usd(usage) is None
        assert table.cost_usd(usage) is None
    warnings = [e for e in logs if e["event"] == "model_price_unknown"]
    assert len(warnings) == 1
    assert warnings[0]["model"] == "claude-unheard-of-9"


def test_price_overrides_from_json() -> None:
    table = PriceTable.from_json(
        json.dumps(
            {
                "claude-haiku-4-5": {"input": 0.8, "output": 4},
                "my-model": {
                    "input": "2",
                    "output": 8,
                    "cache_read": 0.5,
                    "long_context": {"above_prompt_tokens": 10, "input": 4, "output": 16},
                },
            }
        )
    )
    haiku = table.lookup("claude-haiku-4-5")
    assert haiku is not None and haiku.input_per_mtok == Decimal("0.8")
    assert table.lookup("claude-haiku-5-5") == DEFAULT_PRICES["claude-haiku-5-5"]
    mine = table.lookup("my-model")
    assert mine is not None
    assert mine.cache_read_multiplier == Decimal("0.5")
    assert mine.cache_write_5m_multiplier == DEFAULT_CACHE_WRITE_5M_MULTIPLIER
    assert mine.rates_for(11) == (Decimal(4), Decimal(16))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"m": 3}', "must be an object"),
        ('{"m": {"input": 1}}', "missing: output"),
        ('{"m": {"input": 1, "output": 1, "colour": 1}}', "unknown keys: colour"),
        ('{"m": {"input": -1, "output": 1}}', "non-negative"),
        ('{"m": {"input": "abc", "output": 1}}', "must be a number"),
        ('{"m": {"input": true, "output": 1}}', "must be a number"),
        ('{"m": {"input": 1, "output": 1, "long_context": {"input": 1}}}', "missing"),
        (
            '{"m": {"input": 1, "output": 1, '
            '"long_context": {"above_prompt_tokens": 1.5, "input": 1, "output": 1}}}',
            "must be an integer",
        ),
    ],
)
def test_bad_price_configuration_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_price_config(text)


def test_call_usage_reads_the_sdk_shape() -> None:
    sdk_usage = SimpleNamespace(
        input_tokens=12,
        output_tokens=34,
        cache_creation_input_tokens=50,
        cache_read_input_tokens=7,
        cache_creation=SimpleNamespace(ephemeral_1h_input_tokens=20, ephemeral_5m_input_tokens=30),
    )
    usage = CallUsage.from_api("m", sdk_usage)
    assert usage == CallUsage("m", 12, 34, 50, 20, 7)
    bare = CallUsage.from_api(
        "m", SimpleNamespace(input_tokens=1, output_tokens=2, cache_creation_input_tokens=None)
    )
    assert bare == CallUsage("m", 1, 2)


# --- the ledger ---------------------------------------------------------------------------


def sample_ledger() -> tuple[UsageLedger, list[tuple[str, CallUsage, Decimal | None]]]:
    table = PriceTable.defaults()
    calls = [
        ("quick_pass", CallUsage("claude-haiku-5-5", 40_000, 3_000)),
        ("fact_extraction", CallUsage("claude-haiku-5-5", 2_000, 400, 100, 0, 900)),
        ("fact_extraction", CallUsage("claude-haiku-4-5", 2_100, 380)),
        ("fact_extraction", CallUsage("mystery-model", 1_000, 100)),
    ]
    ledger = UsageLedger()
    recorded = []
    for purpose, usage in calls:
        cost = table.cost_usd(usage)
        ledger.record(purpose, usage, cost)
        recorded.append((purpose, usage, cost))
    ledger.record_failed_request("fact_extraction", "claude-haiku-5-5")
    return ledger, recorded


def test_ledger_sums_by_purpose_and_model() -> None:
    ledger, recorded = sample_ledger()
    facts = ledger.by_purpose["fact_extraction"]
    fact_calls = [(u, c) for p, u, c in recorded if p == "fact_extraction"]
    assert facts.calls == len(fact_calls)
    assert facts.failed_requests == 1
    assert facts.unpriced_calls == 1
    assert facts.input_tokens == sum(u.input_tokens for u, _ in fact_calls)
    assert facts.output_tokens == sum(u.output_tokens for u, _ in fact_calls)
    assert facts.cache_read_input_tokens == sum(u.cache_read_input_tokens for u, _ in fact_calls)
    assert facts.cost_usd == sum((c for _, c in fact_calls if c is not None), Decimal(0))
    total = ledger.total
    assert total.calls == len(recorded)
    assert total.cost_usd == sum((c for _, _, c in recorded if c is not None), Decimal(0))
    assert ledger.by_model["claude-haiku-5-5"].calls == 2
    assert ledger.by_model["claude-haiku-5-5"].failed_requests == 1


def test_ledger_round_trips_through_json() -> None:
    ledger, _ = sample_ledger()
    data = json.loads(json.dumps(ledger.to_dict()))
    loaded = UsageLedger.from_dict(data)
    assert loaded.to_dict() == ledger.to_dict()
    assert data["total"]["cost_usd"] == pytest.approx(float(ledger.total.cost_usd), abs=1e-8)


def test_merging_a_resumed_ledger_adds_everything() -> None:
    first, _ = sample_ledger()
    resumed = UsageLedger.from_dict(first.to_dict())
    second, _ = sample_ledger()
    resumed.merge(second)
    for purpose, totals in first.by_purpose.items():
        doubled = UsageTotals()
        doubled.add(totals)
        doubled.add(second.by_purpose[purpose])
        assert resumed.by_purpose[purpose].to_dict() == doubled.to_dict()
    assert resumed.total.calls == 2 * first.total.calls
    assert resumed.total.failed_requests == 2


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"version": 2},
        {"by_purpose": []},
        {"by_purpose": {"x": {"calls": -1}}},
        {"by_purpose": {"x": {"calls": "3"}}},
        {"by_purpose": {"x": {"cost_usd": "abc"}}},
        {"by_purpose": {"x": {"cost_usd": -0.5}}},
    ],
)
def test_corrupt_ledgers_are_refused(data: object) -> None:
    with pytest.raises(ValueError, match=r"usage|ledger|by_purpose"):
        UsageLedger.from_dict(data)
