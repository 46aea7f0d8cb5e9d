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

Model answers are saved as artifacts the moment they arrive, so a resumed finish does not pay
for them again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from soulworker.llm.schemas import (
    FACT_CATEGORIES,
    FACT_CATEGORY_REDUCTION,
    REDUCTION_MAX_ITEMS_PER_CATEGORY,
)
from soulworker.logs import get_logger
from soulworker.pipeline import prompts
from soulworker.pipeline.chunk_layout import ChunkLayout
from soulworker.pipeline.full_pass_stage import FACTS_PREFIX
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.memory import (
    Facts,
    category_chars,
    consolidate,
    fact_counts,
    render_memory,
)
from soulworker.pipeline.parse_stage import PARSE_OUTPUT_ARTIFACT
from soulworker.pipeline.quick_pass_stage import (
    QUICK_SECTIONS_ARTIFACT,
    ask_for_soulprint,
    stats_for_prompt,
)
from soulworker.pipeline.soulprint import section_columns, soulprint_text
from soulworker.pipeline.stages import FINISH
from soulworker.queue.errors import JobError
from soulworker.sql_files import query

log = get_logger(__name__)

# MEMORY should read in one go (the predecessor aimed at 1,000–5,000 tokens in all): about
# 1,500 tokens per category.
CATEGORY_MAX_CHARS = 6_000
MAX_REDUCTION_ROUNDS = 2
# One reduction call gets at most this much of a category (~20K tokens, as the predecessor).
REDUCTION_BATCH_CHARS = 80_000
REDUCTION_MAX_TOKENS = 16_000
# The v2 sample may be this many times the quick-pass budget: 280K characters by default, which
# keeps the whole prompt under the 100K-token line above which Haiku 5.5 costs five times more.
V2_SAMPLE_CHARS_FACTOR = 1.4
V2_CONVERSATIONS = 200
V2_ARTIFACT = "v2_sections"
REDUCED_PREFIX = "reduced:"
# Failures that end the attempt even where a model answer is optional: retrying cannot help,
# and going on would only meet them again.
FATAL_MODEL_CODES = frozenset(
    {"model_spend_limit", "model_auth_failed", "model_permission_denied"}
)
# Identity fields the v2 sections take from the quick pass. The user met the companion under
# its quick-pass name, and the ai_name and archetype columns keep it; a v2 identity with another
# name would make the chat's header and its system prompt (soulprint_text) disagree.
STABLE_IDENTITY_FIELDS = ("ai_name", "archetype")


