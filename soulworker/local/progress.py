"""Progress of a local import, read from the job row the web app reads.

The command polls ``import_jobs.stage`` and ``progress_percent`` (the numbers a user of the web
app sees, written by the same code) rather than hooking into the job: the display then shows
what the queue really recorded, and the pipeline needs no knowledge of terminals.

Download and parse progress is by bytes of the export (docs/pipeline.md), so bytes done, MB/s and
time left follow from the stage's percent and the file's size. The model stages have no byte count;
they show their own percent and a time left extrapolated from it.

Two displays:

* :class:`RichProgress` on a terminal: one line per stage with a bar, its percent, bytes and
  MB/s for download and parse, and time left (then elapsed once done).
* :class:`PlainProgress` anywhere else (a pipe, a CI log): one plain line when a stage starts and
  at most one every :data:`PLAIN_INTERVAL_SECONDS` while it runs; no control characters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from soulworker.pipeline.stages import (
    DOWNLOAD,
    EMBED,
    FINISH,
    FULL_PASS,
    PARSE,
    QUICK_PASS,
    StageSpec,
)

PLAIN_INTERVAL_SECONDS = 5.0
"""A log gets a line per stage plus one every few seconds: readable, never a flood."""

STAGES: dict[str, StageSpec] = {
    spec.name: spec for spec in (DOWNLOAD, PARSE, QUICK_PASS, EMBED, FULL_PASS, FINISH)
}
BYTE_STAGES = frozenset({DOWNLOAD.name, PARSE.name})
"""Stages whose progress is by bytes of the export (docs/pipeline.md)."""

WAITING_LABEL = "Waiting for the worker"
DONE_LABEL = "Done"
MB = 1_000_000


@dataclass(frozen=True)
class JobSnapshot:
    """What the job row said at one poll."""

    status: str
    stage: str | None
    percent: int

    @property
    def spec(self) -> StageSpec | None:
        return STAGES.get(self.stage or "")

    @property
    def label(self) -> str:
        spec = self.spec
        return spec.label if spec else WAITING_LABEL

    def stage_fraction(self) -> float:
        """How far the current stage is, 0–1, from the job's percent and the stage's range."""
        spec = self.spec
        if spec is None or spec.end <= spec.start:
            return 0.0
        return min(1.0, max(0.0, (self.percent - spec.start) / (spec.end - spec.start)))


class ProgressDisplay(Protocol):
    def update(self, snapshot: JobSnapshot) -> None:
        """Show a new poll of the job row."""
        ...

    def close(self, *, succeeded: bool) -> None:
        """The job ended; leave the display in its final state."""
        ...


def make_display(console: Console, export_bytes: int) -> ProgressDisplay:
    """Rich bars on an interactive terminal, plain lines on anything else."""
    if console.is_terminal and not console.is_dumb_terminal:
        return RichProgress(console, export_bytes)
    return PlainProgress(console.file, export_bytes)


class _BytesOnly(DownloadColumn):
    """``4.1/12.0 MB`` for byte stages, nothing for the others."""

    def render(self, task: Task) -> Text:
        return super().render(task) if task.fields.get("bytes") else Text("")


class _SpeedOnly(TransferSpeedColumn):
    """``3.2 MB/s`` for byte stages, nothing for the others."""

    def render(self, task: Task) -> Text:
        return super().render(task) if task.fields.get("bytes") else Text("")


class RichProgress:
    """One rich progress line per stage, created when the job row first shows the stage."""

    def __init__(self, console: Console, export_bytes: int) -> None:
        self.export_bytes = max(1, export_bytes)
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description:<24}"),
            BarColumn(),
            TaskProgressColumn(),
            _BytesOnly(),
            _SpeedOnly(),
            TimeRemainingColumn(elapsed_when_finished=True),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}
        self.current: str | None = None
        self.progress.start()

    def _total(self, stage: str) -> int:
        return self.export_bytes if stage in BYTE_STAGES else 100

    def update(self, snapshot: JobSnapshot) -> None:
        stage = snapshot.stage
        if stage is None or stage not in STAGES:
            return
        if stage != self.current:
            self._complete_current()
            self.tasks[stage] = self.progress.add_task(
                snapshot.label, total=self._total(stage), bytes=stage in BYTE_STAGES
            )
            self.current = stage
        self.progress.update(
            self.tasks[stage], completed=snapshot.stage_fraction() * self._total(stage)
        )

    def _complete_current(self) -> None:
        if self.current is not None:
            task = self.tasks[self.current]
            self.progress.update(task, completed=self._total(self.current))
            self.progress.stop_task(task)

    def close(self, *, succeeded: bool) -> None:
        if succeeded:
            self._complete_current()
        elif self.current is not None:
            self.progress.stop_task(self.tasks[self.current])
        self.progress.stop()


class PlainProgress:
    """Plain lines: ``[ 27%] Parsing conversations: 4.1 of 12.0 MB, 3.2 MB/s, about 3 s left``."""

    def __init__(
        self,
        stream: IO[str],
        export_bytes: int,
        *,
        interval_seconds: float = PLAIN_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.export_bytes = max(1, export_bytes)
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.stage: str | None = None
        self.stage_started = 0.0
        self.last_line_at = 0.0
        self.last_percent = -1
        self.closed = False

    def update(self, snapshot: JobSnapshot) -> None:
        now = self.clock()
        if snapshot.stage is None or snapshot.stage not in STAGES:
            return
        if snapshot.stage != self.stage:
            self.stage = snapshot.stage
            self.stage_started = now
            self._line(snapshot, now, detail=False)
        elif (
            now - self.last_line_at >= self.interval_seconds
            and snapshot.percent != self.last_percent
        ):
            self._line(snapshot, now, detail=True)

    def _line(self, snapshot: JobSnapshot, now: float, *, detail: bool) -> None:
        text = f"[{snapshot.percent:>3}%] {snapshot.label}"
        if detail:
            text += ": " + self._detail(snapshot, now - self.stage_started)
        print(text, file=self.stream, flush=True)
        self.last_line_at = now
        self.last_percent = snapshot.percent

    def _detail(self, snapshot: JobSnapshot, elapsed: float) -> str:
        fraction = snapshot.stage_fraction()
        parts: list[str] = []
        if snapshot.stage in BYTE_STAGES:
            done = fraction * self.export_bytes
            parts.append(f"{done / MB:.1f} of {self.export_bytes / MB:.1f} MB")
            if elapsed > 0:
                parts.append(f"{done / MB / elapsed:.1f} MB/s")
        else:
            parts.append(f"{fraction:.0%} of this stage")
        if 0 < fraction < 1 and elapsed > 0:
            parts.append(f"about {format_seconds(elapsed * (1 - fraction) / fraction)} left")
        return ", ".join(parts)

    def close(self, *, succeeded: bool) -> None:
        """A last line on success; on failure the error that follows says how it ended."""
        if succeeded and not self.closed:
            print(f"[100%] {DONE_LABEL}", file=self.stream, flush=True)
        self.closed = True


def format_seconds(seconds: float) -> str:
    """``4 s``, ``2 min 05 s``, ``1 h 03 min``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
