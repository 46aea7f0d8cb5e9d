"""Model prices and the cost of one call. Pure functions over ``decimal.Decimal``.

Prices are USD per million tokens (MTok), as the vendor publishes them. Defaults cover the
models soulworker is expected to run on (researched Nov 2026, docs/platform.md):

* ``claude-haiku-4-5`` (dated id ``claude-haiku-4-5-20251001``): $1 in / $5 out. Legacy, but
  what the predecessor ran on, so the cost of a like-for-like run is known.
* ``claude-haiku-5-5``: $0.10 / $0.50 for prompts of up to 100K tokens, $0.50 / $2.50 above.
  The current Haiku and the cheapest; its tokenizer yields ~30 % more tokens per character.
* ``claude-sonnet-4-5``: $3 / $15. Deprecated (retires 2026-11-30); priced so a run that still
  names it is costed instead of showing as unknown.

Prompt caching is billed on the input rate: writes at 1.25x (5-minute TTL) or 2x (1-hour TTL),
reads at 0.1x. A long-context tier is chosen by the whole prompt (input + cache writes + cache
reads) and then applies to every token of that request, output included, which is how the
vendor bills tiered models.

Requests sent through the Message Batches API cost half (``BATCH_PRICE_FACTOR``).

Operators override or add prices with a JSON object (``PriceTable.from_json``), for example
``{"my-model": {"input": 2, "output": 8}}``; see ``parse_price_config`` for the keys.

An unknown model does not stop a job: ``PriceTable.cost_usd`` returns ``None``, the ledger
counts the call as unpriced (its tokens are still recorded) and a warning is logged once per
model. Failing a paid-for import because a price is missing would waste the money spent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import structlog

from soulworker.llm.usage import CallUsage

log = structlog.get_logger(__name__)

TOKENS_PER_MTOK = Decimal(1_000_000)
# Prompt caching multipliers on the input rate (vendor pricing page; docs/platform.md).
DEFAULT_CACHE_WRITE_5M_MULTIPLIER = Decimal("1.25")
DEFAULT_CACHE_WRITE_1H_MULTIPLIER = Decimal("2")
DEFAULT_CACHE_READ_MULTIPLIER = Decimal("0.1")

# Requests of a Message Batch are billed at half the price of the same direct call, on every
# token kind, cache reads and writes included (vendor batch-processing page; docs/platform.md).
BATCH_PRICE_FACTOR = Decimal("0.5")

# A dated snapshot id (``claude-haiku-4-5-20251001``) is priced like its alias.
_DATED_SUFFIX = re.compile(r"-\d{8}$")


@dataclass(frozen=True)
class LongContextPrice:
    """Rates that replace the base ones when a request's prompt is over ``above_prompt_tokens``."""

    above_prompt_tokens: int
    input_per_mtok: Decimal
    output_per_mtok: Decimal


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens for one model, with its cache multipliers and optional tier."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_write_5m_multiplier: Decimal = DEFAULT_CACHE_WRITE_5M_MULTIPLIER
    cache_write_1h_multiplier: Decimal = DEFAULT_CACHE_WRITE_1H_MULTIPLIER
    cache_read_multiplier: Decimal = DEFAULT_CACHE_READ_MULTIPLIER
    long_context: LongContextPrice | None = None

    def rates_for(self, prompt_tokens: int) -> tuple[Decimal, Decimal]:
        """(input, output) USD per MTok for a request whose whole prompt is ``prompt_tokens``."""
        tier = self.long_context
        if tier is not None and prompt_tokens > tier.above_prompt_tokens:
            return tier.input_per_mtok, tier.output_per_mtok
        return self.input_per_mtok, self.output_per_mtok


def call_cost_usd(price: ModelPrice, usage: CallUsage) -> Decimal:
    """The USD cost of one call with ``usage`` at ``price`` (exact, not rounded)."""
    input_rate, output_rate = price.rates_for(usage.prompt_tokens)
    cache_5m = usage.cache_creation_input_tokens - usage.cache_creation_1h_input_tokens
    weighted_input = (
        Decimal(usage.input_tokens)
        + Decimal(cache_5m) * price.cache_write_5m_multiplier
        + Decimal(usage.cache_creation_1h_input_tokens) * price.cache_write_1h_multiplier
        + Decimal(usage.cache_read_input_tokens) * price.cache_read_multiplier
    )
    return (weighted_input * input_rate + Decimal(usage.output_tokens) * output_rate) / (
        TOKENS_PER_MTOK
    )


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "claude-haiku-4-5": ModelPrice(input_per_mtok=Decimal("1"), output_per_mtok=Decimal("5")),
    "claude-haiku-5-5": ModelPrice(
        input_per_mtok=Decimal("0.10"),
        output_per_mtok=Decimal("0.50"),
        long_context=LongContextPrice(
            above_prompt_tokens=100_000,
            input_per_mtok=Decimal("0.50"),
            output_per_mtok=Decimal("2.50"),
        ),
    ),
    "claude-sonnet-4-5": ModelPrice(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15")),
}


