"""The ways fetching an export from Supabase Storage can fail, as job errors.

Every class here is a ``JobError``: its message is shown to the person whose import it is and
is written to the job row, so it is short, says what to do, and never contains the storage
key, a request header or any part of the export. ``code`` is stable; operators group failures
by it. Storage's own error code (``NoSuchKey``, ``InvalidJWT``) and the HTTP status are kept as
attributes for logs, never as the only explanation.

Permanent errors fail the job at once (retrying the same request cannot help). The transient
ones: ``StorageUnavailable``, raised only after the download's own retries ran out, and
``WorkerDiskFull``, when this worker's disk has no room for the export now.
"""

from __future__ import annotations

from soulworker.errors import PermanentJobError, TransientJobError


class InvalidStoragePath(PermanentJobError):
    """``storage_path`` is malformed, outside the allowed buckets or outside the user's folder.

    Raised before any request is made. The message says what is wrong without echoing the
    path (it may be huge, hostile, or name another user's folder).
    """

    default_code = "invalid_storage_path"

    def __init__(self, reason: str) -> None:
        super().__init__(f"The export's storage path is invalid: {reason}.")
        self.reason = reason


class StorageError(PermanentJobError):
    """Base of the permanent failures Storage reported for the download request.

    ``http_status`` is the status line's code; ``storage_status`` the status Supabase put in
    the JSON body (it answers most errors with HTTP 400 and the real status there);
    ``storage_code`` the body's ``code`` (``NoSuchKey``), or ``None``.
    """

    default_code = "storage_request_failed"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        storage_status: int | None = None,
        storage_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.storage_status = storage_status
        self.storage_code = storage_code


class ExportNotFound(StorageError):
    """The object does not exist (Storage's ``NoSuchKey`` / status 404)."""

    default_code = "export_not_found"


class StorageBucketNotFound(StorageError):
    """The bucket does not exist: a configuration problem on the operator's side."""

    default_code = "storage_bucket_not_found"


class StorageAuthFailed(StorageError):
    """Storage refused the service key (401/403, ``InvalidJWT``). The key is never echoed."""

    default_code = "storage_auth_failed"


class ExportTooLarge(StorageError):
    """The export is over the size limit (announced by the server or counted while reading)."""

    default_code = "export_too_large"


class StorageUnavailable(TransientJobError):
    """Storage kept failing (5xx, 429, dropped connections, timeouts) until retries ran out.

    ``reason`` is a short machine description of the last failure (``http_503``,
    ``ReadTimeout``) for logs; ``attempts`` the number of requests made.
    """

    default_code = "storage_unavailable"

    def __init__(self, message: str, *, reason: str, attempts: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts


class WorkerDiskTooSmall(PermanentJobError):
    """The export is larger than the worker's whole disk: no attempt on this deployment can
    hold it, so retrying would only repeat the failure. An operator who gives the workers
    more disk can retry the job."""

    default_code = "worker_disk_too_small"


class WorkerDiskFull(TransientJobError):
    """The worker's disk filled up while writing the export; another attempt (maybe on
    another instance, or after other jobs finished) may have room."""

    default_code = "worker_disk_full"
