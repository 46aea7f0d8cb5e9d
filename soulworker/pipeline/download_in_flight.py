"""A download the parse follows: started by the download stage, finished under the parse.

With ``SOULWORKER_PARSE_DURING_DOWNLOAD=on`` (docs/pipeline.md, "Parsing while the export
downloads") the download stage starts the fetch as a task of its own and hands it on through
``ImportRun.download``; the parse stage reads the file as it grows (``growing_file``) and
collects the download's result before it commits. Shared by both stages, which never import
each other.

Progress while both run keeps each stage's range, label and meaning (docs/pipeline.md): the
download reports 0–20 by bytes downloaded, exactly as without the parse beside it; once it is
done, the parse reports 20–35 by bytes parsed, which by then is most of the export, so the
percentage moves on from where the download left it. Only one of them writes at a time, and the
download's share never goes back, even when the object changed and it started over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from soulworker.growing_file import GrowingFile
from soulworker.pipeline.stages import StageProgress
from soulworker.storage.download import DownloadResult


class DownloadStopped(Exception):
    """The parse stopped the download it no longer needs (raised inside the download)."""


@dataclass
class DownloadInFlight:
    """The running fetch of this attempt's export and what the parse needs to follow it."""

    growing: GrowingFile
    stage_progress: StageProgress
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[DownloadResult] | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    reported: float = 0.0  # the download's share shown so far (never lowered)
    seconds: float | None = None  # set when the download has finished
    stopping: bool = False  # ``stop`` was called
    parsed: float = 0.0  # the share of the export the parse has read, as it last looked

    @property
    def fraction(self) -> float:
        """How much of the export has arrived (0..1); 1 once the download is done."""
        if self.seconds is not None:
            return 1.0
        if not self.bytes_total:
            return 0.0
        return min(1.0, self.bytes_done / self.bytes_total)

    @property
    def downloading(self) -> bool:
        return self.seconds is None

    async def progress(self, done: int, total: int | None) -> None:
        """The download's progress callback (by bytes; held on a restart, never lowered).
        Raises ``DownloadStopped`` once ``stop`` was called (see there)."""
        if self.stopping:
            raise DownloadStopped()
        self.bytes_done, self.bytes_total = done, total
        if total:
            self.reported = max(self.reported, done / total)
            await self.stage_progress.report(self.reported)

    async def result(self) -> DownloadResult:
        """The finished download's result; its error when it failed."""
        assert self.task is not None
        return await asyncio.shield(self.task)

    async def stop(self) -> None:
        """Stops the download if it still runs and waits until it has (idempotent; never
        raises the download's own error: the caller has one of its own to report)."""
        task = self.task
        if task is None:
            return
        # Cancelling is the way to stop it, and the download's next progress report stops it
        # too, because a cancel can be lost: when a parse fails, its transaction hands its
        # connection back to the pool, the pool hands it to the download's progress write that
        # was waiting for one, and the cancel arriving in that same step is swallowed by
        # psycopg_pool's wait (asyncio.wait_for on Python 3.11, CPython gh-86296); the download
        # then ran to its end. A raise from the callback cannot be lost (download_export lets
        # its exceptions through at once, never retried).
        self.stopping = True
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: never "exception was never retrieved"


async def fetch_following(flight: DownloadInFlight, fetch: Any) -> DownloadResult:
    """Runs ``fetch`` (a coroutine writing the export, told about ``flight.growing``) and tells
    the growing file how it ended, so a waiting parse wakes up either way."""
    try:
        result: DownloadResult = await fetch
    except BaseException:
        flight.growing.abandon()
        raise
    flight.growing.finish(result.bytes_written)
    # Written before the download counts as done, so the parse's first report (its own
    # stage) never races this one.
    await flight.stage_progress.report(1.0)
    flight.seconds = time.monotonic() - flight.started
    return result


def download_result_patch(download: DownloadResult) -> dict[str, Any]:
    """The download's keys of the job result (committed with the parse's checkpoint)."""
    return {
        "export_bytes": download.bytes_written,
        "download": {
            "attempts": download.attempts,
            "resumes": download.resumes,
            "restarts": download.restarts,
            "mib_per_second": round(download.mib_per_second, 1),
        },
    }
