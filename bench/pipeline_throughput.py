"""Memory and throughput of the non-model pipeline, against bare ijson on the same file.

For each size (default 100 MB and 1 GB of conversation JSON) this script

1. generates a realistic export with ``bench/generate_export.py``'s library (cached in bench/out);
2. serves it from the fake Supabase Storage server (soulworker/testing, on loopback);
3. runs one job through ``soulworker run --drain`` under ``/usr/bin/time -v`` with the model
   stages off: download, parse, linearize, chunk, COPY into Postgres;
4. in the same run, right before and after, times bare ``ijson.items(f, "item", use_float=True)``
   over the same file with the same backend (for a ZIP: over its conversation members in order).

It reports the daemon's peak RSS (``/usr/bin/time``: the largest of the process and the helper it
reaps) and the peak of the whole process tree (sampled every 20 ms: daemon + export scan helper),
the pipeline's MB/s (uncompressed JSON bytes / the job's running time, claim to success), bare
ijson's MB/s and the ratio. Medians over ``--runs`` runs.

    python bench/pipeline_throughput.py [--sizes 100MB,1GB] [--form json] [--runs 3]

Targets (BENCHMARKS.md): peak RSS under 200 MB and flat from 100 MB to 1 GB; ratio at least 0.6.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ijson
import psycopg
from psycopg.rows import dict_row

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.generate_export import parse_size  # noqa: E402
from bench.scratch_import import prepare_job, worker_env  # noqa: E402
from soulworker.testing import postgres as pg  # noqa: E402
from soulworker.testing.export_generator import ExportForm, GeneratorConfig, write_export  # noqa: E402
from soulworker.testing.storage_server import StorageServer  # noqa: E402

OUT = REPO_ROOT / "bench" / "out"
SHARD = re.compile(r"^(?:.*/)?conversations(?:-(\d+))?\.json$")


def export_file(size: int, form: ExportForm, seed: int) -> Path:
    """The export for ``size``, generated once and reused."""
    suffix = ".zip" if form.is_zip else ".json"
    path = OUT / f"export-{form.value}-{size}-s{seed}{suffix}"
    if not path.exists():
        print(f"generating {path.name} …", flush=True)
        partial = path.with_suffix(path.suffix + ".partial")
        write_export(partial, GeneratorConfig(seed=seed, target_bytes=size, form=form))
        partial.rename(path)
    return path


def export_items(path: Path) -> Iterator[Any]:
    """Bare ``ijson.items(f, "item", use_float=True)`` over the export's JSON: the file, or a
    ZIP's conversation members in numeric order (decompression included)."""
    backend = ijson.get_backend("yajl2_c")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = sorted(
                (info for info in archive.infolist() if SHARD.match(info.filename)),
                key=lambda info: int(SHARD.match(info.filename).group(1) or -1),  # type: ignore[union-attr]
            )
            for info in members:
                with archive.open(info) as member:
                    yield from backend.items(member, "item", use_float=True)
    else:
        with path.open("rb") as handle:
            yield from backend.items(handle, "item", use_float=True)


def json_bytes_of(path: Path) -> int:
    """Uncompressed bytes of the export's conversation JSON."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist() if SHARD.match(info.filename))
    return path.stat().st_size


def bare_ijson_seconds(path: Path) -> tuple[float, int, int]:
    """(seconds, conversations, JSON bytes) for bare ``ijson.items`` over the export's JSON."""
    started = time.perf_counter()
    items = sum(1 for _ in export_items(path))
    return time.perf_counter() - started, items, json_bytes_of(path)


