"""Model usage of an import: calls, tokens per MB of export, estimated cost, no text sent twice.

Runs one job with the model stages on, through the real daemon and the real anthropic SDK, against
the fake Messages API on loopback (soulworker/testing/messages_api.py). The fake reports input
tokens as the request's characters / 4 — the same estimate the pipeline budgets with; real Haiku
5.5 counts ~30 % more for English text, so the table also shows that correction. The fake's
answers are random words, so output tokens are taken from the estimator's stated assumptions
(``soulworker/soulprint/cost_estimate.py``) rather than from the fake.

Then it checks, from the recorded requests, that the full pass sent no chunk text twice: every
stored chunk is in exactly one fact-extraction request, each without the overlap it repeats from
the chunk before it (the overlap is recomputed from the stored chunks).

    python bench/model_cost.py [--size 100MB] [--form zip-shards]

Prices: the built-in list prices (USD per million tokens): claude-haiku-5-5 $0.10 in / $0.50 out
(prompts up to 100K tokens), claude-haiku-4-5 $1 / $5 (the model the seeds named), for comparison.

The job runs with the daemon's defaults: the full pass through Message Batches
(SOULWORKER_FULL_PASS_MODE=auto) and the effort settings. The table of the full pass compares the
four ways of sending the same requests: direct or batch (half price), with no effort sent (the
model thinks adaptively, billed as output) or with SOULWORKER_FACT_EXTRACTION_EFFORT=low. Thinking
tokens cannot be measured against the fake; ``--thinking-default`` and ``--thinking-low`` are the
assumed thinking tokens per call, printed with the table (docs/full-pass-batches.md, "Effort").
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.generate_export import parse_size  # noqa: E402
from bench.pipeline_throughput import export_file  # noqa: E402
from bench.scratch_import import prepare_job, worker_env  # noqa: E402
from soulworker.llm.pricing import PriceTable  # noqa: E402
from soulworker.llm.usage import CallUsage  # noqa: E402
from soulworker.soulprint.cost_estimate import (  # noqa: E402
    FACT_OUTPUT_MAX_TOKENS,
    FACT_OUTPUT_RATIO,
    SOULPRINT_OUTPUT_TOKENS,
)
from soulworker.testing import postgres as pg  # noqa: E402
from soulworker.testing.export_generator import ExportForm  # noqa: E402
from soulworker.testing.messages_api import FakeMessagesAPI  # noqa: E402
from soulworker.testing.storage_server import StorageServer  # noqa: E402

EXCERPT = re.compile(r'<conversation_data index="\d+">\n(.*?)\n</conversation_data>', re.DOTALL)
# Haiku 5.5's tokenizer yields ~30 % more tokens than chars/4 (docs/platform.md).
HAIKU_5_5_TOKEN_FACTOR = 1.3
PURPOSE = "x-soulworker-purpose"
# Thinking tokens per fact-extraction call, assumed (the fake does not think): adaptive thinking
# with no effort sent, and at effort low. Stated with the results; change them with the options.
ASSUMED_THINKING_TOKENS = {"default": 1_000, "low": 150}


def overlap_length(previous: str, current: str, header: int) -> int:
    """How much of ``current``'s body (after ``header`` chars) repeats the end of ``previous``."""
    body = current[header:]
    for length in range(min(len(previous), len(body)), 0, -1):
        if previous.endswith(body[:length]):
            return length
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="100MB")
    parser.add_argument("--form", default="zip-shards", choices=[f.value for f in ExportForm])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--thinking-default",
        type=int,
        default=ASSUMED_THINKING_TOKENS["default"],
        help="assumed thinking tokens per fact-extraction call with no effort sent",
    )
    parser.add_argument(
        "--thinking-low",
        type=int,
        default=ASSUMED_THINKING_TOKENS["low"],
        help="assumed thinking tokens per fact-extraction call at effort low",
    )
    args = parser.parse_args()
    thinking = {"default": args.thinking_default, "low": args.thinking_low}
    server = pg.find_server()
    if server is None:
        print(pg.HOW_TO_RUN, file=sys.stderr)
        return 2
    export = export_file(parse_size(args.size), ExportForm(args.form), args.seed)
    with pg.scratch_database(server) as url, StorageServer() as storage, FakeMessagesAPI() as api:
        env = worker_env(
            url,
            storage,
            ANTHROPIC_API_KEY="sk-ant-bench-0123456789",
            ANTHROPIC_BASE_URL=api.base_url,
            # The daemon's default (auto = batch) with the batch looked at promptly.
            SOULWORKER_BATCH_POLL_MIN_SECONDS="0.5",
            SOULWORKER_BATCH_POLL_MAX_SECONDS="1",
        )
        prepare_job(env, storage, export)
        subprocess.run(
            [sys.executable, "-m", "soulworker", "run", "--drain"],
            env=env,
            cwd=REPO_ROOT,
            check=True,
        )
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            job = conn.execute("select status, last_error, result from import_jobs").fetchone()
            chunks = conn.execute(
                "select chunk_index, conversation_id, title, content from conversation_chunks "
                "order by chunk_index"
            ).fetchall()
        assert job is not None
        if job["status"] != "succeeded":
            raise SystemExit(f"the job did not succeed: {job['last_error']}")
        assert len(api.batches) == 1, "one batch per job"
        # The batch's requests are fact extraction (the only kind sent in a batch).
        batched = [replace(r, headers={PURPOSE: "fact_extraction"}) for r in api.batch_requests]
        requests = api.message_requests + batched
        report(export, job["result"], requests, chunks)
        full_pass_modes(
            job["result"], api.message_requests, batched, thinking, batch_usage(api.batches[0])
        )
    return 0


