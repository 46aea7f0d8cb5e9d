"""What an import repaired or went without, for ``result.degraded``: paths and rules, no values.

Two kinds of entry, both with ``stage``, ``call`` (the model call's purpose), ``rule`` and
``count``:

* a *repair* of a model answer (``"path": "$.soul.personality_traits", "rule": "min_items"``):
  a soft rule was broken and mended (docs/model-answers.md). Indexes in paths are folded
  (``$.preferences[]``), so a full pass of hundreds of batches adds up to a few entries;
* a *skip* (``"rule": "skipped", "code": "model_refused"``): a step whose answer could not be had
  was left out and the import went on without it (a refused fact batch, the v2 sections).

Each stage keeps the counts of the work it saved next to that work (the quick pass in its
transaction, each fact batch in its artifact, each finish step in its artifact), so the record
describes the result the user got, survives a resumed attempt, and counts nothing twice.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from soulworker.llm.json_schema import Repair

SKIPPED = "skipped"
# Separates a repair's folded path from its rule in the compact counts kept in artifacts.
_KEY_SEPARATOR = " "
_INDEX = re.compile(r"\[\d+\]")

RepairCounts = dict[str, int]


def count_repairs(repairs: Iterable[Repair], into: Counter[str] | None = None) -> Counter[str]:
    """Repairs counted by folded path and rule (``"$.preferences[] max_length": 3``)."""
    counts = into if into is not None else Counter()
    for repair in repairs:
        counts[f"{_INDEX.sub('[]', repair.path)}{_KEY_SEPARATOR}{repair.rule}"] += 1
    return counts


def add_counts(total: Counter[str], counts: object) -> None:
    """Add counts saved by ``count_repairs`` (read back from an artifact) into ``total``."""
    if not isinstance(counts, Mapping):
        return
    for key, value in counts.items():
        if isinstance(key, str) and isinstance(value, int) and value > 0:
            total[key] += value


def repair_entries(stage: str, call: str, counts: Mapping[str, int]) -> list[dict[str, Any]]:
    """``result.degraded`` entries for repairs counted by ``count_repairs``."""
    entries = []
    for key in sorted(counts):
        path, _, rule = key.rpartition(_KEY_SEPARATOR)
        entries.append(
            {"stage": stage, "call": call, "path": path, "rule": rule, "count": counts[key]}
        )
    return entries


def skip_entry(stage: str, call: str, code: str, count: int = 1) -> dict[str, Any]:
    """A ``result.degraded`` entry for a step left out because its answer could not be had."""
    return {"stage": stage, "call": call, "rule": SKIPPED, "code": code, "count": count}


def replace_stage(
    degraded: object, stage: str, entries: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``degraded`` (as read from a job result) with ``stage``'s entries replaced."""
    kept = [
        entry
        for entry in (degraded if isinstance(degraded, list) else [])
        if isinstance(entry, dict) and entry.get("stage") != stage
    ]
    return [*kept, *entries]
