"""An import's stages, their progress ranges and labels (docs/pipeline.md), and progress in one.

A stage reports how far it is as a fraction of its own work; :class:`StageProgress` maps that into
the job's 0–100 range and hands it to the queue, which throttles the writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from soulworker.jobs.context import JobContext


@dataclass(frozen=True)
class StageSpec:
    name: str  # the machine name written to import_jobs.stage
    label: str  # the human label written to user_profiles.import_stage
    start: int
    end: int

    def percent(self, fraction: float) -> float:
        clamped = min(1.0, max(0.0, fraction))
        return self.start + (self.end - self.start) * clamped


DOWNLOAD = StageSpec("download", "Downloading export", 0, 20)
PARSE = StageSpec("parse", "Parsing conversations", 20, 35)
QUICK_PASS = StageSpec("quick_pass", "Generating soulprint", 35, 50)
EMBED = StageSpec("embed", "Indexing memories", 50, 60)
FULL_PASS = StageSpec("full_pass", "Building deep memory", 60, 95)
FINISH = StageSpec("finish", "Finishing", 95, 100)


class StageProgress:
    """Progress of one stage, reported through the job context (throttled there)."""

    def __init__(self, ctx: JobContext, spec: StageSpec) -> None:
        self.ctx = ctx
        self.spec = spec

    async def report(self, fraction: float) -> None:
        await self.ctx.progress(self.spec.name, self.spec.percent(fraction), self.spec.label)

    async def begin(self) -> None:
        await self.report(0.0)
