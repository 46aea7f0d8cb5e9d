"""The floor under the pipeline's throughput: the work no implementation of it can skip.

``bench/pipeline_throughput.py`` compares the whole non-model pipeline with bare ``ijson.items``
(the target is a ratio of at least 0.6; BENCHMARKS.md). This script measures, in the same run and
on the same export, how fast the pipeline could possibly be: the steps every implementation must do,
with everything else taken away.

* **ijson**: bare ``ijson.items(f, "item", use_float=True)`` over the export's JSON (for a ZIP,
  over its conversation members, decompression included): the baseline of the ratio, exactly as
  ``bench/pipeline_throughput.py`` times it.
* **ijson + COPY**: the same loop, sending each conversation's chunks into
  ``conversation_chunks`` with the real ``ChunkWriter`` in one transaction, as the parse stage
  does. The chunks were made before the clock started (real linearizer and chunker), so
  linearizing, chunking, sampling, the structure guard, limits and progress cost nothing here.
* **download + ijson + COPY**: the above after downloading the export from the fake Supabase
  Storage with the real download code, as a job does.

``bare / floor`` is the best ratio any implementation of the pipeline could reach on this machine,
with every parsing rule free. Next to it, the same run times what the floor leaves out: the
real linearizer, chunker, quick-pass sampler and persona collector over the same conversations
(ijson's time excluded), which is what the rules cost on top of the floor. Medians over
``--runs`` runs, interleaved.

    python bench/pipeline_floor.py [--size 100MB] [--form json|zip-shards] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.generate_export import parse_size  # noqa: E402
from bench.pipeline_throughput import (  # noqa: E402
    OUT,
    bare_ijson_seconds,
    export_file,
    export_items,
    json_bytes_of,
)
from bench.scratch_import import prepare_job, worker_env  # noqa: E402
from soulworker.conversations.chunker import chunk_conversation  # noqa: E402
from soulworker.conversations.conversation import Chunk  # noqa: E402
from soulworker.conversations.linearize import linearize  # noqa: E402
from soulworker.llm.models import sample_hard_cap_chars  # noqa: E402
from soulworker.pipeline.chunk_writer import ChunkWriter  # noqa: E402
from soulworker.settings import Settings  # noqa: E402
from soulworker.soulprint.persona import PersonaCollector  # noqa: E402
from soulworker.soulprint.sampler import QuickPassSampler  # noqa: E402
from soulworker.storage.download import StorageConfig, download_export  # noqa: E402
from soulworker.storage.path import parse_storage_path  # noqa: E402
from soulworker.testing import postgres as pg  # noqa: E402
from soulworker.testing.export_generator import ExportForm  # noqa: E402
from soulworker.testing.storage_server import FAKE_SERVICE_JWT, StorageServer  # noqa: E402


def rules_seconds(export: Path) -> dict[str, float]:
    """Seconds spent in each per-conversation step of the parse stage, ijson's time excluded."""
    settings = Settings()
    now = datetime.now(UTC)
    sampler = QuickPassSampler(
        budget_chars=settings.quick_pass_sample_chars,
        hard_cap_chars=sample_hard_cap_chars(settings.quick_pass_model),
    )
    persona = PersonaCollector(budget_chars=settings.persona_signal_chars)
    spent = dict.fromkeys(("linearize", "chunk", "sample", "persona"), 0.0)
    clock = time.perf_counter
    for raw in export_items(export):
        started = clock()
        conversation = linearize(raw)
        linearized = clock()
        persona.add_conversation(conversation)
        collected = clock()
        spent["linearize"] += linearized - started
        spent["persona"] += collected - linearized
        if conversation.messages:
            chunk_conversation(conversation, now=now, fallback_created_at=now)
            chunked = clock()
            sampler.offer(conversation)
            spent["chunk"] += chunked - collected
            spent["sample"] += clock() - chunked
    return spent


