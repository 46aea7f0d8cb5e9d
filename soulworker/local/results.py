"""What a local import produced: read back from the database, written as files, summarised.

The soulprint is read from ``user_profiles`` (the columns the web app reads) after the job ended,
and rendered by our own code: each ``*_md`` column holds the JSON of one section, which
``section_markdown`` turns into readable markdown; ``memory_md`` is MEMORY markdown already.

Which files are written:

* SOUL.md, IDENTITY.md, USER.md, AGENTS.md, TOOLS.md when the profile has the sections (from
  the quick pass on; also when a later stage failed, because they are still valid);
* MEMORY.md when the full pass finished.

Without model calls none of them can exist, so none is written (no placeholder files that could
be mistaken for a result, and files of an earlier run in the same folder are left alone); the
summary says so and prints the cost estimate instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soulworker.llm.schemas import SECTION_NAMES
from soulworker.soulprint.sections import SECTION_FILES, section_markdown

MEMORY_FILE = "MEMORY.md"
ALL_FILES = (*SECTION_FILES.values(), MEMORY_FILE)
FILE_HEADING_LEVEL = 1
"""Each section is a file of its own, so its heading is the document's title."""


@dataclass(frozen=True)
class JobOutcome:
    """The job row and the user's profile row after the job ended."""

    job_id: Any
    user_id: Any
    status: str
    last_error: str | None
    result: Mapping[str, Any]
    profile: Mapping[str, Any] | None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


def _section(raw: Any) -> Mapping[str, Any] | None:
    """A ``*_md`` column: a JSON string of the section (or, defensively, already an object)."""
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        return raw
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, Mapping) else None


def soulprint_files(profile: Mapping[str, Any] | None) -> dict[str, str]:
    """File name → markdown, for what the profile holds (see the module docstring)."""
    if profile is None:
        return {}
    files: dict[str, str] = {}
    sections = {name: _section(profile.get(f"{name}_md")) for name in SECTION_NAMES}
    if all(section is not None for section in sections.values()):
        for name, section in sections.items():
            assert section is not None
            files[SECTION_FILES[name]] = section_markdown(
                name, section, heading_level=FILE_HEADING_LEVEL
            )
    memory = profile.get("memory_md")
    if isinstance(memory, str) and memory.strip():
        files[MEMORY_FILE] = memory if memory.endswith("\n") else memory + "\n"
    return files


def write_files(out_dir: Path, files: Mapping[str, str]) -> list[Path]:
    """Write each file atomically (a reader never sees half a file); return the paths."""
    if not files:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, text in files.items():
        target = out_dir / name
        fd, temp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(temp, 0o644)  # markdown for the user to read; mkstemp made it 0600
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _usd(value: Any) -> str:
    if not isinstance(value, int | float):
        return "unknown (a model without a price)"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def summary_lines(
    outcome: JobOutcome,
    *,
    export_name: str,
    seconds: float,
    model_calls_off: str | None,
) -> list[str]:
    """The short summary printed after the progress display.

    ``model_calls_off`` is why there were no model calls (None when there were).
    """
    result = outcome.result
    lines = [f"Imported {export_name} in {seconds:.1f} s"]
    rows: list[tuple[str, str]] = [
        ("conversations", _count(result.get("conversations"))),
        ("messages", _count(result.get("messages"))),
        ("chunks", _count(result.get("chunks"))),
    ]
    if result.get("embeddings"):  # shown only when the embed stage embedded something
        rows.append(("embedded chunks", _count(result.get("embeddings"))))
    if model_calls_off is None:
        total = (result.get("cost") or {}).get("total") or {}
        rows.append(("facts", _count(result.get("facts"))))
        rows.append(
            (
                "model calls",
                f"{_count(total.get('calls'))}: {_count(total.get('input_tokens'))} input + "
                f"{_count(total.get('output_tokens'))} output tokens",
            )
        )
        cost = _usd(total.get("usd"))
        unpriced = (result.get("cost") or {}).get("unpriced_calls")
        if unpriced:
            cost += f" (+ {unpriced} calls to models without a price: SOULWORKER_MODEL_PRICES)"
        rows.append(("cost", cost))
    else:
        rows.append(("model calls", f"none ({model_calls_off})"))
        estimate = result.get("cost_estimate") or {}
        total = estimate.get("total") or {}
        models = sorted(set(((estimate.get("assumptions") or {}).get("models") or {}).values()))
        unpriced = sorted(
            {
                str(stage["unpriced_model"])
                for stage in (estimate.get("by_stage") or {}).values()
                if isinstance(stage, Mapping) and stage.get("unpriced_model")
            }
        )
        if unpriced:
            price = f"unknown (no price for {', '.join(unpriced)}: set SOULWORKER_MODEL_PRICES)"
        else:
            price = f"about {_usd(total.get('usd'))}"
        embeddings = estimate.get("embeddings")
        if isinstance(embeddings, Mapping):
            usd = embeddings.get("usd")
            rows.append(
                (
                    "embedding would cost",
                    ("unknown (no price: set SOULWORKER_EMBED_PRICE_PER_MTOK)" if usd is None
                     else f"about {_usd(usd)}")
                    + f" for {_count(embeddings.get('texts'))} chunks: "
                    f"{_count(embeddings.get('input_tokens'))} tokens ({embeddings.get('model')})",
                )
            )  # fmt: skip
        if total:
            rows.append(
                (
                    "would cost",
                    f"{price} for {_count(total.get('calls'))} calls: "
                    f"{_count(total.get('input_tokens'))} input + "
                    f"{_count(total.get('output_tokens'))} output tokens"
                    + (f" ({', '.join(models)})" if models else ""),
                )
            )
            modes = total.get("usd_by_full_pass_mode")
            if isinstance(modes, Mapping) and not unpriced:
                rows.append(
                    (
                        "full pass mode",
                        f"direct about {_usd(modes.get('direct'))}, batch about "
                        f"{_usd(modes.get('batch'))} (SOULWORKER_FULL_PASS_MODE; soulworker "
                        "import calls directly)",
                    )
                )
    width = max(len(label) for label, _ in rows)
    lines.extend(f"  {label:<{width}}  {value}" for label, value in rows)
    return lines
