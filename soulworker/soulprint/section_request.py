"""The soulprint request: the model call that answers the five sections, shared by the quick pass
and the finish's v2 sections (docs/pipeline.md, "3. Quick pass" and "5. Finish").

It fits the sample to the model's context and climbs the truncation ladder: a cut-off answer is
asked again with a larger output limit, then with the sample shrunk once more, then it is a
transient failure (docs/model-answers.md). A prompt the model says is too long shrinks the
sample too. Each step is a different request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from soulworker.errors import TransientJobError
from soulworker.llm.client import Effort, ModelClient, StructuredAnswer
from soulworker.llm.errors import ModelContextExceeded, ModelTruncated
from soulworker.llm.models import context_tokens, pessimistic_tokens
from soulworker.llm.schemas import SOULPRINT, SOULPRINT_V2
from soulworker.logs import get_logger
from soulworker.soulprint import prompts

log = get_logger(__name__)

SOULPRINT_MAX_TOKENS = 8_192  # the five sections are ~2-4K tokens; room for thinking
SOULPRINT_RETRY_MAX_TOKENS = 16_384
# Conversations in the sample are separated by a blank line; shrinking cuts at one of them.
SAMPLE_SEPARATOR = "\n\n"
# The counts of the import the prompt quotes, as the parse wrote them to the job result.
PROMPT_STATS = ("conversations", "messages", "chunks")


def prompt_stats(result: Mapping[str, Any]) -> dict[str, Any]:
    """The parse's counts the prompt quotes, from the job result."""
    return {key: result[key] for key in PROMPT_STATS if key in result}


def fit_sample(sample: str, fixed_chars: int, model: str, max_tokens: int) -> str:
    """Cut the sample (at a conversation boundary) until the prompt surely fits the context."""
    room = context_tokens(model) - max_tokens
    while sample and pessimistic_tokens(len(sample) + fixed_chars) > room:
        sample = shrink(sample)
    return sample


def shrink(sample: str) -> str:
    """About half the sample, cut at a conversation boundary when there is one."""
    half = len(sample) // 2
    cut = sample.rfind(SAMPLE_SEPARATOR, 0, half)
    return sample[: cut if cut > 0 else half]


async def ask_for_soulprint(
    model_client: ModelClient,
    *,
    purpose: str,
    model: str,
    sample: str,
    persona_text: str,
    stats: dict[str, Any],
    memory_md: str | None = None,
    effort: Effort | None = None,
) -> StructuredAnswer:
    """The five sections, with the truncation ladder; with ``memory_md``, the v2 sections."""
    system = prompts.soulprint_system(with_memory=memory_md is not None)
    schema = SOULPRINT if memory_md is None else SOULPRINT_V2
    fixed = len(system) + len(persona_text) + len(memory_md or "") + 2_000
    sample = fit_sample(sample, fixed, model, SOULPRINT_RETRY_MAX_TOKENS)
    ladder = [
        (SOULPRINT_MAX_TOKENS, False),
        (SOULPRINT_RETRY_MAX_TOKENS, False),
        (SOULPRINT_RETRY_MAX_TOKENS, True),
    ]
    for step, (max_tokens, shrink_first) in enumerate(ladder):
        if shrink_first:
            sample = shrink(sample)
        content = prompts.soulprint_content(sample, persona_text, stats, memory_md)
        try:
            return await model_client.structured(
                purpose=purpose,
                model=model,
                system=system,
                content=content,
                schema=schema,
                max_tokens=max_tokens,
                effort=effort,
            )
        except ModelContextExceeded:
            log.warning("prompt too long for the model; shrinking the sample", purpose=purpose)
            sample = shrink(sample)
        except ModelTruncated:
            log.warning("answer cut off; trying again", purpose=purpose, step=step + 1)
    raise TransientJobError("The model's answer was cut off repeatedly.", code="model_truncated")
