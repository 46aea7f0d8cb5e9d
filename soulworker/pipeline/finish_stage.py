"""Stage 6, finish (95–100 %): MEMORY, the v2 sections, ``complete``.

1. The facts of every batch are merged and deduplicated. A category still over its size limit is
   reduced by the model, in bounded rounds (at most ``MAX_REDUCTION_ROUNDS``; a round that does not
   shrink it ends the rounds), then cut to the limit by our code if need be. No loop can run
   forever, whatever the model answers.
2. MEMORY is rendered by our code under its five headings.
3. The five sections are regenerated with MEMORY as context (and a larger sample rebuilt from the
   stored chunks of the best conversations). They keep the quick pass's ``ai_name`` and
   ``archetype``, which the columns of those names go on showing. If that fails, the quick pass's
   sections stay and the result says why.
4. One transaction writes ``memory_md``, the sections, ``full_pass_*``, ``import_cost_json`` and
   ``import_status = complete`` with the checkpoint.

Model answers are saved as artifacts the moment they arrive (each reduction call, the v2
sections, or the reason they failed), with the usage that paid for them, so a resumed finish
pays for nothing twice and keeps its record of what it repaired or went without.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from soulworker.errors import JobError
from soulworker.llm.client import effort_setting
from soulworker.llm.schemas import (
    FACT_CATEGORIES,
    FACT_CATEGORY_REDUCTION,
    REDUCTION_MAX_ITEMS_PER_CATEGORY,
)
from soulworker.logs import get_logger
from soulworker.pipeline.handoffs import FACTS_PREFIX, FactBatch, QuickSections
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.stages import FINISH
from soulworker.pipeline.v2_sample import v2_sample
from soulworker.soulprint import prompts
from soulworker.soulprint.degraded import add_counts, count_repairs, repair_entries, skip_entry
from soulworker.soulprint.memory import (
    Facts,
    category_chars,
    consolidate,
    fact_counts,
    render_memory,
)
from soulworker.soulprint.section_request import ask_for_soulprint, prompt_stats
from soulworker.soulprint.sections import section_columns, soulprint_text
from soulworker.sql_files import query

log = get_logger(__name__)

# MEMORY should read in one go (the predecessor aimed at 1,000–5,000 tokens in all): about
# 1,500 tokens per category.
CATEGORY_MAX_CHARS = 6_000
MAX_REDUCTION_ROUNDS = 2
# One reduction call gets at most this much of a category (~20K tokens, as the predecessor).
REDUCTION_BATCH_CHARS = 80_000
REDUCTION_MAX_TOKENS = 16_000
V2_ARTIFACT = "v2_sections"
V2_PURPOSE = "soulprint_v2"
REDUCTION_PURPOSE = "fact_reduction"
# A category's reduction, whole: its final items and what it repaired or went without.
REDUCED_PREFIX = "reduced:"
# One reduction call's answer (category, round, batch), saved the moment it arrives.
REDUCTION_ANSWER_PREFIX = "reduction:"
# Failures that end the attempt even where a model answer is optional: retrying cannot help,
# and going on would only meet them again.
FATAL_MODEL_CODES = frozenset({"model_spend_limit", "model_auth_failed", "model_permission_denied"})
# Identity fields the v2 sections take from the quick pass. The user met the companion under
# its quick-pass name, and the ai_name and archetype columns keep it; a v2 identity with another
# name would make the chat's header and its system prompt (soulprint_text) disagree.
STABLE_IDENTITY_FIELDS = ("ai_name", "archetype")


class FinishStage:
    spec = FINISH
    keeps: tuple[str, ...] = ()

    def is_done(self, run: ImportRun) -> bool:
        return run.stage_done(FINISH.name)

    async def run(self, run: ImportRun) -> None:
        started = time.monotonic()
        ctx = run.ctx
        progress = run.progress(FINISH)
        await progress.begin()
        batches = [
            FactBatch.from_json(name, content).facts
            for name, content in await ctx.artifacts(FACTS_PREFIX)
        ]
        facts = consolidate(batches)
        record = _Record()
        facts = await self._reduce(run, facts, record)
        memory_md = render_memory(facts)
        await progress.report(0.4)

        sections = await self._regenerate(run, memory_md, record)
        await progress.report(0.9)
        job = ctx.job
        columns: dict[str, Any] = dict.fromkeys(
            ("soul_md", "identity_md", "user_md", "agents_md", "tools_md", "soulprint_text")
        )
        quick = await run.quick_sections()
        if sections is not None:
            sections = keep_quick_pass_identity(sections, quick)
            columns.update(section_columns(sections))
            columns["soulprint_text"] = soulprint_text(sections, memory_md)
        elif quick is not None:
            columns["soulprint_text"] = soulprint_text(quick.sections, memory_md)
        usage = run.usage_result()
        finish_result = {
            "facts": fact_counts(facts),
            "memory_chars": len(memory_md),
            "sections": "regenerated" if sections is not None else "quick_pass",
        }
        # The pipeline returns run.result as the job's final result, merged over what the
        # checkpoints wrote: it must hold this attempt's usage, not the one it started from.
        outcome = {
            "finish": finish_result,
            "facts": sum(fact_counts(facts).values()),
            **usage,
            **run.record_stage_seconds(FINISH.name, time.monotonic() - started),
            **run.degraded_result(FINISH.name, record.entries()),
        }
        run.result.update(outcome)
        async with ctx.transaction() as tx:
            await tx.conn.execute(
                query("profile_finished"),
                {
                    **columns,
                    "memory_md": memory_md,
                    "import_cost_json": json.dumps(usage["cost"]),
                    "user_id": job.user_id,
                    "job_id": job.id,
                },
            )
            await tx.advance(
                stage=FINISH.name,
                percent=FINISH.end,
                label=FINISH.label,
                checkpoint={FINISH.name: {"done": True}},
                result=outcome,
                completed=run.completes_job(FINISH),
            )

    async def _reduce(self, run: ImportRun, facts: Facts, record: _Record) -> Facts:
        """Bring each category under CATEGORY_MAX_CHARS: model rounds, then a plain cut."""
        reduced = dict(facts)
        saved = dict(await run.ctx.artifacts(REDUCED_PREFIX))
        answers = dict(await run.ctx.artifacts(REDUCTION_ANSWER_PREFIX))
        for category in FACT_CATEGORIES:
            items = reduced[category]
            if category_chars(category, items) <= CATEGORY_MAX_CHARS:
                continue
            key = REDUCED_PREFIX + category
            if key in saved:
                reduced[category] = list(saved[key].get("items") or [])
                record.load(saved[key])
                continue
            step = _Record()
            for round_number in range(MAX_REDUCTION_ROUNDS):
                before = len(items)
                try:
                    items = await self._reduce_once(
                        run,
                        category=category,
                        round_number=round_number,
                        items=items,
                        answers=answers,
                        step=step,
                    )
                except JobError as failure:
                    if failure.code in FATAL_MODEL_CODES:
                        raise
                    step.skipped.append(skip_entry(FINISH.name, REDUCTION_PURPOSE, failure.code))
                    break
                log.info(
                    "facts reduced",
                    category=category,
                    round=round_number + 1,
                    before=before,
                    after=len(items),
                )
                if category_chars(category, items) <= CATEGORY_MAX_CHARS or len(items) >= before:
                    break
            items = _cut_to_limit(category, items)
            reduced[category] = items
            await self._save_answer(run, key, {"items": items, **step.to_json()})
            record.load(step.to_json())
        return reduced

    async def _reduce_once(
        self,
        run: ImportRun,
        *,
        category: str,
        round_number: int,
        items: list[Any],
        answers: dict[str, Any],
        step: _Record,
    ) -> list[Any]:
        """One round over a category, each reduction call's answer saved as it arrives (and
        reused, when its input is the same, by a resumed attempt)."""
        assert run.model is not None
        out: list[Any] = []
        for number, batch in enumerate(_reduction_batches(category, items)):
            name = f"{REDUCTION_ANSWER_PREFIX}{category}:{round_number}:{number:04d}"
            digest = _digest(batch)
            saved = answers.get(name)
            if isinstance(saved, dict) and saved.get("input") == digest:
                reduced_items = list(saved.get("items") or [])
                add_counts(step.repairs, saved.get("repairs"))
            else:
                answer = await run.model.structured(
                    purpose=REDUCTION_PURPOSE,
                    model=run.settings.full_pass_model,
                    system=prompts.FACT_REDUCTION_SYSTEM,
                    content=prompts.fact_reduction_content(category, batch),
                    schema=FACT_CATEGORY_REDUCTION[category],
                    max_tokens=REDUCTION_MAX_TOKENS,
                    effort=effort_setting(run.settings.fact_reduction_effort),
                )
                reduced_items = list(answer.data.get(category) or [])
                repairs = count_repairs(answer.repairs)
                step.repairs.update(repairs)
                await self._save_answer(
                    run,
                    name,
                    {"input": digest, "items": reduced_items, "repairs": dict(repairs)},
                )
            out.extend(reduced_items)
        return consolidate([{category: out}])[category]

    async def _save_answer(self, run: ImportRun, name: str, content: dict[str, Any]) -> None:
        """Keep what paid answers gave at once, with the usage that paid for them."""
        usage = run.usage_result()
        async with run.ctx.transaction() as tx:
            await tx.put_artifact(name, content)
            await tx.advance(
                stage=FINISH.name, percent=FINISH.start, label=FINISH.label, result=usage
            )
            await run.write_cost(tx.conn, usage["cost"])

    async def _regenerate(
        self, run: ImportRun, memory_md: str, record: _Record
    ) -> dict[str, Any] | None:
        saved = await run.ctx.artifact(V2_ARTIFACT)
        if saved:
            return record.load_v2(saved)
        assert run.model is not None
        parse_output = await run.parse_output()
        sample = await v2_sample(run, parse_output)
        try:
            answer = await ask_for_soulprint(
                run.model,
                purpose=V2_PURPOSE,
                model=run.settings.quick_pass_model,
                sample=sample,
                persona_text=parse_output.persona_text,
                stats=prompt_stats(run.result),
                memory_md=memory_md,
                effort=effort_setting(run.settings.soulprint_effort),
            )
        except JobError as failure:
            if failure.code in FATAL_MODEL_CODES:
                raise
            log.warning("v2 sections failed; the quick pass's sections stay", code=failure.code)
            content: dict[str, Any] = {"failed": failure.code}
        else:
            content = {"sections": answer.data, "repairs": dict(count_repairs(answer.repairs))}
        # Kept either way: a resumed finish neither pays for these sections again nor loses
        # the record of why they are missing.
        await self._save_answer(run, V2_ARTIFACT, content)
        return record.load_v2(content)


def keep_quick_pass_identity(
    sections: dict[str, Any], quick: QuickSections | None
) -> dict[str, Any]:
    """The v2 ``sections`` with the quick pass's name and archetype (``STABLE_IDENTITY_FIELDS``)."""
    if quick is None:
        return sections
    quick_identity = quick.identity
    identity = dict(sections["identity"])
    for name in STABLE_IDENTITY_FIELDS:
        if name in quick_identity:
            identity[name] = quick_identity[name]
    return {**sections, "identity": identity}


