"""The report for people (one line per check, a ``fix:`` line under each problem) and for
scripts (JSON)."""

from __future__ import annotations

import json

from soulworker.doctor.core import DoctorReport, Status

STATUS_LABELS = {Status.OK: "OK", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.SKIP: "SKIP"}
"""Words rather than symbols: readable in any terminal encoding and easy to grep."""


def render_text(report: DoctorReport) -> str:
    """The report as a readable list: one line per check, a ``fix:`` line under each problem,
    and a summary line."""
    width = max((len(r.name) for r in report.results), default=0)
    lines = []
    for result in report.results:
        label = STATUS_LABELS[result.status].ljust(4)
        lines.append(f"{label}  {result.name.ljust(width)}  {result.finding}")
        if result.hint and result.status is not Status.OK:
            lines.append(f"{' ' * 4}  {' ' * width}  fix: {result.hint}")
    counts = report.counts()
    summary = (
        f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failed, "
        f"{counts['skip']} skipped"
    )
    verdict = "healthy" if report.healthy else "NOT healthy: fix the FAIL lines above"
    lines.append("")
    lines.append(f"{summary}: {verdict}")
    return "\n".join(lines)


def render_json(report: DoctorReport) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False)
