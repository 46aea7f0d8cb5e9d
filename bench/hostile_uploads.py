"""One job can never hurt another: a hostile upload beside a normal one, in one daemon process.

For each scenario this script queues two jobs, a normal export (default: the 1 GB ZIP-shards
export of ``bench/pipeline_throughput.py``) and a hostile or extreme one, and runs them together
in one ``soulworker run --drain`` (``SOULWORKER_CONCURRENCY=2``, the default lease) under
``/usr/bin/time -v`` with the model stages off and ``SOULWORKER_LOOP_STALL_MONITOR=on``:

- ``zeros``: ``[0,0,0,…]`` of ``--zeros`` bytes (default 1 GB): no conversation at all;
- ``tiny``: ``--tiny`` minimal conversations (default 1,000,000), a valid export;
- ``zip-entries``: a ZIP with ``--zip-entries`` members (default 300,000) besides a small
  ``conversations.json``;
- ``giant`` (not run by default): ``--giant-count`` conversations of ``--giant-mb`` MB each
  (default 10 of 20 MB), the largest single steps a parse takes.

``--tree PATH`` runs the daemon from another checkout (to compare designs: it must have the
stall monitor to report stalls).

It reports, per scenario: the daemon's peak RSS (``/usr/bin/time``) and the process tree's
(daemon + scan helpers, sampled every 20 ms), the longest event-loop stall each job saw (the
daemon's own monitor, from its ``event loop stall`` log lines), and how each job ended: status,
attempt, error code, seconds.

    python bench/hostile_uploads.py [--scenarios zeros,tiny,zip-entries] [--runs 1]

Targets (issue 11): peak RSS under 200 MB, longest stall under 1 s, the normal job succeeding
on attempt 1 beside each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.generate_export import parse_size  # noqa: E402
from bench.pipeline_throughput import OUT, TreeRss, export_file  # noqa: E402
from bench.scratch_import import worker_env  # noqa: E402
from soulworker.testing import postgres as pg  # noqa: E402
from soulworker.testing.export_generator import ExportForm  # noqa: E402
from soulworker.testing.hostile_exports import (  # noqa: E402
    write_giant_conversations,
    write_many_entry_zip,
    write_tiny_conversations,
    write_zeros,
)
from soulworker.testing.storage_server import StorageServer  # noqa: E402


def hostile_file(scenario: str, args: argparse.Namespace) -> Path:
    """The hostile upload of ``scenario``, generated once into bench/out."""
    makers: dict[str, tuple[str, Callable[[Path], Path]]] = {
        "zeros": (f"hostile-zeros-{args.zeros}.json", lambda p: write_zeros(p, args.zeros)),
        "tiny": (
            f"hostile-tiny-{args.tiny}.json",
            lambda p: write_tiny_conversations(p, args.tiny),
        ),
        "zip-entries": (
            f"hostile-entries-{args.zip_entries}.zip",
            lambda p: write_many_entry_zip(p, args.zip_entries),
        ),
        "giant": (
            f"hostile-giant-{args.giant_count}x{args.giant_mb}MB.json",
            lambda p: write_giant_conversations(p, args.giant_count, args.giant_mb * 10**6),
        ),
    }
    if scenario not in makers:
        raise SystemExit(f"unknown scenario {scenario!r}")
    name, maker = makers[scenario]
    path = OUT / name
    if not path.exists():
        print(f"generating {path.name} …", flush=True)
        partial = path.with_name(path.name + ".partial")
        maker(partial)
        partial.rename(path)
    return path


def queue_job(conn: psycopg.Connection[Any], storage: StorageServer, export: Path) -> uuid.UUID:
    user = uuid.uuid4()
    name = f"{user}/{export.name}"
    storage.put_file("imports", name, export)
    row = conn.execute(
        "insert into import_jobs (user_id, storage_path) values (%s, %s) returning id",
        (user, f"imports/{name}"),
    ).fetchone()
    assert row is not None
    job_id: uuid.UUID = row["id"]
    return job_id


def run_scenario(
    good: Path,
    hostile: Path,
    server_url: str,
    storage: StorageServer,
    extra: dict[str, str],
    tree: Path = REPO_ROOT,
) -> dict[str, Any]:
    with pg.scratch_database(server_url) as url:
        env = worker_env(
            url,
            storage,
            SOULWORKER_MODEL_STAGES="off",
            SOULWORKER_LOG_FORMAT="json",
            SOULWORKER_LOG_LEVEL="info",
            SOULWORKER_CONCURRENCY="2",
            SOULWORKER_LOOP_STALL_MONITOR="on",
            **extra,
        )
        subprocess.run(
            [sys.executable, "-m", "soulworker", "migrate"],
            env=env,
            cwd=tree,
            check=True,
            capture_output=True,
        )
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            good_id = queue_job(conn, storage, good)
            hostile_id = queue_job(conn, storage, hostile)
        command = ["/usr/bin/time", "-v", sys.executable, "-m", "soulworker", "run", "--drain"]
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        with TreeRss(process.pid) as sampler:
            stdout, stderr = process.communicate()
        wall = time.perf_counter() - started
        if process.returncode != 0:
            raise SystemExit(f"the worker failed:\n{stderr.decode(errors='replace')[-3000:]}")
        rss = re.search(rb"Maximum resident set size \(kbytes\): (\d+)", stderr)
        stalls: dict[str, float] = {}
        for line in (stdout + stderr).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "event loop stall":
                job = str(event.get("job_id"))
                stalls[job] = max(stalls.get(job, 0.0), float(event["max_stall_seconds"]))
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            jobs = {
                row["id"]: row
                for row in conn.execute(
                    "select id, status, attempt, errors, result, "
                    "extract(epoch from finished_at - created_at) as seconds from import_jobs"
                ).fetchall()
            }

        def outcome(job_id: uuid.UUID) -> dict[str, Any]:
            row = jobs[job_id]
            errors = row["errors"] or []
            return {
                "status": row["status"],
                "attempt": row["attempt"],
                "error": errors[-1]["code"] if errors else None,
                "seconds": round(float(row["seconds"]), 1),
                "max_stall_s": round(stalls.get(str(job_id), float("nan")), 3),
                "conversations": (row["result"] or {}).get("conversations"),
            }

        return {
            "peak_rss_mib": int(rss.group(1)) / 1024 if rss else float("nan"),
            "tree_peak_rss_mib": sampler.peak_kib / 1024,
            "wall_seconds": wall,
            "good": outcome(good_id),
            "hostile": outcome(hostile_id),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="zeros,tiny,zip-entries")
    parser.add_argument("--good", default="1GB", help="size of the normal export")
    parser.add_argument("--good-form", default="zip-shards", choices=[f.value for f in ExportForm])
    parser.add_argument("--zeros", type=parse_size, default=parse_size("1GB"))
    parser.add_argument("--tiny", type=int, default=1_000_000)
    parser.add_argument("--zip-entries", type=int, default=300_000)
    parser.add_argument("--giant-count", type=int, default=10)
    parser.add_argument("--giant-mb", type=int, default=20)
    parser.add_argument("--tree", type=Path, default=REPO_ROOT, help="checkout to run")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--env", action="append", default=[], help="extra NAME=VALUE for the worker"
    )
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    server_url = args.database_url or pg.find_server()
    if server_url is None:
        print(pg.HOW_TO_RUN, file=sys.stderr)
        return 2
    extra = dict(item.split("=", 1) for item in args.env)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"date: {datetime.now(UTC):%Y-%m-%d}")
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}; load average before: {os.getloadavg()}"
    )
    good = export_file(parse_size(args.good), ExportForm(args.good_form), 1)
    rows = []
    with StorageServer() as storage:
        for scenario in args.scenarios.split(","):
            hostile = hostile_file(scenario, args)
            runs = []
            for _ in range(args.runs):
                result = run_scenario(good, hostile, server_url, storage, extra, args.tree)
                print(scenario, result, flush=True)
                runs.append(result)
            rows.append((scenario, hostile, runs))
    print(f"load average after: {os.getloadavg()}")
    print()
    print(
        "| hostile upload | file MB | peak RSS MiB (daemon) | peak RSS MiB (tree) | "
        "longest stall s (good job / hostile job) | good job | hostile job |"
    )
    print("|---|---|---|---|---|---|---|")
    for scenario, hostile, runs in rows:
        med = statistics.median

        def job(key: str, runs: list[dict[str, Any]] = runs) -> str:
            first = runs[0][key]
            text = f"{first['status']}, attempt {first['attempt']}"
            if first["error"]:
                text += f", {first['error']}"
            return text + f", {statistics.median(r[key]['seconds'] for r in runs):.1f} s"

        print(
            f"| {scenario} | {hostile.stat().st_size / 1e6:.1f} | "
            f"{med(r['peak_rss_mib'] for r in runs):.1f} | "
            f"{med(r['tree_peak_rss_mib'] for r in runs):.1f} | "
            f"{max(r['good']['max_stall_s'] for r in runs):.3f} / "
            f"{max(r['hostile']['max_stall_s'] for r in runs):.3f} | "
            f"{job('good')} | {job('hostile')} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
