"""Memory and time of the duplicate registry for many conversations, in memory and on disk.

Judges and keeps ``--count`` distinct conversation ids (UUIDs, as exports have them) with the
registry of ``soulworker.conversations.duplicates``, once with no spill file (every record in a
dict; the registry before this one kept the id itself and more per record) and once as the parse
uses it (records on disk past 8 MiB), and prints the process's RSS growth and the µs per
conversation of each.

    python bench/duplicate_registry.py [--count 1000000]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soulworker.conversations.duplicates import DuplicateResolver


def rss_kib() -> int:
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def measure(ids: list[str], spill: Path | None) -> tuple[float, float]:
    """(µs per conversation, MiB of RSS added) for judging and keeping every id once."""
    resolver = DuplicateResolver(spill_path=spill, memory_bytes=None if spill else 1 << 62)
    before = rss_kib()
    started = time.perf_counter()
    for number, conversation_id in enumerate(ids):
        resolver.judge(conversation_id, 1.0, 3)
        resolver.keep(conversation_id, 1.0, 3, range(number, number + 1), 2)
    seconds = time.perf_counter() - started
    grown = (rss_kib() - before) / 1024
    resolver.close()
    return seconds / len(ids) * 1e6, grown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args()
    ids = [str(uuid.UUID(int=number)) for number in range(args.count)]
    with tempfile.TemporaryDirectory() as scratch:
        # On disk first: the dict's freed memory would otherwise be reused and hide its growth.
        on_disk = measure(ids, Path(scratch) / "seen")
    in_memory = measure(ids, None)
    print(f"{args.count:,} conversations")
    print("| registry | µs per conversation | RSS added MiB |")
    print("|---|---|---|")
    print(f"| all in memory (no spill file) | {in_memory[0]:.1f} | {in_memory[1]:.0f} |")
    print(f"| on disk past 8 MiB (as the parse uses it) | {on_disk[0]:.1f} | {on_disk[1]:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