class FinishStage:
    spec = FINISH

    def is_done(self, run: ImportRun) -> bool:
        return run.stage_done(FINISH.name)

    async def run(self, run: ImportRun) -> None:
        started = time.monotonic()
        ctx = run.ctx
        progress = run.progress(FINISH)
        await progress.begin()
        batches = [content.get("facts") or {} for _, content in await ctx.artifacts(FACTS_PREFIX)]
        facts = consolidate(batches)
        degraded: list[dict[str, str]] = []
        facts = await self._reduce(run, facts, degraded)
        memory_md = render_memory(facts)
        await progress.report(0.4)

        sections = await self._regenerate(run, memory_md, degraded)
        await progress.report(0.9)
        job = ctx.job
        columns: dict[str, Any] = dict.fromkeys(
            ("soul_md", "identity_md", "user_md", "agents_md", "tools_md", "soulprint_text")
        )
        quick = await ctx.artifact(QUICK_SECTIONS_ARTIFACT)
        if sections is not None:
            sections = keep_quick_pass_identity(sections, quick)
            columns.update(section_columns(sections))
            columns["soulprint_text"] = soulprint_text(sections, memory_md)
        elif quick:
            columns["soulprint_text"] = soulprint_text(quick, memory_md)
        usage = run.usage_result()
        finish_result = {
            "facts": fact_counts(facts),
            "memory_chars": len(memory_md),
            "sections": "regenerated" if sections is not None else "quick_pass",
        }
        if degraded:
            finish_result["degraded"] = degraded
        # The pipeline returns run.result as the job's final result, merged over what the
        # checkpoints wrote: it must hold this attempt's usage, not the one it started from.
        outcome = {
            "finish": finish_result,
            "facts": sum(fact_counts(facts).values()),
            **usage,
            **run.record_stage_seconds(FINISH.name, time.monotonic() - started),
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

    async def _reduce(self, run: ImportRun, facts: Facts, degraded: list[dict[str, str]]) -> Facts:
        """Bring each category under CATEGORY_MAX_CHARS: model rounds, then a plain cut."""
        reduced = dict(facts)
        saved = dict(await run.ctx.artifacts(REDUCED_PREFIX))
        for category in FACT_CATEGORIES:
            items = reduced[category]
            if category_chars(category, items) <= CATEGORY_MAX_CHARS:
                continue
            key = REDUCED_PREFIX + category
            if key in saved:
                reduced[category] = list(saved[key].get("items") or [])
                continue
            for round_number in range(MAX_REDUCTION_ROUNDS):
                before = len(items)
                try:
                    items = await self._reduce_once(run, category, items)
                except JobError as failure:
                    if failure.code in FATAL_MODEL_CODES:
                        raise
                    degraded.append({"what": f"reduce_{category}", "why": failure.code})
                    break
                log.info(
                    "facts reduced", category=category, round=round_number + 1,
                    before=before, after=len(items),
                )
                if category_chars(category, items) <= CATEGORY_MAX_CHARS or len(items) >= before:
                    break
            items = _cut_to_limit(category, items)
            reduced[category] = items
            async with run.ctx.transaction() as tx:
                await tx.put_artifact(key, {"items": items})
        return reduced

    async def _reduce_once(self, run: ImportRun, category: str, items: list[Any]) -> list[Any]:
        assert run.model is not None
        out: list[Any] = []
        for batch in _reduction_batches(category, items):
            answer = await run.model.structured(
                purpose="fact_reduction",
                model=run.settings.full_pass_model,
                system=prompts.FACT_REDUCTION_SYSTEM,
                content=prompts.fact_reduction_content(category, batch),
                schema=FACT_CATEGORY_REDUCTION[category],
                max_tokens=REDUCTION_MAX_TOKENS,
            )
            out.extend(answer.data.get(category) or [])
        return consolidate([{category: out}])[category]

    async def _regenerate(
        self, run: ImportRun, memory_md: str, degraded: list[dict[str, str]]
    ) -> dict[str, Any] | None:
        saved = await run.ctx.artifact(V2_ARTIFACT)
        if saved:
            return dict(saved)
        assert run.model is not None
        parse_output = await run.ctx.artifact(PARSE_OUTPUT_ARTIFACT) or {}
        sample = await self._v2_sample(run, parse_output)
        try:
            answer = await ask_for_soulprint(
                run.model,
                purpose="soulprint_v2",
                model=run.settings.quick_pass_model,
                sample=sample,
                persona_text=str(parse_output.get("persona_text") or ""),
                stats=stats_for_prompt(run.result),
                memory_md=memory_md,
            )
        except JobError as failure:
            log.warning("v2 sections failed; the quick pass's sections stay", code=failure.code)
            degraded.append({"what": "soulprint_v2", "why": failure.code})
            return None
        async with run.ctx.transaction() as tx:
            await tx.put_artifact(V2_ARTIFACT, answer.data)
        return answer.data

    async def _v2_sample(self, run: ImportRun, parse_output: dict[str, Any]) -> str:
        """The best conversations' stored text, best first, within the v2 budget."""
        ranked = [str(entry[0]) for entry in parse_output.get("top_conversations") or []]
        ranked = ranked[:V2_CONVERSATIONS]
        if not ranked:
            return str(parse_output.get("sample_text") or "")
        layout = ChunkLayout.from_json(parse_output.get("chunk_layout"))
        texts: dict[str, list[str]] = {}
        async with run.store_connection() as conn:
            cur = await conn.execute(
                query("conversation_chunk_texts"),
                {"job_id": run.ctx.job.id, "conversation_ids": ranked},
            )
            async for row in cur:
                piece = layout.new_text(row["chunk_index"], row["content"])
                texts.setdefault(row["conversation_id"], []).append(piece)
        budget = int(run.settings.quick_pass_sample_chars * V2_SAMPLE_CHARS_FACTOR)
        parts: list[str] = []
        used = 0
        for conversation_id in ranked:
            text = "\n".join(texts.get(conversation_id, ()))
            if not text:
                continue
            if used + len(text) > budget:
                if parts:
                    continue
                text = text[:budget]
            parts.append(text)
            used += len(text) + 2
        return "\n\n".join(parts)


def keep_quick_pass_identity(
    sections: dict[str, Any], quick: dict[str, Any] | None
) -> dict[str, Any]:
    """The v2 ``sections`` with the quick pass's name and archetype (``STABLE_IDENTITY_FIELDS``)."""
    quick_identity = (quick or {}).get("identity")
    if not isinstance(quick_identity, dict):
        return sections
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