def _reduction_batches(category: str, items: Sequence[Any]) -> list[list[Any]]:
    batches: list[list[Any]] = []
    current: list[Any] = []
    size = 0
    for item in items:
        cost = category_chars(category, [item])
        full = len(current) >= REDUCTION_MAX_ITEMS_PER_CATEGORY
        if current and (size + cost > REDUCTION_BATCH_CHARS or full):
            batches.append(current)
            current, size = [], 0
        current.append(item)
        size += cost
    if current:
        batches.append(current)
    return batches


def _cut_to_limit(category: str, items: list[Any]) -> list[Any]:
    kept: list[Any] = []
    size = 0
    for item in items:
        cost = category_chars(category, [item])
        if size + cost > CATEGORY_MAX_CHARS:
            break
        kept.append(item)
        size += cost
    return kept


def _digest(batch: Sequence[Any]) -> str:
    """What a reduction call was asked, in short: a saved answer is reused only for the same."""
    text = json.dumps(list(batch), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class _Record:
    """What the finish stage repaired or went without, as kept in its artifacts."""

    def __init__(self) -> None:
        self.repairs: Counter[str] = Counter()  # of reduction answers
        self.v2_repairs: Counter[str] = Counter()
        self.skipped: list[dict[str, Any]] = []

    def load(self, saved: dict[str, Any]) -> None:
        """Add what a saved reduction (a ``reduced:`` artifact) recorded."""
        add_counts(self.repairs, saved.get("repairs"))
        self.skipped.extend(
            entry for entry in saved.get("skipped") or () if isinstance(entry, dict)
        )

    def load_v2(self, saved: dict[str, Any]) -> dict[str, Any] | None:
        """The v2 sections a saved answer holds (``None`` when they failed), recorded."""
        if "failed" in saved:
            self.skipped.append(skip_entry(FINISH.name, V2_PURPOSE, str(saved["failed"])))
            return None
        if "sections" not in saved:  # saved before repairs were recorded: the sections alone
            return dict(saved)
        add_counts(self.v2_repairs, saved.get("repairs"))
        return dict(saved["sections"])

    def to_json(self) -> dict[str, Any]:
        return {"repairs": dict(self.repairs), "skipped": self.skipped}

    def entries(self) -> list[dict[str, Any]]:
        return [
            *repair_entries(FINISH.name, REDUCTION_PURPOSE, self.repairs),
            *repair_entries(FINISH.name, V2_PURPOSE, self.v2_repairs),
            *self.skipped,
        ]
