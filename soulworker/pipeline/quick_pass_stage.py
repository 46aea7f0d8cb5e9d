"""Stage 3, quick pass (35–50 %): one model call from the parse stage's sample to the soulprint.

The sample and the persona signals were saved by the parse stage, so nothing is re-read. One
transaction then writes the five sections, ``soulprint_text``, ``ai_name``, ``archetype`` and
``import_status = quick_ready`` with the checkpoint: from then on the chat works, and a failure
of the later stages only marks the full pass failed.

The call and its truncation ladder are ``soulprint.section_request`` (shared with the finish's v2
sections). A refusal fails the job permanently. The answer's soft repairs go into
``result.degraded`` in the same transaction as the sections.
"""

from __future__ import annotations

import time

from soulworker.llm.client import effort_setting
from soulworker.logs import get_logger
from soulworker.pipeline.handoffs import QUICK_SECTIONS_ARTIFACT, QuickSections
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.stages import QUICK_PASS
from soulworker.soulprint.degraded import count_repairs, repair_entries
from soulworker.soulprint.section_request import ask_for_soulprint, prompt_stats
from soulworker.soulprint.sections import identity_fields, section_columns, soulprint_text
from soulworker.sql_files import query

log = get_logger(__name__)

FIRST_SOULPRINT_PURPOSE = "quick_pass"


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
        parse_output = await run.parse_output()
        answer = await ask_for_soulprint(
            run.model,
            purpose=FIRST_SOULPRINT_PURPOSE,
            model=run.settings.quick_pass_model,
            sample=parse_output.sample_text,
            persona_text=parse_output.persona_text,
            stats=prompt_stats(run.result),
            effort=effort_setting(run.settings.soulprint_effort),
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
            await tx.put_artifact(QUICK_SECTIONS_ARTIFACT, QuickSections(sections).to_json())
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
