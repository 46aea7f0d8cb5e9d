"""Failures a person can be told about: a stable code, a permanent flag, a message safe to show.

This is the ground floor: the Storage client, the export reader, the model client and the job
lifecycle all raise or record these, and none of them needs another room to do it.

A ``JobError``'s message is shown to the person whose import it is and written to the job row,
so it is short, says what happened (and, for a permanent failure, what to do), and never holds
personal data, a secret or a request detail. Whether an import is tried again is not said here:
the job lifecycle adds that, because only it knows (docs/model-answers.md, "True messages").
``code`` is a stable machine name (``export_not_found``) that operators group failures by.
"""

from __future__ import annotations


class JobError(Exception):
    """A failed attempt, with a message that is safe to show a user."""

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