@dataclass
class PriceTable:
    """Prices by model id. ``lookup`` also finds a dated snapshot id by its alias."""

    prices: Mapping[str, ModelPrice] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    _warned: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def defaults(cls) -> PriceTable:
        """The built-in prices (see the module docstring)."""
        return cls()

    @classmethod
    def from_json(cls, text: str, *, base: Mapping[str, ModelPrice] = DEFAULT_PRICES) -> PriceTable:
        """``base`` with the models in the JSON object ``text`` added or replaced.

        Raises ``ValueError`` with one line saying what is wrong (for a settings error).
        """
        return cls({**base, **parse_price_config(text)})

    def lookup(self, model: str) -> ModelPrice | None:
        """The price of ``model``, of its alias when it is a dated id, or ``None``."""
        price = self.prices.get(model)
        if price is None:
            price = self.prices.get(_DATED_SUFFIX.sub("", model))
        return price

    def cost_usd(self, usage: CallUsage, *, batch: bool = False) -> Decimal | None:
        """The cost of a call, or ``None`` (with a one-time warning) when its model is unknown.
        ``batch``: a request of a Message Batch, billed at ``BATCH_PRICE_FACTOR``."""
        price = self.lookup(usage.model)
        if price is None:
            if usage.model not in self._warned:
                self._warned.add(usage.model)
                log.warning("model_price_unknown", model=usage.model)
            return None
        cost = call_cost_usd(price, usage)
        return cost * BATCH_PRICE_FACTOR if batch else cost


_PRICE_KEYS = frozenset(
    {"input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "long_context"}
)
_LONG_CONTEXT_KEYS = frozenset({"above_prompt_tokens", "input", "output"})


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{where} must be a number")
    else:
        number = _parse_decimal(value, where)
    if not number.is_finite() or number < 0:
        raise ValueError(f"{where} must be a non-negative number")
    return number


def _parse_decimal(value: int | float | str, where: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{where} must be a number") from None
    return number


def _keys(
    entry: object, allowed: frozenset[str], required: set[str], where: str
) -> dict[str, object]:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"{where} has unknown keys: {', '.join(unknown)}")
    missing = sorted(required - set(entry))
    if missing:
        raise ValueError(f"{where} is missing: {', '.join(missing)}")
    return entry


def parse_price_config(text: str) -> dict[str, ModelPrice]:
    """Parse a price configuration: a JSON object of model id → price.

    Each price has ``input`` and ``output`` (USD per MTok), optionally ``cache_write_5m``,
    ``cache_write_1h`` and ``cache_read`` (multipliers of the input rate) and ``long_context``
    (``{"above_prompt_tokens": n, "input": x, "output": y}``). Raises ``ValueError``.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"model prices are not valid JSON (at character {exc.pos})") from None
    if not isinstance(data, dict):
        raise ValueError("model prices must be a JSON object of model id to price")
    prices: dict[str, ModelPrice] = {}
    for model, raw in data.items():
        where = f"price of {model!r}"
        entry = _keys(raw, _PRICE_KEYS, {"input", "output"}, where)
        long_context = None
        if entry.get("long_context") is not None:
            tier = _keys(
                entry["long_context"],
                _LONG_CONTEXT_KEYS,
                set(_LONG_CONTEXT_KEYS),
                f"{where} long_context",
            )
            threshold = tier["above_prompt_tokens"]
            if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
                raise ValueError(f"{where} long_context.above_prompt_tokens must be an integer")
            long_context = LongContextPrice(
                above_prompt_tokens=threshold,
                input_per_mtok=_decimal(tier["input"], f"{where} long_context.input"),
                output_per_mtok=_decimal(tier["output"], f"{where} long_context.output"),
            )
        prices[model] = ModelPrice(
            input_per_mtok=_decimal(entry["input"], f"{where} input"),
            output_per_mtok=_decimal(entry["output"], f"{where} output"),
            cache_write_5m_multiplier=_decimal(
                entry.get("cache_write_5m", DEFAULT_CACHE_WRITE_5M_MULTIPLIER),
                f"{where} cache_write_5m",
            ),
            cache_write_1h_multiplier=_decimal(
                entry.get("cache_write_1h", DEFAULT_CACHE_WRITE_1H_MULTIPLIER),
                f"{where} cache_write_1h",
            ),
            cache_read_multiplier=_decimal(
                entry.get("cache_read", DEFAULT_CACHE_READ_MULTIPLIER), f"{where} cache_read"
            ),
            long_context=long_context,
        )
    return prices
