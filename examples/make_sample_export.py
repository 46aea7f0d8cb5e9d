"""Regenerates ``examples/sample-export.zip``, the small export the README's first command uses.

    python examples/make_sample_export.py            # rewrite the sample
    python examples/make_sample_export.py --check    # exit 1 if the shipped file differs

The export comes from the test kit's generator (``soulworker/testing/export_generator.py``) with the
fixed settings below, so the same bytes come out on every machine: the generator draws
everything from the seed and stamps the ZIP entries with its fixed clock. It is a 2023-2025 style
export (``conversations.json`` at the root of the ZIP, with the ``chat.html`` and other files a
real export carries) of a few dozen conversations, a few hundred KB: small enough for the
repository, large enough for a soulprint.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from soulworker.testing.export_generator import ExportForm, GeneratorConfig, write_export  # noqa: E402

SAMPLE_PATH = REPO_ROOT / "examples" / "sample-export.zip"
SAMPLE_CONFIG = GeneratorConfig(seed=7, conversations=30, form=ExportForm.ZIP)
"""30 conversations come to ~360 KB zipped; the quick pass wants about 20 or more."""


def build(path: Path) -> int:
    """Write the sample to ``path``; return its size in bytes."""
    return write_export(path, SAMPLE_CONFIG).file_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    if not args.check:
        size = build(SAMPLE_PATH)
        print(f"wrote {SAMPLE_PATH.relative_to(REPO_ROOT)} ({size:,} bytes)")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / SAMPLE_PATH.name
        build(fresh)
        same = SAMPLE_PATH.is_file() and fresh.read_bytes() == SAMPLE_PATH.read_bytes()
    print("sample export is current" if same else "sample export differs; regenerate it")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
