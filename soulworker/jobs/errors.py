"""How a job attempt is stopped for a reason that is not its fault.

Failures the job records are ``soulworker.errors.JobError`` and its subclasses (the ground
floor, shared with the Storage client, the export reader and the model client). The control
exceptions here (``LeaseLost``, ``CancelRequested``, ``ReleaseRequested``) are not failures: the
worker uses them to stop a job, and the runner records what each means. ``ParkJob``, the one a
handler raises itself to wait for work done elsewhere, lives in ``soulworker.jobs.park`` with its
bounds (docs/queue.md, "Parking a job").
"""

from __future__ import annotations


class JobControl(Exception):
    """Base of the exceptions that stop a job for a reason that is not its fault."""


class LeaseLost(JobControl):
    """A fenced write matched no row: another worker owns the job now. Write nothing more."""


class CancelRequested(JobControl):
    """An operator asked for the job to be cancelled."""


class ReleaseRequested(JobControl):
    """The worker is shutting down: the job reached a checkpoint and should be released."""


class JobNotClaimable(Exception):
    """A job named by id could not be claimed; ``reason`` says why (docs/queue.md, "One named
    job"): it does not exist, another worker holds its lease, or it has already ended."""

    def __init__(self, job_id: object, reason: str) -> None:
        super().__init__(f"import job {job_id} cannot be claimed: {reason}")
        self.job_id = job_id
        self.reason = reason
