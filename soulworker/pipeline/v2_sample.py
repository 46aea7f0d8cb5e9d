"""The larger sample the finish's v2 sections are asked with, rebuilt from the stored chunks of
the parse's best conversations (docs/pipeline.md, "5. Finish"). Shared by the finish and the
local import's cost estimate, which sizes the v2 call exactly as the finish would make it."""

from __future__ import annotations

from soulworker.pipeline.handoffs import ParseOutput
from soulworker.pipeline.import_run import ImportRun
from soulworker.sql_files import query

# The v2 sample may be this many times the quick-pass budget: 280K characters by default, which
# keeps the whole prompt under the 100K-token line above which Haiku 5.5 costs five times more.
V2_SAMPLE_CHARS_FACTOR = 1.4
V2_CONVERSATIONS = 200


async def v2_sample(run: ImportRun, parse_output: ParseOutput) -> str:
    """The best conversations' stored text, best first, within the v2 budget."""
    ranked = parse_output.best_conversation_ids(V2_CONVERSATIONS)
    if not ranked:
        return parse_output.sample_text
    layout = parse_output.chunk_layout
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
