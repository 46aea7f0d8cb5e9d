"""The job handler interface: what the queue runs for each claimed job.

The queue knows nothing about exports. The import pipeline is one handler; tests plug in their
own to exercise the queue alone. ``soulworker run --handler module:factory`` selects one; the
factory receives the settings and returns the handler.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from soulworker.jobs.context import JobContext
from soulworker.settings import Settings

DEFAULT_HANDLER = "soulworker.pipeline.handler:create_handler"


@runtime_checkable
class JobHandler(Protocol):
    async def run(self, ctx: JobContext) -> dict[str, Any]:
        """Do the job; return the final ``result`` object (merged into ``import_jobs.result``).

        Raise a :class:`~soulworker.jobs.errors.JobError` subclass to fail the attempt with a
        message for the user. Any other exception counts as a transient failure whose message is
        not shown (it could hold personal data). Raise :class:`~soulworker.jobs.park.ParkJob`
        to wait for work done elsewhere: the job is resumed later, by any worker, with
        ``ctx.job.resumed_from_park`` true (docs/queue.md, "Parking a job").
        """
        ...

    async def aclose(self) -> None:
        """Release what the handler holds (HTTP clients); called once when the worker stops."""
        ...


@runtime_checkable
class CancelsOutsideWork(Protocol):
    """What a handler adds when its job may own paid work outside the database (a Message Batch).

    Optional: the runner calls ``on_cancel`` only on handlers that have it (docs/queue.md,
    "Cancelling a parked job").
    """

    async def on_cancel(self, ctx: JobContext) -> None:
        """The job is being cancelled: stop the outside work its checkpoint names.

        Called once, around the moment the runner records the job ``cancelled``, whichever way
        the cancel arrived: requested while the job was parked (``ctx.job.resumed_from_park``)
        or while no worker held it, in which case ``run`` is not called at all in this attempt;
        requested while ``run`` ran, after the heartbeat stopped it; or racing a failing attempt,
        whose statement then recorded the cancel (the job is no longer the worker's: fenced
        writes fail). ``ctx.checkpoint`` is the last committed checkpoint and
        ``ctx.cancel_requested`` is true. The lease is kept meanwhile (but in the race) and the
        call is bounded (``ON_CANCEL_SECONDS`` in soulworker/jobs/runner.py); whatever it
        raises, the job still ends ``cancelled``, so retry inside it if a retry is worth it.
        """
        ...


HandlerFactory = Callable[[Settings], JobHandler]


class HandlerNotFound(ValueError):
    pass


def load_handler_factory(spec: str) -> HandlerFactory:
    """Resolve ``package.module:callable``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise HandlerNotFound(f"--handler must look like package.module:factory, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerNotFound(f"cannot import {module_name!r} for --handler: {exc}") from None
    factory: Any = getattr(module, attribute, None)
    if not callable(factory):
        raise HandlerNotFound(f"{spec!r} is not a callable handler factory")
    return factory  # type: ignore[no-any-return]
