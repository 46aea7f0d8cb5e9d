"""Claim → ``quick_ready`` with the parse following the download, against the sequential path.

For each export (default: 1 GB of conversation JSON as a bare ``conversations.json``, and the
same conversations as a sharded ZIP) this script serves the file from the fake Supabase Storage
throttled to ``--rate`` (default 60 MB/s: Storage to a Render instance), runs one job through
``soulworker run`` with the model stages on against the fake Messages API answering after a
fixed ``--quick-pass-latency``, and measures, from the job's claim (``import_jobs.started_at``) to
the moment ``user_profiles.import_status`` reads ``quick_ready`` (polled every 20 ms, on the
database's clock). Each run does both paths, interleaved, in a fresh database each:
``SOULWORKER_PARSE_DURING_DOWNLOAD=off`` (download, then parse, then the quick pass) and ``=on``.
The worker is killed once the job is ``quick_ready`` (the later stages are not measured here).

Reported, medians over ``--runs``: claim → quick_ready for both paths, the sequential path's
download, parse and quick-pass seconds (from the job result), the target
``1.15 × max(download, parse) + quick pass`` (both from the sequential run of the same pair), the
daemon's peak RSS (``VmHWM``) and the peaks of its process tree (daemon, scan helper, download
helper; sampled): summed RSS, and summed PSS, which counts a page shared between them once.

    python bench/parse_during_download.py [--sizes 1GB] [--forms json,zip-shards] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.generate_export import parse_size  # noqa: E402
from bench.pipeline_throughput import OUT, TreeRss, export_file, json_bytes_of  # noqa: E402
from bench.scratch_import import prepare_job, worker_env  # noqa: E402
from soulworker.testing import postgres as pg  # noqa: E402
from soulworker.testing.export_generator import ExportForm  # noqa: E402
from soulworker.testing.messages_api import FakeMessagesAPI  # noqa: E402
from soulworker.testing.storage_server import StorageServer  # noqa: E402

POLL_SECONDS = 0.02
TIMEOUT_SECONDS = 900.0
FAKE_KEY = "sk-ant-bench-0123456789abcdef"

QUICK_READY = """
select extract(epoch from clock_timestamp() - j.started_at) as seconds, j.status, j.last_error
from import_jobs j left join user_profiles p on p.user_id = j.user_id
where j.user_id = %s and (p.import_status = 'quick_ready' or j.status = 'failed')
"""


def peak_rss_mib(pid: int) -> float:
    """The process's own peak RSS so far (``VmHWM``)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_job(
    export: Path, server_url: str, storage: StorageServer, api: FakeMessagesAPI, *, follow: bool
) -> dict[str, Any]:
    """One job until ``quick_ready``; its timings and memory."""
    with pg.scratch_database(server_url) as url:
        env = worker_env(
            url,
            storage,
            SOULWORKER_MODEL_STAGES="on",
            ANTHROPIC_API_KEY=FAKE_KEY,
            ANTHROPIC_BASE_URL=api.base_url,
            SOULWORKER_PARSE_DURING_DOWNLOAD="on" if follow else "off",
            SOULWORKER_LOG_FORMAT="json",
        )
        user = prepare_job(env, storage, export)
        log = (OUT / "parse_during_download.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "soulworker", "run"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            with (
                TreeRss(process.pid) as tree,
                psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn,
            ):
                deadline = time.monotonic() + TIMEOUT_SECONDS
                while True:
                    row = conn.execute(QUICK_READY, (user,)).fetchone()
                    if row is not None:
                        break
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the worker stopped or timed out before quick_ready")
                    time.sleep(POLL_SECONDS)
                daemon_peak = peak_rss_mib(process.pid)
            if row["status"] != "running":
                raise SystemExit(f"the job did not reach quick_ready: {row['last_error']}")
        finally:
            process.kill()  # ours; its scan helper has exited with the parse
            process.wait()
            log.close()
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            job = conn.execute("select result from import_jobs").fetchone()
        assert job is not None
        stages = job["result"]["stage_seconds"]
        return {
            "quick_ready_s": float(row["seconds"]),
            "download_s": stages["download"],
            "parse_s": stages["parse"],
            "quick_pass_s": stages["quick_pass"],
            "peak_rss_mib": daemon_peak,
            "tree_peak_rss_mib": tree.peak_kib / 1024,
            "tree_peak_pss_mib": tree.peak_pss_kib / 1024,
            "chunks": job["result"]["chunks"],
        }


