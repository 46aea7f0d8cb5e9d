"""An HNSW index for one user's search, or an exact scan of that user's rows? (docs/embeddings.md)

On pgserver's PostgreSQL 16 with pgvector, a table shaped like ``conversation_chunks`` (a
``user_id`` index, a 1024-d ``embedding``) gets ``--rows`` random unit vectors spread evenly over
``--users`` users. For ``--queries`` random unit questions, each for a random user, it times:

1. **exact**: ``where user_id = $1 order by embedding <=> $2 limit 10`` through the ``user_id``
   index (no vector index): the answer every other row is compared with;
2. **hnsw**: the same query forced through an HNSW index (``vector_cosine_ops``, defaults m=16,
   ef_construction=64, ``hnsw.ef_search`` 40), the ``user_id`` index dropped and seq scans off;
3. **hnsw + iterative scan**: the same with ``hnsw.iterative_scan = relaxed_order`` (pgvector
   0.8+), which keeps scanning until the filter has let ``limit`` rows through.

For each: the median and p95 latency, the mean number of rows returned (of 10) and the recall
of the exact top 10. It also times inserting and updating ``--write-rows`` rows without and with
the HNSW index: the slowdown a bulk embed stage would pay with the index in place.

    python bench/hnsw_filter.py [--rows 100000] [--users 100] [--queries 50] [--write-rows 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from soulworker.local.embedded_postgres import (  # noqa: E402
    EmbeddedPostgres,
    _pgserver_bindir,
    find_postgres_binaries,
)

DIMENSIONS = 1024
TOP = 10
# One unit vector per row, generated in the server (a Python round trip of 100k x 1024 floats
# would measure the client). The `0 * id` makes the inner series depend on the row.
RANDOM_ROWS = """
insert into chunks (user_id, embedding)
select id %% %(users)s::int, l2_normalize(v.a::vector)
from generate_series(%(first)s::int, %(last)s::int) as id
cross join lateral (
    select array_agg(random() - 0.5) as a from generate_series(1, 1024 + 0 * id)
) as v
"""
UPDATE_ROWS = """
update chunks set embedding = l2_normalize(v.a::vector)
from (select id from chunks order by id limit %(n)s::int) as pick
cross join lateral (
    select array_agg(random() - 0.5) as a from generate_series(1, 1024 + 0 * pick.id)
) as v
where chunks.id = pick.id
"""
QUERY = "select id from chunks where user_id = %s order by embedding <=> %s::vector limit " + str(
    TOP
)


def unit_vector(rng: random.Random) -> str:
    values = [rng.gauss(0.0, 1.0) for _ in range(DIMENSIONS)]
    norm = sum(v * v for v in values) ** 0.5
    return "[" + ",".join(f"{v / norm:.6f}" for v in values) + "]"


def timed(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> float:
    started = time.perf_counter()
    conn.execute(sql, params)
    return time.perf_counter() - started


def run_queries(
    conn: psycopg.Connection[Any], questions: list[tuple[int, str]]
) -> tuple[list[float], list[list[int]]]:
    seconds, answers = [], []
    for user, vector in questions:
        started = time.perf_counter()
        rows = conn.execute(QUERY, (user, vector)).fetchall()
        seconds.append(time.perf_counter() - started)
        answers.append([row[0] for row in rows])
    return seconds, answers


def summarize(
    name: str, seconds: list[float], answers: list[list[int]], exact: list[list[int]]
) -> dict[str, Any]:
    ordered = sorted(seconds)
    recall = [len(set(a) & set(e)) / len(e) for a, e in zip(answers, exact, strict=True)]
    return {
        "method": name,
        "median_ms": round(statistics.median(seconds) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
        "rows_returned": round(statistics.mean(len(a) for a in answers), 1),
        "recall_at_10": round(statistics.mean(recall), 3),
    }


def writes(conn: psycopg.Connection[Any], first: int, n: int, users: int) -> tuple[float, float]:
    """Seconds to insert ``n`` rows, then to update ``n`` rows."""
    insert = timed(conn, RANDOM_ROWS, {"users": users, "first": first, "last": first + n - 1})
    update = timed(conn, UPDATE_ROWS, {"n": n})
    return insert, update


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--write-rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    bindir = _pgserver_bindir()
    binaries = find_postgres_binaries([("pgserver", bindir)]) if bindir else None
    if binaries is None:
        print("pgserver is not installed: pip install -e '.[dev]' brings it", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    questions = [(rng.randrange(args.users), unit_vector(rng)) for _ in range(args.queries)]
    server = EmbeddedPostgres(binaries=binaries)
    url = server.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create extension vector")
            row = conn.execute(
                "select extversion from pg_extension where extname = 'vector'"
            ).fetchone()
            assert row is not None
            print(f"date: {datetime.now(UTC):%Y-%m-%d}")
            print(
                f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus; "
                f"PostgreSQL {binaries.major}, pgvector {row[0]}; {args.rows:,} rows, "
                f"{args.users} users, {DIMENSIONS}-d, {args.queries} queries"
            )
            conn.execute("set maintenance_work_mem = '512MB'")
            conn.execute(
                "create table chunks (id bigint generated always as identity primary key, "
                f"user_id int not null, embedding vector({DIMENSIONS}))"
            )
            conn.execute("create index chunks_user on chunks (user_id)")
            load = timed(conn, RANDOM_ROWS, {"users": args.users, "first": 1, "last": args.rows})
            conn.execute("vacuum analyze chunks")
            print(f"loaded {args.rows:,} rows in {load:.1f} s")

            plain_insert, plain_update = writes(conn, args.rows + 1, args.write_rows, args.users)

            seconds, exact = run_queries(conn, questions)
            results = [summarize("exact (user_id index)", seconds, exact, exact)]

            build = timed(
                conn, "create index chunks_hnsw on chunks using hnsw (embedding vector_cosine_ops)"
            )
            print(f"HNSW build: {build:.1f} s")
            hnsw_insert, hnsw_update = writes(
                conn, args.rows + args.write_rows + 1, args.write_rows, args.users
            )

            conn.execute("drop index chunks_user")
            conn.execute("set enable_seqscan = off")
            conn.execute("analyze chunks")
            seconds, answers = run_queries(conn, questions)
            results.append(summarize("hnsw, filter after", seconds, answers, exact))
            try:
                conn.execute("set hnsw.iterative_scan = relaxed_order")
            except psycopg.Error as exc:
                print(f"no iterative scan in this pgvector: {exc}")
            else:
                seconds, answers = run_queries(conn, questions)
                results.append(summarize("hnsw + iterative_scan", seconds, answers, exact))
    finally:
        server.stop()

    print()
    print("| method | median ms | p95 ms | rows returned (of 10) | recall@10 |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['method']} | {r['median_ms']} | {r['p95_ms']} | {r['rows_returned']} | "
            f"{r['recall_at_10']} |"
        )
    print()
    n = args.write_rows
    print(f"| {n:,} rows | without HNSW s | with HNSW s | slowdown |")
    print("|---|---|---|---|")
    print(
        f"| insert | {plain_insert:.2f} | {hnsw_insert:.2f} | {hnsw_insert / plain_insert:.1f}x |"
    )
    print(
        f"| update | {plain_update:.2f} | {hnsw_update:.2f} | {hnsw_update / plain_update:.1f}x |"
    )
    print(f"HNSW build over {args.rows:,} rows: {build:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
