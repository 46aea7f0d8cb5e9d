"""What embedding cost: calls, texts, input tokens, cuts, throttling, and USD at list price.

List prices (USD per million input tokens, researched Dec 2026, docs/embeddings.md "Cost"):
Titan Text Embeddings V2 on Bedrock $0.02 on demand; OpenAI text-embedding-3-small $0.02,
text-embedding-3-large $0.13, text-embedding-ada-002 $0.10. ``SOULWORKER_EMBED_PRICE_PER_MTOK``
replaces the list price (a self-hosted model: 0; a negotiated rate). A model without a known price
is counted as unpriced: its tokens are still recorded, its cost is ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

TOKENS_PER_MTOK = Decimal(1_000_000)

LIST_PRICES_PER_MTOK: Mapping[str, Decimal] = {
    "amazon.titan-embed-text-v2:0": Decimal("0.02"),
    "text-embedding-3-small": Decimal("0.02"),
    "text-embedding-3-large": Decimal("0.13"),
    "text-embedding-ada-002": Decimal("0.10"),
}


def price_per_mtok(model: str, override: Decimal | None = None) -> Decimal | None:
    """USD per million input tokens for ``model``: the override, the list price, or ``None``."""
    if override is not None:
        return override
    return LIST_PRICES_PER_MTOK.get(model)


@dataclass
class EmbedUsage:
    """Running totals for one embedder (one process or one job, as the caller decides).

    ``calls`` are requests answered with vectors; ``texts`` the vectors received; ``cut_texts``
    inputs cut at the model's limit; ``throttled`` answers that asked us to slow down;
    ``retries`` requests sent again for any reason.
    """

    model: str
    price_per_mtok: Decimal | None
    calls: int = 0
    texts: int = 0
    input_tokens: int = 0
    cut_texts: int = 0
    throttled: int = 0
    retries: int = 0

    @property
    def cost_usd(self) -> Decimal | None:
        """The USD cost of the tokens so far, or ``None`` when the model has no price."""
        if self.price_per_mtok is None:
            return None
        return Decimal(self.input_tokens) * self.price_per_mtok / TOKENS_PER_MTOK

    def to_json(self) -> dict[str, Any]:
        """The totals for a job's result or cost record (cost rounded to a micro-dollar)."""
        cost = self.cost_usd
        return {
            "model": self.model,
            "calls": self.calls,
            "texts": self.texts,
            "input_tokens": self.input_tokens,
            "cut_texts": self.cut_texts,
            "throttled": self.throttled,
            "retries": self.retries,
            "cost_usd": None if cost is None else float(round(cost, 6)),
        }
