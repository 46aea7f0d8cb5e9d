"""Token usage of model calls and the per-job ledger that adds it up with its cost.

``CallUsage`` is what one answered request consumed. ``UsageLedger`` sums calls by purpose
(``quick_pass``, ``fact_extraction``…) and by model; it serializes to a plain dict for the job
``result`` and ``user_profiles.import_cost_json`` and loads back from one, so a resumed job
continues the ledger of its earlier attempts (``UsageLedger.from_dict`` then ``merge`` or keep
recording).

What is counted, exactly:

* ``calls``: requests the API answered with a message, whatever we did with it. A truncated,
  refused, non-JSON or schema-breaking answer is billed, so it is counted with its tokens and
  cost; its in-policy retry is another call.
* ``failed_requests``: requests that got no message (429, 5xx, timeouts, dropped
  connections). The API bills nothing for an error answer, so they carry no tokens. A request
  our side timed out *may* have been completed and billed by the API; we cannot see that.
* ``cost_usd``: the sum over priced calls; ``unpriced_calls`` counts calls whose model had no
  price (their tokens are in the token counts but not in the cost).

Usage recorded after a job's last checkpoint is lost if the attempt dies before the next
checkpoint; the ledger is as complete as the checkpoints that carry it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

# Serialized USD precision: a hundred-millionth of a dollar keeps single cheap calls visible.
COST_DECIMAL_PLACES = Decimal("0.00000001")
# Version of the serialized ledger layout, for a future migration of stored checkpoints.
LEDGER_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CallUsage:
    """Tokens one answered request consumed, as the API reported them.

    ``cache_creation_1h_input_tokens`` is the part of ``cache_creation_input_tokens`` written
    with the 1-hour TTL (billed at a higher multiplier); the rest used the 5-minute TTL.
    """

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Every input token of the request: uncached, written to cache and read from cache."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    @classmethod
    def from_api(cls, model: str, usage: object) -> CallUsage:
        """Read the SDK's ``Usage`` (or anything with the same attributes); absent fields are 0."""

        def count(value: object) -> int:
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        creation = count(getattr(usage, "cache_creation_input_tokens", None))
        breakdown = getattr(usage, "cache_creation", None)
        one_hour = count(getattr(breakdown, "ephemeral_1h_input_tokens", None))
        return cls(
            model=model,
            input_tokens=count(getattr(usage, "input_tokens", None)),
            output_tokens=count(getattr(usage, "output_tokens", None)),
            cache_creation_input_tokens=creation,
            cache_creation_1h_input_tokens=min(one_hour, creation),
            cache_read_input_tokens=count(getattr(usage, "cache_read_input_tokens", None)),
        )


_COUNTERS = (
    "calls",
    "failed_requests",
    "unpriced_calls",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


@dataclass
class UsageTotals:
    """Summed usage of a group of calls (one purpose, one model, or everything)."""

    calls: int = 0
    failed_requests: int = 0
    unpriced_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    def add_call(self, usage: CallUsage, cost_usd: Decimal | None) -> None:
        """Count one answered request."""
        self.calls += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cache_creation_input_tokens += usage.cache_creation_input_tokens
        self.cache_read_input_tokens += usage.cache_read_input_tokens
        if cost_usd is None:
            self.unpriced_calls += 1
        else:
            self.cost_usd += cost_usd

    def add(self, other: UsageTotals) -> None:
        """Add ``other`` into this one."""
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cost_usd += other.cost_usd

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; ``cost_usd`` as a float rounded to ``COST_DECIMAL_PLACES``."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _COUNTERS}
        out["cost_usd"] = float(self.cost_usd.quantize(COST_DECIMAL_PLACES))
        return out

    @classmethod
    def from_dict(cls, data: object, *, where: str = "usage") -> UsageTotals:
        """Inverse of ``to_dict``; missing counters are 0. Raises ``ValueError`` on bad types."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} must be an object")
        totals = cls()
        for name in _COUNTERS:
            value = data.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}.{name} must be a non-negative integer")
            setattr(totals, name, value)
        cost = data.get("cost_usd", 0)
        if isinstance(cost, bool) or not isinstance(cost, int | float | str):
            raise ValueError(f"{where}.cost_usd must be a number")
        try:
            totals.cost_usd = Decimal(str(cost))
        except InvalidOperation:
            raise ValueError(f"{where}.cost_usd must be a number") from None
        if not totals.cost_usd.is_finite() or totals.cost_usd < 0:
            raise ValueError(f"{where}.cost_usd must be a non-negative number")
        return totals


class UsageLedger:
    """Usage and cost of a job's model calls, by purpose and by model.

    Not thread-safe; it is used from one event loop, where ``record*`` never await.
    """

    def __init__(self) -> None:
        self.by_purpose: dict[str, UsageTotals] = {}
        self.by_model: dict[str, UsageTotals] = {}

    def record(self, purpose: str, usage: CallUsage, cost_usd: Decimal | None) -> None:
        """Count one answered request (billed, whether or not its answer was usable)."""
        self.by_purpose.setdefault(purpose, UsageTotals()).add_call(usage, cost_usd)
        self.by_model.setdefault(usage.model, UsageTotals()).add_call(usage, cost_usd)

    def record_failed_request(self, purpose: str, model: str) -> None:
        """Count one request that got no message (an error status, a timeout, a lost connection)."""
        self.by_purpose.setdefault(purpose, UsageTotals()).failed_requests += 1
        self.by_model.setdefault(model, UsageTotals()).failed_requests += 1

    @property
    def total(self) -> UsageTotals:
        """Everything summed."""
        total = UsageTotals()
        for totals in self.by_purpose.values():
            total.add(totals)
        return total

    def merge(self, other: UsageLedger) -> None:
        """Add ``other``'s usage into this ledger (e.g. the ledger of an earlier attempt)."""
        for mine, theirs in ((self.by_purpose, other.by_purpose), (self.by_model, other.by_model)):
            for key, totals in theirs.items():
                mine.setdefault(key, UsageTotals()).add(totals)

    def to_dict(self) -> dict[str, Any]:
        """``{"version", "total", "by_purpose", "by_model"}``, JSON-ready, keys sorted."""
        return {
            "version": LEDGER_FORMAT_VERSION,
            "total": self.total.to_dict(),
            "by_purpose": {k: self.by_purpose[k].to_dict() for k in sorted(self.by_purpose)},
            "by_model": {k: self.by_model[k].to_dict() for k in sorted(self.by_model)},
        }

    @classmethod
    def from_dict(cls, data: object) -> UsageLedger:
        """Load a ledger saved by ``to_dict``. ``total`` is recomputed, not trusted.

        Raises ``ValueError`` when the data is not a ledger of a known version.
        """
        if not isinstance(data, Mapping):
            raise ValueError("usage ledger must be an object")
        version = data.get("version", LEDGER_FORMAT_VERSION)
        if version != LEDGER_FORMAT_VERSION:
            raise ValueError(f"usage ledger version {version!r} is not supported")
        ledger = cls()
        for attr in ("by_purpose", "by_model"):
            groups = data.get(attr, {})
            if not isinstance(groups, Mapping):
                raise ValueError(f"usage ledger {attr} must be an object")
            target: dict[str, UsageTotals] = getattr(ledger, attr)
            for key, value in groups.items():
                target[str(key)] = UsageTotals.from_dict(value, where=f"{attr}.{key}")
        return ledger


assert {f.name for f in fields(UsageTotals)} == {*_COUNTERS, "cost_usd"}  # keep lists in step