def precomputed_chunks(export: Path) -> list[list[Chunk]]:
    """Each top-level item's chunks, made by the real linearizer and chunker (not timed)."""
    now = datetime.now(UTC)
    chunks: list[list[Chunk]] = []
    for raw in export_items(export):
        conversation = linearize(raw)
        chunks.append(
            chunk_conversation(conversation, now=now, fallback_created_at=now)
            if conversation.messages
            else []
        )
    return chunks


async def ijson_and_copy(path: Path, url: str, job: uuid.UUID, user: uuid.UUID,
                         chunks: list[list[Chunk]]) -> float:  # fmt: skip
    """Bare ijson, each item's ready-made chunks COPYed in the parse stage's way."""
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        started = time.perf_counter()
        async with conn.transaction(), ChunkWriter(conn, job_id=job, user_id=user) as writer:
            await writer.start()
            for index, _ in enumerate(export_items(path)):
                await writer.add(chunks[index])
            await writer.flush()
        return time.perf_counter() - started


async def download(storage: StorageServer, storage_path: str, user: uuid.UUID,
                   destination: Path) -> float:  # fmt: skip
    config = StorageConfig(base_url=storage.url, service_key=FAKE_SERVICE_JWT)
    path = parse_storage_path(storage_path, user_id=user)
    started = time.perf_counter()
    await download_export(config, path, destination, max_bytes=1 << 40)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="100MB")
    parser.add_argument("--form", default="json", choices=["json", "zip-shards"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    server_url = pg.find_server()
    if server_url is None:
        print(pg.HOW_TO_RUN, file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    form = ExportForm(args.form)
    export = export_file(parse_size(args.size), form, args.seed)
    mb = json_bytes_of(export) / 1e6
    print(f"date: {datetime.now(UTC):%Y-%m-%d}; export {export.name}, {mb:.1f} MB of JSON")
    chunks = precomputed_chunks(export)
    print(f"{len(chunks):,} items, {sum(map(len, chunks)):,} chunks made before timing")
    bare: list[float] = []
    copy: list[float] = []
    total: list[float] = []
    downloads: list[float] = []
    rules: list[dict[str, float]] = []
    with StorageServer() as storage, tempfile.TemporaryDirectory() as work:
        for _ in range(args.runs):
            with pg.scratch_database(server_url) as url:
                user = prepare_job(worker_env(url, storage), storage, export)
                with psycopg.connect(url) as conn:
                    row = conn.execute("select id, storage_path from import_jobs").fetchone()
                assert row is not None
                job, storage_path = row
                local = Path(work) / export.name
                bare.append(bare_ijson_seconds(export)[0])
                rules.append(rules_seconds(export))
                copy.append(asyncio.run(ijson_and_copy(export, url, job, user, chunks)))
                with psycopg.connect(url) as conn:  # as in a fresh job: nothing to replace
                    conn.execute("delete from conversation_chunks")
                downloaded = asyncio.run(download(storage, storage_path, user, local))
                downloads.append(downloaded)
                copied = asyncio.run(ijson_and_copy(local, url, job, user, chunks))
                total.append(downloaded + copied)
        bare.append(bare_ijson_seconds(export)[0])

    def line(name: str, seconds: list[float]) -> None:
        median = statistics.median(seconds)
        ratio = statistics.median(bare) / median
        print(f"| {name} | {median:.2f} | {mb / median:.1f} | {ratio:.2f} |")

    print()
    print("| work | s (median) | MB/s | bare ijson / this |")
    print("|---|---|---|---|")
    line("bare ijson", bare)
    line("ijson + COPY of the chunks", copy)
    line("download + ijson + COPY", total)
    print(f"\ndownload alone: median {statistics.median(downloads):.2f} s")
    steps = {step: statistics.median(run[step] for run in rules) for step in rules[0]}
    shown = ", ".join(f"{step} {seconds:.2f}" for step, seconds in steps.items())
    spent = statistics.median(sum(run.values()) for run in rules)
    with_rules = statistics.median(total) + spent
    print(f"the rules the floor leaves out (s): {shown}; together {spent:.2f}")
    print(
        f"floor + rules: {with_rules:.2f} s, ratio {statistics.median(bare) / with_rules:.2f} "
        "(the pipeline's best, were nothing else to cost anything)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
