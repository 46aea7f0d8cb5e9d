"""Interleaved A/B of the non-model pipeline between this checkout and another one.

The same generated export (``bench/pipeline_throughput.py``'s, cached in bench/out) is imported
by ``soulworker run --drain`` from each checkout in turn, alternating which goes first, with the
model stages off. For each run: the job's seconds from claim to success, the parse stage's
seconds, and the daemon's CPU seconds (user + system, from ``/usr/bin/time``, start-up included:
less sensitive than wall time to other load on the machine). Medians per checkout.

    python bench/compare_trees.py --other /path/to/checkout [--form json] [--pairs 8]

The other checkout runs with this checkout's Python environment, so it must need no other
packages (e.g. ``git archive <commit> | tar -x -C /tmp/other``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.generate_export import parse_size  # noqa: E402
from bench.pipeline_throughput import OUT, export_file  # noqa: E402
from bench.scratch_import import worker_env  # noqa: E402
from soulworker.testing import postgres as pg  # noqa: E402
from soulworker.testing.export_generator import ExportForm  # noqa: E402
from soulworker.testing.storage_server import StorageServer  # noqa: E402


def run_job(
    tree: Path, export: Path, server_url: str, storage: StorageServer, number: int
) -> dict[str, float]:
    with pg.scratch_database(server_url) as url:
        env = worker_env(url, storage, SOULWORKER_MODEL_STAGES="off")
        subprocess.run(
            [sys.executable, "-m", "soulworker", "migrate"],
            env=env,
            cwd=tree,
            check=True,
            capture_output=True,
        )
        user = f"00000000-0000-4000-8000-{number:012d}"
        storage.put_file("imports", f"{user}/{export.name}", export)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            conn.execute(
                "insert into import_jobs (user_id, storage_path) values (%s, %s)",
                (user, f"imports/{user}/{export.name}"),
            )
        command = ["/usr/bin/time", "-v", sys.executable, "-m", "soulworker", "run", "--drain"]
        done = subprocess.run(command, env=env, cwd=tree, capture_output=True, check=False)
        stderr = done.stderr.decode(errors="replace")
        if done.returncode != 0:
            raise SystemExit(f"the worker failed:\n{stderr[-3000:]}")

        def seconds(label: str) -> float:
            match = re.search(rf"{label} \(seconds\): ([\d.]+)", stderr)
            return float(match.group(1)) if match else float("nan")

        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            job = conn.execute(
                "select status, last_error, result, "
                "extract(epoch from finished_at - started_at) as seconds from import_jobs"
            ).fetchone()
        assert job is not None
        if job["status"] != "succeeded":
            raise SystemExit(f"the job did not succeed: {job['last_error']}")
        return {
            "job_s": float(job["seconds"]),
            "parse_s": float(job["result"]["stage_seconds"]["parse"]),
            "cpu_s": seconds("User time") + seconds("System time"),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", type=Path, required=True, help="the checkout to compare")
    parser.add_argument("--size", default="100MB")
    parser.add_argument("--form", default="zip-shards", choices=[f.value for f in ExportForm])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    server_url = args.database_url or pg.find_server()
    if server_url is None:
        print(pg.HOW_TO_RUN, file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    export = export_file(parse_size(args.size), ExportForm(args.form), 1)
    trees = {"this": REPO_ROOT, "other": args.other.resolve()}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    print(f"date: {datetime.now(UTC):%Y-%m-%d}; {export.name}; load before: {os.getloadavg()}")
    with StorageServer() as storage:
        for pair in range(args.pairs):
            order = list(trees) if pair % 2 == 0 else list(reversed(trees))
            for name in order:
                number = pair * 2 + (name == "other")
                result = run_job(trees[name], export, server_url, storage, number)
                runs[name].append(result)
                print(name, {key: round(value, 2) for key, value in result.items()}, flush=True)
    print(f"load after: {os.getloadavg()}")
    print()
    print("| checkout | pairs | job s (median, range) | parse s | daemon CPU s |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():

        def median(key: str, results: list[dict[str, float]] = results) -> float:
            return round(statistics.median(r[key] for r in results), 2)

        low = min(r["job_s"] for r in results)
        high = max(r["job_s"] for r in results)
        print(
            f"| {name} ({trees[name]}) | {len(results)} | {median('job_s')} ({low:.2f}-{high:.2f}) "
            f"| {median('parse_s')} | {median('cpu_s')} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