def median(runs: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(run[key] for run in runs)), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1GB")
    parser.add_argument("--forms", default="json,zip-shards")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", default="60MB", help="Storage's bytes per second")
    parser.add_argument("--quick-pass-latency", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    server_url = args.database_url or pg.find_server()
    if server_url is None:
        print(pg.HOW_TO_RUN, file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    rate = parse_size(args.rate)
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus (shared), "
        f"Python {platform.python_version()}; Storage at {rate / 1e6:.0f} MB/s, "
        f"quick-pass latency {args.quick_pass_latency} s"
    )
    rows = []
    with (
        StorageServer() as storage,
        FakeMessagesAPI(latency_seconds=args.quick_pass_latency) as api,
    ):
        storage.throttle(rate)
        for form in (ExportForm(name) for name in args.forms.split(",")):
            for size in (parse_size(text) for text in args.sizes.split(",")):
                export = export_file(size, form, args.seed)
                sequential: list[dict[str, Any]] = []
                following: list[dict[str, Any]] = []
                for _ in range(args.runs):
                    sequential.append(one_job(export, server_url, storage, api, follow=False))
                    following.append(one_job(export, server_url, storage, api, follow=True))
                    print({"off": sequential[-1], "on": following[-1]}, flush=True)
                targets = [
                    1.15 * max(run["download_s"], run["parse_s"]) + run["quick_pass_s"]
                    for run in sequential
                ]
                row = {
                    "export": f"{form.value}, {json_bytes_of(export) / 1e6:.0f} MB JSON, "
                    f"{export.stat().st_size / 1e6:.0f} MB file",
                    "download_s": median(sequential, "download_s"),
                    "parse_s": median(sequential, "parse_s"),
                    "quick_pass_s": median(sequential, "quick_pass_s"),
                    "off_s": median(sequential, "quick_ready_s"),
                    "on_s": median(following, "quick_ready_s"),
                    "target_s": round(statistics.median(targets), 2),
                    "off_rss": median(sequential, "peak_rss_mib"),
                    "on_rss": median(following, "peak_rss_mib"),
                    "off_tree_rss": median(sequential, "tree_peak_rss_mib"),
                    "on_tree_rss": median(following, "tree_peak_rss_mib"),
                    "off_tree_pss": median(sequential, "tree_peak_pss_mib"),
                    "on_tree_pss": median(following, "tree_peak_pss_mib"),
                    "on_tree_pss_max": max(run["tree_peak_pss_mib"] for run in following),
                    "on_tree_rss_max": max(run["tree_peak_rss_mib"] for run in following),
                    "runs": args.runs,
                }
                row["ratio"] = round(row["on_s"] / row["off_s"], 2)
                rows.append(row)
                print(row, flush=True)
    print()
    print(
        "| export | download s | parse s | quick pass s | claim → quick_ready, sequential s | "
        "claim → quick_ready, parse during download s | on / off | target s | "
        "peak RSS MiB off / on (daemon) | peak RSS MiB off / on (tree) | "
        "peak PSS MiB off / on (tree) | highest tree sample MiB, RSS / PSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['export']} | {row['download_s']} | {row['parse_s']} | "
            f"{row['quick_pass_s']} | {row['off_s']} | **{row['on_s']}** | {row['ratio']} | "
            f"{row['target_s']} | {row['off_rss']:.0f} / {row['on_rss']:.0f} | "
            f"{row['off_tree_rss']:.0f} / {row['on_tree_rss']:.0f} | "
            f"{row['off_tree_pss']:.0f} / {row['on_tree_pss']:.0f} | "
            f"{row['on_tree_rss_max']:.0f} / {row['on_tree_pss_max']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
