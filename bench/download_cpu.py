"""The daemon's CPU for one download: in-process, against handed over to the download helper.

A followed download's CPU on the daemon's event loop is taken from the parse thread (they share
the GIL); handing the download over to a helper process (``storage/download_process.py``) should
leave the daemon only the relaying. This measures exactly that, independent of how busy the
machine is: CPU seconds, not wall time. The file is served by the fake Supabase Storage
throttled to ``--rate`` in this process; each run is a child process (the "daemon") that
downloads it once, either with ``download_export`` (``in-process``) or with
``download_following`` (``handed-over``, the default threshold), and reports its own CPU time
over the download (``time.process_time``: all its threads, not its children) and its reaped
children's (the helper's). Modes interleaved, medians over ``--runs``.

    python bench/download_cpu.py [--file PATH | --size 1GB] [--rate 60MB] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.generate_export import parse_size  # noqa: E402
from soulworker.storage.download import RetryPolicy, StorageConfig, download_export  # noqa: E402
from soulworker.storage.download_process import download_following  # noqa: E402
from soulworker.storage.path import StoragePath  # noqa: E402
from soulworker.testing.storage_server import FAKE_SERVICE_JWT, StorageServer  # noqa: E402

OBJECT = "00000000-0000-4000-8000-000000000001/export.json"
MODES = ("in-process", "handed-over")


class _Observer:
    """What a parse following the file would be told; nothing to do here."""

    def total_known(self, total: int | None) -> None:
        pass

    def written(self, size: int) -> None:
        pass

    def restarted(self) -> None:
        pass


async def _download(mode: str, url: str, destination: Path) -> dict[str, float]:
    config = StorageConfig(base_url=url, service_key=FAKE_SERVICE_JWT)
    path = StoragePath("imports", OBJECT)
    started, cpu_before = time.monotonic(), time.process_time()
    if mode == "in-process":
        result = await download_export(
            config, path, destination, observer=_Observer(), retry=RetryPolicy()
        )
    else:
        result = await download_following(
            config, path, destination, observer=_Observer(), max_bytes=1 << 40, retry=RetryPolicy()
        )
    return {
        "seconds": time.monotonic() - started,
        "bytes": result.bytes_written,
        "daemon_cpu": time.process_time() - cpu_before,  # the download's, not the imports'
    }


def child(mode: str, url: str, destination: Path) -> None:
    """One download in this process; prints its figures as one JSON line."""
    figures = asyncio.run(_download(mode, url, destination))
    helper = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures["helper_cpu"] = helper.ru_utime + helper.ru_stime
    print(json.dumps(figures))


def one_run(mode: str, url: str, destination: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, url, str(destination)],
        check=True,
        capture_output=True,
        cwd=REPO_ROOT,
    )
    return dict(json.loads(out.stdout.splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=None)
    parser.add_argument("--size", default="1GB", help="size of the generated file without --file")
    parser.add_argument("--rate", default="60MB", help="Storage's bytes per second")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "URL", "DEST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, url, dest = args.child
        child(mode, url, Path(dest))
        return 0

    rate = parse_size(args.rate)
    with tempfile.TemporaryDirectory(prefix="download-cpu-") as scratch:
        source = args.file
        if source is None:
            source = Path(scratch) / "export.bin"
            with source.open("wb") as out:
                remaining = parse_size(args.size)
                while remaining > 0:
                    piece = os.urandom(min(remaining, 1 << 20))
                    out.write(piece)
                    remaining -= len(piece)
        size = source.stat().st_size
        print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
        print(
            f"machine: {platform.machine()} {os.cpu_count()} cpus, Python "
            f"{platform.python_version()}; {size / 1e6:.0f} MB at {rate / 1e6:.0f} MB/s, "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        with StorageServer(service_key=FAKE_SERVICE_JWT) as server:
            server.put_file("imports", OBJECT, source)
            server.throttle(rate)
            for _ in range(args.runs):
                for mode in MODES:
                    figures = one_run(mode, server.url, Path(scratch) / "download.export")
                    assert figures["bytes"] == size
                    runs[mode].append(figures)
                    print(mode, {k: round(v, 3) for k, v in figures.items()}, flush=True)
        print()
        print("| mode | download s | daemon CPU s | helper CPU s | daemon CPU per 100 MB |")
        print("|---|---|---|---|---|")
        for mode in MODES:
            seconds = statistics.median(r["seconds"] for r in runs[mode])
            daemon = statistics.median(r["daemon_cpu"] for r in runs[mode])
            helper = statistics.median(r["helper_cpu"] for r in runs[mode])
            print(
                f"| {mode} | {seconds:.2f} | {daemon:.2f} | {helper:.2f} | "
                f"{daemon / size * 1e8:.3f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
