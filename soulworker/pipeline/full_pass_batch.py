"""The full pass's fact extraction through Message Batches: submit once, park, read the results.

docs/full-pass-batches.md tells the whole story; in short, one job has at most one batch, and
its checkpoint entry (``BATCH_KEY``, a :class:`BatchMarker`) says where it stands:

1. No entry: save a marker (a random nonce, the time, the plan batches asked for) in a fenced
   write, then create the batch, every custom id ``<nonce>-<plan batch number>``, then save its
   id (fenced) and park.
2. A marker without an id (the worker died between create and saving the id, or create failed
   without saying whether the batch exists): list the batches created since the marker (less a
   margin for clocks); an ended one whose results carry our nonce is ours and adopted; one
   still in progress with our number of requests cannot be told apart yet, so the job parks and
   looks again; only when no batch can be ours is the batch created (with the same nonce).
   A batch is never cancelled unless it is proven ours: other jobs submit theirs meanwhile.
3. An id: retrieve it. In progress: park again, for longer as the batch ages (a tenth of its
   age, between SOULWORKER_BATCH_POLL_MIN_SECONDS and _MAX_SECONDS). Ended: its results, by
   plan batch number. Past its expiry and still not ended: cancelled (it is ours) and every
   request goes the direct way.

The stage then saves each result's facts as the direct path does; what did not succeed goes to
direct calls.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from soulworker.jobs.park import ParkJob
from soulworker.llm.batches import BatchResult, BatchState, MessageBatches
from soulworker.llm.client import ModelClient, StructuredRequest
from soulworker.llm.errors import ModelError, ModelRequestRejected
from soulworker.logs import get_logger
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.stages import FULL_PASS
from soulworker.settings import Settings

log = get_logger(__name__)

BATCH_KEY = "full_pass_batch"
BATCH_MODE = "batch"  # SOULWORKER_FULL_PASS_MODE's values that send the full pass in a batch
AUTO_MODE = "auto"
# How far before the marker's time a batch of ours may seem to have been created: the API's
# clock and ours differ by seconds, not minutes, but a margin costs only a longer list.
CLOCK_MARGIN = datetime.timedelta(minutes=10)
# A batch that has not ended this long after its expiry is treated as expired here (the API
# ends it at expiry; this only guards against a batch that never says so).
EXPIRY_GRACE = datetime.timedelta(minutes=15)
# The share of a batch's age a parked job waits before it looks again.
POLL_AGE_SHARE = 0.1
NONCE_BYTES = 8  # 16 hex characters: unique among the organisation's batches by far


def batch_mode(settings: Settings) -> bool:
    """Whether the full pass goes through Message Batches: ``batch``, and ``auto`` in the
    daemon. ``soulworker import``, where a person waits, always calls directly: it sets
    ``direct`` (``soulworker.local.run.local_settings``; docs/full-pass-batches.md, "Modes")."""
    return settings.full_pass_mode in (BATCH_MODE, AUTO_MODE)


def custom_id(nonce: str, number: int) -> str:
    return f"{nonce}-{number}"


def number_of(nonce: str, identifier: str) -> int | None:
    """The plan batch number a custom id of ours names; ``None`` for anybody else's."""
    prefix = f"{nonce}-"
    if not identifier.startswith(prefix):
        return None
    tail = identifier[len(prefix) :]
    # ASCII digits only, and few of them: str.isdigit() also accepts "²", which int() refuses,
    # and int() refuses more than 4,300 digits; a plan never has a billion batches.
    if not (0 < len(tail) <= 9 and tail.isascii() and tail.isdigit()):
        return None
    return int(tail)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class BatchMarker:
    """The checkpoint entry of a job's batch (no personal data: ids, numbers and times)."""

    nonce: str
    marked_at: datetime.datetime
    numbers: tuple[int, ...]
    batch_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "nonce": self.nonce,
            "marked_at": self.marked_at.isoformat(),
            "numbers": list(self.numbers),
            "batch_id": self.batch_id,
        }

    @classmethod
    def from_json(cls, data: Any) -> BatchMarker | None:
        """The marker, or ``None`` when the entry is absent or not one."""
        if not isinstance(data, dict):
            return None
        try:
            nonce = data["nonce"]
            marked_at = datetime.datetime.fromisoformat(data["marked_at"])
            numbers = tuple(int(n) for n in data["numbers"])
            batch_id = data.get("batch_id")
        except (KeyError, TypeError, ValueError):
            return None
        if not isinstance(nonce, str) or not (batch_id is None or isinstance(batch_id, str)):
            return None
        if marked_at.tzinfo is None:  # a naive time cannot be compared with the API's
            return None
        return cls(nonce, marked_at, numbers, batch_id)


def poll_delay(settings: Settings, age: datetime.timedelta) -> datetime.timedelta:
    """How long a parked job waits before it looks at its batch again: a tenth of the
    batch's age, within the configured bounds."""
    seconds = age.total_seconds() * POLL_AGE_SHARE
    low, high = settings.batch_poll_min_seconds, settings.batch_poll_max_seconds
    return datetime.timedelta(seconds=min(max(seconds, low), max(low, high)))


RequestFor = Callable[[int], Awaitable[StructuredRequest]]


