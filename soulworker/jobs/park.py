"""Parking a job: a handler waiting for work done elsewhere says "resume me at T".

River calls it snooze. A handler raises :class:`ParkJob` (for instance after submitting a Message
Batch and saving its id in the checkpoint); the runner then, in one fenced statement
(``sql/queries/jobs/park_job.sql``), puts the job back to ``queued`` with ``run_after = T``,
releases its lease, gives the attempt back, merges ``checkpoint``, keeps the stage and progress as
they are, and records since when and for what the job waits. The next claim (any worker, after T)
runs the handler again with ``ctx.resumed_from_park`` true. docs/queue.md, "Parking a job", has
the whole story: bounds, cancels while parked, what operators see.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from soulworker.jobs.errors import JobControl

# The longest a job may park in one go: a later ``resume_at`` is cut to this. A Message Batch ends
# within 24 hours (Anthropic's limit; after it the batch expires), so no honest wait is longer,
# and a handler that asks for more (a bug, a unit mix-up) still has its job looked at daily.
MAX_PARK_SECONDS = 24 * 3600
# What a parked job waits for is one line an operator reads in a table ("message batch
# msgbatch_01… (processing)"); the column holds the same bound (migration 0012).
MAX_WAITING_FOR_CHARS = 200
ELLIPSIS = "…"
# Control characters (newlines, tabs, escapes, DEL, C1) would break a table or a terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def one_short_line(text: str) -> str:
    """``text`` as one line of at most ``MAX_WAITING_FOR_CHARS`` characters: control characters
    become spaces, runs of whitespace one space, the ends are trimmed, and a longer text is cut
    with an ellipsis."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    if len(flat) > MAX_WAITING_FOR_CHARS:
        flat = flat[: MAX_WAITING_FOR_CHARS - len(ELLIPSIS)].rstrip() + ELLIPSIS
    return flat


class ParkJob(JobControl):
    """Raised by a handler: park this job until ``resume_at``; it waits for ``waiting_for``.

    ``resume_at`` must be timezone-aware (a naive time is ambiguous: whose midnight?); the runner
    clamps it to no earlier than now and no later than ``MAX_PARK_SECONDS`` from now, by the
    database's clock. ``waiting_for`` is a short text for operators, such as "message batch
    msgbatch_01… (processing)", never conversation text; it is made one line of at most
    ``MAX_WAITING_FOR_CHARS`` characters. ``checkpoint`` is merged into the job's checkpoint in
    the same statement that parks it.

    Parking is not a failure: no attempt is charged and nothing is added to ``errors``. The
    handler should have saved what it needs to resume (a batch id) before raising, or pass it as
    ``checkpoint``: the park's write is fenced, and if the lease was lost it writes nothing.
    """

    def __init__(
        self,
        resume_at: datetime.datetime,
        waiting_for: str,
        checkpoint: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(resume_at, datetime.datetime):
            raise TypeError(f"resume_at must be a datetime, not {type(resume_at).__name__}")
        if resume_at.tzinfo is None or resume_at.utcoffset() is None:
            raise ValueError("resume_at must be timezone-aware (a naive time is ambiguous)")
        if not isinstance(waiting_for, str):
            raise TypeError(f"waiting_for must be a str, not {type(waiting_for).__name__}")
        line = one_short_line(waiting_for)
        if not line:
            raise ValueError("waiting_for must say what the job waits for")
        if checkpoint is not None and not isinstance(checkpoint, dict):
            raise TypeError(f"checkpoint must be a dict, not {type(checkpoint).__name__}")
        super().__init__(f"parked until {resume_at.isoformat()}: {line}")
        self.resume_at = resume_at
        self.waiting_for = line
        self.checkpoint: dict[str, Any] = dict(checkpoint or {})