def report(
    export: Path, result: dict[str, Any], requests: list[Any], chunks: list[dict[str, Any]]
) -> None:
    mb = result["uncompressed_bytes"] / 1e6
    calls = Counter(request.purpose for request in requests)
    input_tokens: Counter[str] = Counter()
    for request in requests:
        input_tokens[request.purpose] += -(-len(request.text) // 4)
    output_tokens: Counter[str] = Counter()
    for request in requests:
        output_tokens[request.purpose] += estimated_output(request)

    print(f"date: {datetime.now(UTC):%Y-%m-%d}")
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}"
    )
    print(
        f"export: {export.name}, {export.stat().st_size / 1e6:.1f} MB file, {mb:.1f} MB JSON, "
        f"{result['conversations']} conversations, {result['chunks']} chunks"
    )
    print()
    print(
        "| purpose | calls | input tokens (chars/4) | input tokens per MB | "
        "output tokens (estimated) |"
    )
    print("|---|---|---|---|---|")
    for purpose in sorted(calls):
        print(
            f"| {purpose} | {calls[purpose]} | {input_tokens[purpose]:,} | "
            f"{input_tokens[purpose] / mb:,.0f} | {output_tokens[purpose]:,} |"
        )
    total_in, total_out = sum(input_tokens.values()), sum(output_tokens.values())
    print(
        f"| **total** | {sum(calls.values())} | {total_in:,} | {total_in / mb:,.0f} | "
        f"{total_out:,} |"
    )
    print()
    table = PriceTable.defaults()
    for model, factor in (("claude-haiku-5-5", HAIKU_5_5_TOKEN_FACTOR), ("claude-haiku-4-5", 1.0)):
        usd = Decimal(0)
        for request in requests:
            usage = CallUsage(
                model,
                input_tokens=int(-(-len(request.text) // 4) * factor),
                output_tokens=int(estimated_output(request) * factor),
            )
            cost = table.cost_usd(usage)
            usd += cost or Decimal(0)
        note = f" (tokens ×{factor} for its tokenizer)" if factor != 1.0 else ""
        print(
            f"estimated cost at list prices, {model}{note}: ${usd:.4f} "
            f"(${usd / Decimal(str(mb)):.5f} per MB of export)"
        )
    print(f"job result cost (fake's usage, default model): {result['cost']['total']}")
    print()
    check_no_text_sent_twice(requests, chunks, result)


def batch_usage(batch: Any) -> list[tuple[int, int]]:
    """(input, output) tokens of each answered request of a fake batch, as it billed them."""
    return [
        (result["message"]["usage"]["input_tokens"], result["message"]["usage"]["output_tokens"])
        for result in batch.results.values()
        if result["type"] == "succeeded"
    ]


def full_pass_modes(
    result: dict[str, Any],
    direct: list[Any],
    batched: list[Any],
    thinking: dict[str, int],
    billed: list[tuple[int, int]],
) -> None:
    """The full pass's cost four ways, per 100 MB of export, on claude-haiku-5-5; and the
    job's own record, at batch prices, against the same tokens at the direct price."""
    mb = result["uncompressed_bytes"] / 1e6
    per_100mb = Decimal(100) / Decimal(str(mb))
    fallbacks = [r for r in direct if r.purpose == "fact_extraction"]
    requests = batched + fallbacks
    table = PriceTable.defaults()
    factor = HAIKU_5_5_TOKEN_FACTOR
    rows = []
    for mode in ("direct", "batch"):
        for effort in ("default", "low"):
            usd = Decimal(0)
            tokens_in = tokens_out = 0
            for request in requests:
                usage = CallUsage(
                    "claude-haiku-5-5",
                    input_tokens=int(-(-len(request.text) // 4) * factor),
                    output_tokens=int(estimated_output(request) * factor) + thinking[effort],
                )
                tokens_in += usage.input_tokens
                tokens_out += usage.output_tokens
                usd += table.cost_usd(usage, batch=mode == "batch") or Decimal(0)
            rows.append((mode, effort, len(requests), tokens_in, tokens_out, usd * per_100mb))
    today = rows[0][5]
    print()
    print(
        f"full pass (fact extraction), per 100 MB of export, claude-haiku-5-5 (tokens ×{factor}); "
        f"assumed thinking tokens per call: {thinking['default']:,} with no effort sent, "
        f"{thinking['low']:,} at effort low"
    )
    print()
    print("| mode | effort | calls | input tokens | output tokens | USD | × today |")
    print("|---|---|---|---|---|---|---|")
    for mode, effort, calls, tokens_in, tokens_out, usd in rows:
        scale = float(per_100mb)
        print(
            f"| {mode} | {'none sent' if effort == 'default' else effort} | "
            f"{calls * scale:,.0f} | {tokens_in * scale:,.0f} | {tokens_out * scale:,.0f} | "
            f"${usd:.4f} | {usd / today:.2f} |"
        )
    print(f"fact-extraction requests answered directly after the batch: {len(fallbacks)}")
    recorded = result["model_usage"]["by_purpose"]["fact_extraction_batch"]
    # Each request priced on its own: the long-context step is per request.
    direct_usd = sum(
        (
            table.cost_usd(
                CallUsage("claude-haiku-5-5", input_tokens=tokens_in, output_tokens=tokens_out)
            )
            or Decimal(0)
            for tokens_in, tokens_out in billed
        ),
        Decimal(0),
    )
    assert direct_usd is not None
    print(
        f"the job's own record of its batch: {recorded['calls']} calls, "
        f"{recorded['input_tokens']:,} input + {recorded['output_tokens']:,} output tokens "
        f"(as the fake counts them), ${recorded['cost_usd']:.6f} at batch prices = "
        f"{Decimal(str(recorded['cost_usd'])) / direct_usd:.3f} × ${direct_usd:.6f}, the same "
        "tokens at the direct price"
    )


def estimated_output(request: Any) -> int:
    """Output tokens by the estimator's assumptions (the fake's answers are random words)."""
    if request.purpose in ("quick_pass", "soulprint_v2"):
        return SOULPRINT_OUTPUT_TOKENS
    return min(FACT_OUTPUT_MAX_TOKENS, int(-(-len(request.text) // 4) * FACT_OUTPUT_RATIO))


def check_no_text_sent_twice(
    requests: list[Any], chunks: list[dict[str, Any]], result: dict[str, Any]
) -> None:
    excerpts = [
        text
        for request in requests
        if request.purpose == "fact_extraction"
        for text in EXCERPT.findall(request.text)
    ]
    sent = Counter(excerpts)
    # What the full pass must send for each stored chunk: its content without the overlap it
    # repeats from the previous chunk of the same conversation (recomputed from the rows).
    expected: dict[str, str] = {}
    previous: dict[str, Any] | None = None
    for chunk in chunks:
        content = chunk["content"]
        header = content.index("\n") + 1
        if previous is not None and previous["conversation_id"] == chunk["conversation_id"]:
            label = re.match(r"(User|Assistant) \(continued\): ", content[header:])
            body_start = header + (label.end() if label else 0)
            overlap = overlap_length(previous["content"], content, body_start)
            expected[content[:body_start] + content[body_start + overlap :]] = content
        else:
            expected[content] = content
        previous = chunk
    repeated = [text for text, n in sent.items() if n > 1]
    unknown = [text for text in sent if text not in expected]
    sent_chars = sum(len(text) for text in excerpts)
    whole_chars = sum(len(expected[text]) for text in sent if text in expected)
    left_out = result["full_pass"].get("left_out", {})
    print(
        f"fact-extraction excerpts sent: {len(excerpts)} of {len(chunks)} stored chunks "
        f"({result['full_pass'].get('chunks_read')} planned; "
        f"{left_out.get('chunks', 0)} left out by SOULWORKER_FULL_PASS_TOKEN_BUDGET)"
    )
    print(f"excerpts sent more than once: {len(repeated)}")
    print(f"excerpts that are not a stored chunk minus its overlap: {len(unknown)}")
    print(
        f"characters sent: {sent_chars:,}; the same chunks whole would have been "
        f"{whole_chars:,} ({(whole_chars - sent_chars) / max(whole_chars, 1):.1%} saved by "
        "stripping overlaps)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