class TreeRss:
    """Samples the summed RSS of a process and its descendants, and their summed PSS.

    RSS counts a page shared by two processes (the interpreter, libraries) once in each; PSS
    splits it between them, so the tree's PSS is what the machine spends on it."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.peak_pss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss_kib, pss_kib = _tree_memory_kib(self.pid)
            self.peak_kib = max(self.peak_kib, rss_kib)
            self.peak_pss_kib = max(self.peak_pss_kib, pss_kib)
            time.sleep(self.interval)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def _tree_memory_kib(pid: int) -> tuple[int, int]:
    """The summed RSS and PSS (KiB) of ``pid`` and its descendants."""
    rss = pss = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
        except OSError:
            continue
        rss += _kib(r"^VmRSS:\s+(\d+) kB", status)
        pss += _kib(r"^Pss:\s+(\d+) kB", rollup)
        pending.extend(_children(current))
    return rss, pss


def _kib(pattern: str, text: str) -> int:
    match = re.search(pattern, text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def run_pipeline(export: Path, server_url: str, storage: StorageServer) -> dict[str, Any]:
    """One job through the daemon; returns timings and memory."""
    with pg.scratch_database(server_url) as url:
        env = worker_env(url, storage, SOULWORKER_MODEL_STAGES="off", SOULWORKER_LOG_FORMAT="json")
        prepare_job(env, storage, export)
        command = ["/usr/bin/time", "-v", sys.executable, "-m", "soulworker", "run", "--drain"]
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        with TreeRss(process.pid) as tree:
            _, stderr = process.communicate()
        wall = time.perf_counter() - started
        if process.returncode != 0:
            raise SystemExit(f"the worker failed:\n{stderr.decode(errors='replace')[-3000:]}")
        match = re.search(rb"Maximum resident set size \(kbytes\): (\d+)", stderr)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            job = conn.execute(
                "select status, last_error, result, extract(epoch from finished_at - started_at) "
                "as seconds from import_jobs"
            ).fetchone()
        assert job is not None
        if job["status"] != "succeeded":
            raise SystemExit(f"the job did not succeed: {job['last_error']}")
        result = job["result"]
        return {
            "job_seconds": float(job["seconds"]),
            "process_wall_seconds": wall,
            "stage_seconds": result["stage_seconds"],
            "peak_rss_mib": int(match.group(1)) / 1024 if match else float("nan"),
            "tree_peak_rss_mib": tree.peak_kib / 1024,
            "conversations": result["conversations"],
            "chunks": result["chunks"],
            "uncompressed_bytes": result["uncompressed_bytes"],
            "export_bytes": result["export_bytes"],
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100MB,1GB")
    parser.add_argument("--form", default="json", choices=[f.value for f in ExportForm])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    server_url = args.database_url or pg.find_server()
    if server_url is None:
        print(pg.HOW_TO_RUN, file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    form = ExportForm(args.form)
    print(f"date: {datetime.now(UTC):%Y-%m-%d}")
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}, ijson {ijson.__version__} ({ijson.backend})"
    )
    rows = []
    with StorageServer() as storage:
        for size in (parse_size(text) for text in args.sizes.split(",")):
            export = export_file(size, form, args.seed)
            bare: list[float] = []
            runs: list[dict[str, Any]] = []
            for _ in range(args.runs):
                seconds, _, json_bytes = bare_ijson_seconds(export)
                bare.append(seconds)
                runs.append(run_pipeline(export, server_url, storage))
            seconds, _, json_bytes = bare_ijson_seconds(export)
            bare.append(seconds)
            mb = json_bytes / 1e6
            job_s = statistics.median(r["job_seconds"] for r in runs)
            bare_s = statistics.median(bare)
            row = {
                "size": export.name,
                "json_mb": round(mb, 1),
                "file_mb": round(export.stat().st_size / 1e6, 1),
                "conversations": runs[0]["conversations"],
                "chunks": runs[0]["chunks"],
                "pipeline_mb_s": round(mb / job_s, 1),
                "bare_ijson_mb_s": round(mb / bare_s, 1),
                "ratio": round(bare_s / job_s, 2),
                "download_s": round(
                    statistics.median(r["stage_seconds"]["download"] for r in runs), 2
                ),
                "parse_s": round(statistics.median(r["stage_seconds"]["parse"] for r in runs), 2),
                "job_s": round(job_s, 2),
                "peak_rss_mib": round(statistics.median(r["peak_rss_mib"] for r in runs), 1),
                "tree_peak_rss_mib": round(
                    statistics.median(r["tree_peak_rss_mib"] for r in runs), 1
                ),
                "runs": len(runs),
            }
            rows.append(row)
            print(row, flush=True)
    print()
    print(
        "| export | JSON MB | file MB | conversations | chunks | download s | parse s | job s | "
        "pipeline MB/s | bare ijson MB/s | ratio | peak RSS MiB (daemon) | peak RSS MiB (tree) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['size']} | {row['json_mb']} | {row['file_mb']} | {row['conversations']} | "
            f"{row['chunks']} | {row['download_s']} | {row['parse_s']} | {row['job_s']} | "
            f"{row['pipeline_mb_s']} | {row['bare_ijson_mb_s']} | {row['ratio']} | "
            f"{row['peak_rss_mib']} | {row['tree_peak_rss_mib']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
