"""Stage 3, quick pass (35–50 %): one model call from the parse stage's sample to the soulprint.

The sample and the persona signals were saved by the parse stage, so nothing is re-read. One
transaction then writes the five sections, ``soulprint_text``, ``ai_name``, ``archetype`` and
``import_status = quick_ready`` with the checkpoint: from then on the chat works, and a failure
of the later stages only marks the full pass failed.

When the answer is cut off: ask again with a larger output limit; still cut off, shrink the
sample once; still cut off, a transient failure. A refusal fails the job permanently. The
answer's soft repairs go into ``result.degraded`` in the same transaction as the sections.
"""

from __future__ import annotations

import time
from typing import Any

from soulworker.errors import TransientJobError
from soulworker.llm.client import ModelClient, StructuredAnswer
from soulworker.llm.errors import ModelContextExceeded, ModelTruncated
from soulworker.llm.models import context_tokens, pessimistic_tokens
from soulworker.llm.schemas import SOULPRINT, SOULPRINT_V2
from soulworker.logs import get_logger
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.parse_stage import PARSE_OUTPUT_ARTIFACT
from soulworker.pipeline.stages import QUICK_PASS
from soulworker.soulprint import prompts
from soulworker.soulprint.degraded import count_repairs, repair_entries
from soulworker.soulprint.sections import identity_fields, section_columns, soulprint_text
from soulworker.sql_files import query

log = get_logger(__name__)

QUICK_PASS_MAX_TOKENS = 8_192  # the five sections are ~2-4K tokens; room for thinking
QUICK_PASS_RETRY_MAX_TOKENS = 16_384
# Conversations in the sample are separated by a blank line; shrinking cuts at one of them.
SAMPLE_SEPARATOR = "\n\n"
# The quick pass's answer, kept for the finish stage (which falls back to it).
QUICK_SECTIONS_ARTIFACT = "quick_pass_sections"
FIRST_SOULPRINT_PURPOSE = "quick_pass"


def stats_for_prompt(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("conversations", "messages", "chunks")
    return {key: result[key] for key in keys if key in result}


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
) -> StructuredAnswer:
    """The soulprint call with the truncation ladder (shared with the v2 pass): a cut-off answer
    is asked again with a larger limit, then with the sample shrunk once more, then it is a
    transient failure (docs/model-answers.md). Each step is a different request."""
    system = prompts.soulprint_system(with_memory=memory_md is not None)
    schema = SOULPRINT if memory_md is None else SOULPRINT_V2
    fixed = len(system) + len(persona_text) + len(memory_md or "") + 2_000
    sample = fit_sample(sample, fixed, model, QUICK_PASS_RETRY_MAX_TOKENS)
    ladder = [
        (QUICK_PASS_MAX_TOKENS, False),
        (QUICK_PASS_RETRY_MAX_TOKENS, False),
        (QUICK_PASS_RETRY_MAX_TOKENS, True),
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
            )
        except ModelContextExceeded:
            log.warning("prompt too long for the model; shrinking the sample", purpose=purpose)
            sample = shrink(sample)
        except ModelTruncated:
            log.warning("answer cut off; trying again", purpose=purpose, step=step + 1)
    raise TransientJobError("The model's answer was cut off repeatedly.", code="model_truncated")


class QuickPassStage:
    spec = QUICK_PASS
    keeps: tuple[str, ...] = (QUICK_SECTIONS_ARTIFACT,)

    def is_done(self, run: ImportRun) -> bool:
        return run.stage_done(QUICK_PASS.name)

    async def run(self, run: ImportRun) -> None:
        started = time.monotonic()
        assert run.model is not None, "model stages need a model client"
        progress = run.progress(QUICK_PASS)
        await progress.begin()
        parse_output = await run.ctx.artifact(PARSE_OUTPUT_ARTIFACT) or {}
        answer = await ask_for_soulprint(
            run.model,
            purpose=FIRST_SOULPRINT_PURPOSE,
            model=run.settings.quick_pass_model,
            sample=str(parse_output.get("sample_text") or ""),
            persona_text=str(parse_output.get("persona_text") or ""),
            stats=stats_for_prompt(run.result),
        )
        sections = answer.data
        ai_name, archetype = identity_fields(sections)
        job = run.ctx.job
        repairs = count_repairs(answer.repairs)
        outcome = {
            **run.usage_result(),
            **run.record_stage_seconds(QUICK_PASS.name, time.monotonic() - started),
            **run.degraded_result(
                QUICK_PASS.name, repair_entries(QUICK_PASS.name, FIRST_SOULPRINT_PURPOSE, repairs)
            ),
        }
        run.result.update(outcome)  # kept in step with the job row (see FinishStage)
        async with run.ctx.transaction() as tx:
            await tx.conn.execute(
                query("profile_quick_ready"),
                {
                    **section_columns(sections),
                    "soulprint_text": soulprint_text(sections),
                    "ai_name": ai_name,
                    "archetype": archetype,
                    "user_id": job.user_id,
                    "job_id": job.id,
                },
            )
            await tx.put_artifact(QUICK_SECTIONS_ARTIFACT, sections)
            await run.write_cost(tx.conn, outcome["cost"])
            await tx.advance(
                stage=QUICK_PASS.name,
                percent=QUICK_PASS.end,
                label=QUICK_PASS.label,
                checkpoint={QUICK_PASS.name: {"done": True}},
                result=outcome,
                completed=run.completes_job(QUICK_PASS),
            )
        log.info("soulprint ready (quick pass)", seconds=round(time.monotonic() - started, 2))
