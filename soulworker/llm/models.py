"""What we know about each model that is not its price: how much it can read.

Unknown models get the smallest window of the Claude models we know, so a prompt sized for it
fits whatever model is configured.
"""

from __future__ import annotations

import math
import re

CONTEXT_TOKENS = {
    "claude-haiku-4-5": 200_000,
    "claude-haiku-5-5": 1_000_000,
    "claude-sonnet-4-5": 200_000,
}
DEFAULT_CONTEXT_TOKENS = 200_000
# chars/4 undercounts: Haiku 5.5's tokenizer yields ~30% more tokens than Haiku 4.5's, and text
# in non-Latin scripts more still. Prompts are sized against this pessimistic estimate.
TOKEN_ESTIMATE_SAFETY = 1.5
CHARS_PER_TOKEN = 4
"""The request-free token estimate every part of soulworker shares: ceil(characters / 4), the
usual figure for English text with Claude-family and embedding tokenizers and what the
predecessor used. It underestimates CJK text and code, and claude-haiku-5-5's tokenizer yields
~30 % more tokens, so it sizes chunks and budgets; nothing is billed by it (prompts that must
fit use ``pessimistic_tokens``)."""

_DATED_SUFFIX = re.compile(r"-\d{8}$")


def context_tokens(model: str) -> int:
    return CONTEXT_TOKENS.get(_DATED_SUFFIX.sub("", model), DEFAULT_CONTEXT_TOKENS)


def tokens_for_chars(chars: int) -> int:
    """The request-free token estimate for ``chars`` characters: ``ceil(chars / 4)``."""
    return -(-chars // CHARS_PER_TOKEN)


def estimate_tokens(text: str) -> int:
    """The request-free token estimate for ``text`` (``tokens_for_chars`` of its length)."""
    return tokens_for_chars(len(text))


def pessimistic_tokens(text_chars: int) -> int:
    """An upper-bound token estimate for ``text_chars`` characters of prompt."""
    return math.ceil(text_chars / CHARS_PER_TOKEN * TOKEN_ESTIMATE_SAFETY)


# Room kept free in the context for the instructions, persona signals and the answer.
PROMPT_RESERVE_TOKENS = 40_000


def sample_hard_cap_chars(model: str) -> int:
    """The most characters of sample a prompt to ``model`` can ever carry.

    Counted at one character per token, the worst case (CJK text, code), so the sample fits
    the context whatever it is written in; the quick pass trims further by its estimate.
    """
    return max(1_000, context_tokens(model) - PROMPT_RESERVE_TOKENS)