class FullPassBatch:
    """One job's batch: found, submitted or waited for (see the module docstring)."""

    def __init__(self, run: ImportRun, batches: MessageBatches) -> None:
        self.run = run
        self.batches = batches

    @property
    def marker(self) -> BatchMarker | None:
        return BatchMarker.from_json(self.run.ctx.checkpoint.get(BATCH_KEY))

    async def results(
        self, pending: Sequence[int], request_for: RequestFor
    ) -> tuple[BatchMarker, dict[int, BatchResult]] | None:
        """The results of the job's batch by plan batch number, once it has ended.

        Raises :class:`ParkJob` while there is nothing to read yet (after submitting, or while
        the batch runs). ``None``: no batch will answer (the API refused to create it); the
        caller asks directly.
        """
        marker = self.marker
        if marker is None:
            marker = BatchMarker(secrets.token_hex(NONCE_BYTES), now(), tuple(pending))
            await self._save(marker)
            return await self._submit(marker, request_for)
        if marker.batch_id is None:
            found = await self._find(marker)
            if found is None:
                return await self._submit(marker, request_for)
            marker = replace(marker, batch_id=found.id)
            await self._save(marker)
            log.info("adopted the job's batch found by its custom ids", batch_id=found.id)
        assert marker.batch_id is not None
        state = await self.batches.retrieve(marker.batch_id)
        if not state.ended:
            if now() > state.expires_at + EXPIRY_GRACE:
                log.warning("batch past its expiry; asking directly", batch_id=state.id)
                await self.batches.cancel(state.id)
                return marker, {}
            self._park(state)
        return marker, self._ours(marker, await self.batches.results(state.id))

    async def _submit(
        self, marker: BatchMarker, request_for: RequestFor
    ) -> tuple[BatchMarker, dict[int, BatchResult]] | None:
        requests = [(custom_id(marker.nonce, n), await request_for(n)) for n in marker.numbers]
        try:
            state = await self.batches.create(requests)
        except ModelRequestRejected:
            # Refused outright: no batch exists. The direct path answers instead.
            log.warning("the API refused the batch; asking directly", requests=len(requests))
            return None
        except ModelError as failure:
            if failure.permanent:
                raise
            # Unknown whether it exists: the next look finds it by its custom ids, or submits.
            log.warning("batch create failed; looking for it later", outcome=failure.code)
            raise self._park_for(
                now() + poll_delay(self.run.settings, datetime.timedelta()),
                "message batch being submitted",
            ) from None
        await self._save(replace(marker, batch_id=state.id))
        self._park(state)
        raise AssertionError("unreachable: _park raises")

    async def _find(self, marker: BatchMarker) -> BatchState | None:
        """The batch of ours among those created since the marker; ``None`` when none can be
        ours; parks while a candidate cannot be told apart yet."""
        undecided: list[BatchState] = []
        for state in await self.batches.created_since(marker.marked_at - CLOCK_MARGIN):
            if state.requests != len(marker.numbers):
                continue
            if not state.ended:
                undecided.append(state)
                continue
            identifiers = await self.batches.custom_ids(state.id)
            if identifiers and all(number_of(marker.nonce, i) is not None for i in identifiers):
                return state
        if undecided:
            log.info("a batch that may be the job's has not ended; looking again later")
            raise self._park_for(
                now() + poll_delay(self.run.settings, now() - marker.marked_at),
                "message batch being looked for",
            )
        return None

    def _ours(self, marker: BatchMarker, results: list[BatchResult]) -> dict[int, BatchResult]:
        ours: dict[int, BatchResult] = {}
        for result in results:
            number = number_of(marker.nonce, result.custom_id)
            if number is not None and number in marker.numbers:
                ours[number] = result
        return ours

    async def _save(self, marker: BatchMarker) -> None:
        """A fenced checkpoint write of the marker (a lost lease stops here)."""
        async with self.run.ctx.transaction() as tx:
            await tx.advance(
                stage=FULL_PASS.name,
                percent=self.run.ctx.job.progress_percent or FULL_PASS.start,
                label=FULL_PASS.label,
                checkpoint={BATCH_KEY: marker.to_json()},
            )

    def _park(self, state: BatchState) -> None:
        delay = poll_delay(self.run.settings, now() - state.created_at)
        raise self._park_for(now() + delay, f"message batch {state.id} ({state.processing_status})")

    def _park_for(self, resume_at: datetime.datetime, waiting_for: str) -> ParkJob:
        log.info("full pass parked", waiting_for=waiting_for, resume_at=resume_at.isoformat())
        return ParkJob(resume_at, waiting_for)


async def cancel_job_batch(model: ModelClient, checkpoint: dict[str, Any]) -> str | None:
    """Cancel the batch a cancelled job's checkpoint names, if it still runs; the batch id.

    A marker without an id names no batch that can be proven the job's while it runs (see the
    module docstring), so nothing is cancelled then: cancelling a batch not proven ours could
    cancel another job's."""
    marker = BatchMarker.from_json(checkpoint.get(BATCH_KEY))
    if marker is None or marker.batch_id is None:
        return None
    batches = MessageBatches(model)
    state = await batches.retrieve(marker.batch_id)
    if state.processing_status == "in_progress":
        await batches.cancel(marker.batch_id)
        log.info("cancelled the job's message batch", batch_id=marker.batch_id)
    return marker.batch_id
