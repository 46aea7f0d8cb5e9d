"""Writes a realistic, deterministic ChatGPT export for benchmarks and manual tests.

    python bench/generate_export.py --size 1GB --form zip-shards --seed 1 OUT

``--size`` counts the uncompressed conversation JSON by default (``--size-of file`` counts the
output file instead). Generation streams to disk one conversation at a time, so a 1 GB export
needs no more memory than a 1 MB one. The library behind it is
``soulworker/testing/export_generator.py``; its module docstring lists every feature and option.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soulworker.testing.export_generator import (
    ExportForm,
    Feature,
    GeneratorConfig,
    write_export,
)

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


def parse_size(text: str) -> int:
    """``"100MB"`` -> 100_000_000; ``"1GiB"`` -> 1_073_741_824; plain numbers are bytes."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if match is None or match.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 100MB, 1GB, 512MiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="output file")
    parser.add_argument("--size", type=parse_size, help="target size, e.g. 100MB, 1GB")
    parser.add_argument("--conversations", type=int, help="number of distinct conversations")
    parser.add_argument(
        "--size-of", choices=("json", "file"), default="json", help="what --size measures"
    )
    parser.add_argument(
        "--form", choices=[form.value for form in ExportForm], default=ExportForm.JSON.value
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--ensure-ascii", action="store_true", help="write non-ASCII as \\u escapes"
    )
    parser.add_argument(
        "--shard-size", type=parse_size, help="uncompressed bytes per shard (zip-shards)"
    )
    parser.add_argument("--folder", help="put the ZIP's files inside this folder")
    parser.add_argument(
        "--no-decoys", action="store_true", help="ZIP without chat.html, user.json, …"
    )
    parser.add_argument(
        "--compresslevel", type=int, default=6, help="deflate/gzip level (1 is fastest)"
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=[feature.value for feature in Feature],
        help="switch a feature off (repeatable)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.size is None and args.conversations is None:
        args.size = parse_size("10MB")
    features = frozenset(Feature) - {Feature(name) for name in args.without}
    config = GeneratorConfig(
        seed=args.seed,
        target_bytes=args.size,
        conversations=args.conversations,
        size_basis=args.size_of,
        form=ExportForm(args.form),
        features=features,
        ensure_ascii=args.ensure_ascii,
        folder=args.folder,
        decoys=not args.no_decoys,
        compresslevel=args.compresslevel,
        **({"shard_bytes": args.shard_size} if args.shard_size else {}),
    )
    started = time.monotonic()
    summary = write_export(args.out, config)
    seconds = time.monotonic() - started
    sizes = sorted(summary.conversation_sizes) or [0]
    print(
        f"wrote {args.out}: {summary.file_bytes:,} bytes, {summary.json_bytes:,} bytes of JSON, "
        f"{summary.items_written:,} conversations ({len(summary.duplicates):,} duplicated ids), "
        f"{len(summary.members)} file(s); per conversation p50 {sizes[len(sizes) // 2]:,} B, "
        f"p99 {sizes[int(len(sizes) * 0.99)]:,} B; {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
