"""Throughput, share of the job and cost of the embed stage (docs/embeddings.md).

For each provider and each ``SOULWORKER_EMBED_CONCURRENCY`` this script runs one job through
``soulworker run --drain`` with the model stages off (download, parse, embed) on a generated
export served by the fake Supabase Storage, into a fresh database on pgserver's PostgreSQL 16 with
pgvector (as tests/acceptance/test_embed_stage.py), against the loopback embeddings server
(soulworker/testing/embeddings_server.py) answering each call after ``--latency-ms``.

It reports chunks embedded per second (the result's ``embeddings`` / ``stage_seconds.embed``),
the embed stage's share of the job's seconds (claim to success), and the cost per 100 MB of
conversation JSON at Titan Text Embeddings V2's list price ($0.02 per million input tokens) from
the result's ``embedding_usage.input_tokens`` (the test server counts characters / 4).

    python bench/embed_throughput.py [--providers openai,bedrock] [--concurrency 1,4,16]
        [--size 100MB] [--bedrock-size 10MB] [--latency-ms 50] [--runs 1]

Bedrock takes one text per call, so at 50 ms and concurrency 1 a 100 MB export (~6,200 chunks)
needs over five minutes of calls alone: ``--bedrock-size`` runs it on a smaller export.
The test server accepts 768 dimensions for Bedrock here (the column's; the real Titan V2
documents 1024/512/256): this measures the stage, not the model.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.generate_export import parse_size  # noqa: E402
from bench.pipeline_throughput import OUT, export_file, json_bytes_of  # noqa: E402
from bench.scratch_import import prepare_job, worker_env  # noqa: E402
from soulworker.local.embedded_postgres import (  # noqa: E402
    EmbeddedPostgres,
    _pgserver_bindir,
    find_postgres_binaries,
)
from soulworker.testing import embeddings_server as kit  # noqa: E402
from soulworker.testing import postgres as pg  # noqa: E402
from soulworker.testing.embeddings_server import EmbeddingsServer  # noqa: E402
from soulworker.testing.export_generator import ExportForm  # noqa: E402
from soulworker.testing.storage_server import StorageServer  # noqa: E402

TITAN_V2_USD_PER_MTOK = 0.02
"""List price, on demand, December 2026 (docs/embeddings.md, "Cost")."""

BEDROCK_DIMENSIONS = (1024, 768, 512, 256)


def provider_env(provider: str, server: EmbeddingsServer, concurrency: int) -> dict[str, str]:
    common = {"SOULWORKER_EMBED_CONCURRENCY": str(concurrency)}
    if provider == "openai":
        return {
            **common,
            "SOULWORKER_EMBED_PROVIDER": "openai",
            "SOULWORKER_EMBED_ENDPOINT_URL": server.openai_base_url,
            "SOULWORKER_EMBED_API_KEY": kit.FAKE_OPENAI_API_KEY,
        }
    return {
        **common,
        "SOULWORKER_EMBED_PROVIDER": "bedrock",
        "SOULWORKER_EMBED_ENDPOINT_URL": server.base_url,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": kit.FAKE_AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": kit.FAKE_AWS_SECRET_ACCESS_KEY,
    }


def run_job(
    export: Path, server_url: str, storage: StorageServer, settings: dict[str, str]
) -> dict[str, Any]:
    """One job through the daemon into a fresh pgvector database; its result and seconds."""
    with pg.scratch_database(server_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create extension vector")
        env = worker_env(
            url, storage, SOULWORKER_MODEL_STAGES="off", SOULWORKER_LOG_FORMAT="json", **settings
        )
        prepare_job(env, storage, export)
        completed = subprocess.run(
            [sys.executable, "-m", "soulworker", "run", "--drain"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            check=False,
        )
        if completed.returncode != 0:
            raise SystemExit(f"the worker failed:\n{completed.stderr.decode()[-3000:]}")
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            job = conn.execute(
                "select status, last_error, result, extract(epoch from finished_at - started_at) "
                "as seconds from import_jobs"
            ).fetchone()
            missing = conn.execute(
                "select count(*) as n from conversation_chunks where embedding is null"
            ).fetchone()
        assert job is not None
        assert missing is not None
        if job["status"] != "succeeded":
            raise SystemExit(f"the job did not succeed: {job['last_error']}")
        return {
            "job_seconds": float(job["seconds"]),
            "result": job["result"],
            "without_embedding": missing["n"],
        }


def measure(
    provider: str,
    concurrency: int,
    export: Path,
    server_url: str,
    storage: StorageServer,
    latency: float,
    runs: int,
) -> dict[str, Any]:
    samples = []
    for _ in range(runs):
        with EmbeddingsServer(
            latency_seconds=latency, bedrock_dimensions=BEDROCK_DIMENSIONS, vector_bank=256
        ) as server:
            samples.append(
                run_job(export, server_url, storage, provider_env(provider, server, concurrency))
            )
    mb = json_bytes_of(export) / 1e6
    first = samples[0]["result"]
    embed_s = statistics.median(s["result"]["stage_seconds"]["embed"] for s in samples)
    job_s = statistics.median(s["job_seconds"] for s in samples)
    tokens = first["embedding_usage"]["input_tokens"]
    return {
        "provider": provider,
        "concurrency": concurrency,
        "json_mb": round(mb, 1),
        "chunks": first["chunks"],
        "embedded": first["embeddings"],
        "without_embedding": samples[0]["without_embedding"],
        "calls": first["embedding_usage"]["calls"],
        "embed_s": round(embed_s, 2),
        "job_s": round(job_s, 2),
        "chunks_per_s": round(first["embeddings"] / embed_s, 1),
        "embed_share": round(embed_s / job_s, 2),
        "usd_per_100mb": round(tokens * TITAN_V2_USD_PER_MTOK / 1e6 * 100 / mb, 4),
        "tokens": tokens,
        "runs": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--providers", default="openai,bedrock")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--size", default="100MB")
    parser.add_argument("--bedrock-size", default="10MB")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    bindir = _pgserver_bindir()
    binaries = find_postgres_binaries([("pgserver", bindir)]) if bindir else None
    if binaries is None:
        print("pgserver is not installed: pip install -e '.[dev]' brings it", file=sys.stderr)
        return 2
    print(f"date: {datetime.now(UTC):%Y-%m-%d}")
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}, latency {args.latency_ms:g} ms per call"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    server = EmbeddedPostgres(binaries=binaries)
    server_url = server.start()
    try:
        with StorageServer() as storage:
            for provider in args.providers.split(","):
                size = parse_size(args.size if provider == "openai" else args.bedrock_size)
                export = export_file(size, ExportForm.JSON, args.seed)
                for concurrency in (int(c) for c in args.concurrency.split(",")):
                    row = measure(
                        provider,
                        concurrency,
                        export,
                        server_url,
                        storage,
                        args.latency_ms / 1000,
                        args.runs,
                    )
                    rows.append(row)
                    print(row, flush=True)
    finally:
        server.stop()
    print()
    print(
        "| provider | concurrency | JSON MB | chunks | embedded | calls | embed s | job s | "
        "chunks/s | embed share of job | USD per 100 MB (Titan V2 list) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['provider']} | {r['concurrency']} | {r['json_mb']} | {r['chunks']:,} | "
            f"{r['embedded']:,} | {r['calls']:,} | {r['embed_s']} | {r['job_s']} | "
            f"{r['chunks_per_s']} | {r['embed_share']:.0%} | ${r['usd_per_100mb']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
