"""How a job attempt can end other than by succeeding.

Two families live here. ``JobError`` and its subclasses are failures the queue records: their
message is shown to the person whose import it is, so it must be short, actionable and free of
personal data and secrets. The control exceptions (``LeaseLost``, ``CancelRequested``,
``ReleaseRequested``) are not failures; the worker uses them to stop a job for a reason that
is not the job's fault.
"""

from __future__ import annotations


class JobError(Exception):
    """A failed attempt, with a message that is safe to show a user.

    ``code`` is a stable machine name for the failure (``export_not_found``); it goes to the
    job's error history so operators can group failures without parsing messages.
    """

    permanent: bool = False
    default_code: str = "job_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class PermanentJobError(JobError):
    """Retrying cannot help: a bad export, a missing object, a refused key."""

    permanent = True
    default_code = "permanent_error"


class TransientJobError(JobError):
    """Worth another attempt after a backoff: an outage, an overloaded API."""

    permanent = False
    default_code = "transient_error"


class JobControl(Exception):
    """Base of the exceptions that stop a job for a reason that is not its fault."""


class LeaseLost(JobControl):
    """A fenced write matched no row: another worker owns the job now. Write nothing more."""


class CancelRequested(JobControl):
    """An operator asked for the job to be cancelled."""


class ReleaseRequested(JobControl):
    """The worker is shutting down: the job reached a checkpoint and should be released."""
