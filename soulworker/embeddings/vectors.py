"""What goes in and what comes out: input cut at the model's limit, vectors at unit length.

Input limits are documented in tokens, but we cannot count a provider's tokens without its
tokenizer (an extra dependency and start-up cost), so each model has a *character budget*
(docs/embeddings.md, "Input limits"): ``CHARS_PER_TOKEN_FLOOR`` characters per token times the
token limit, and never more than the model's own character limit. Ordinary prose runs at 4-5
characters per token, so text within the budget fits; dense text (code, CJK) may still run over,
which the provider reports as a rejected request. Chunks are about 2,000 tokens (``medium``), far
below every budget: a cut is rare and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Vector = list[float]

CHARS_PER_TOKEN_FLOOR = 3
"""A conservative characters-per-token ratio for Latin-script text (prose averages 4-5)."""


@dataclass(frozen=True)
class InputLimit:
    """A model's documented input limit: ``max_tokens``, and ``max_chars`` when it has one."""

    max_tokens: int
    max_chars: int | None = None

    @property
    def char_budget(self) -> int:
        """Characters sent at most: the token limit at the floor ratio, within ``max_chars``."""
        budget = self.max_tokens * CHARS_PER_TOKEN_FLOOR
        return budget if self.max_chars is None else min(budget, self.max_chars)


TITAN_V2_LIMIT = InputLimit(max_tokens=8_192, max_chars=50_000)
"""Titan Text Embeddings V2: 8,192 tokens and 50,000 characters (Bedrock model parameters)."""

OPENAI_V3_LIMIT = InputLimit(max_tokens=8_191)
"""OpenAI's text-embedding-3 and ada-002 models: 8,191 tokens per input."""


def cut_to_budget(text: str, budget: int) -> tuple[str, bool]:
    """``text`` cut to ``budget`` characters, and whether it was cut.

    A cut never splits a surrogate pair's worth of meaning in two: Python strings are code
    points, so slicing is always valid text.
    """
    if len(text) <= budget:
        return text, False
    return text[:budget], True


def normalized(values: Sequence[float]) -> Vector:
    """``values`` scaled to unit length (cosine distance then equals 1 - dot product).

    Raises ``ValueError`` for a zero vector, a non-finite value or one that is no number: none
    can be searched.
    """
    try:
        vector = [float(value) for value in values]
    except TypeError:  # a list, an object or null where a number belongs
        raise ValueError("the embedding holds a value that is not a number") from None
    if not all(math.isfinite(value) for value in vector):
        raise ValueError("the embedding holds a non-finite value")
    length = math.sqrt(math.fsum(value * value for value in vector))
    if length == 0.0:
        raise ValueError("the embedding is all zeros")
    return [value / length for value in vector]
