"""An export that is a file on this machine, brought into an attempt's private file like a download.

``soulworker import FILE`` reads the export from the file it was given, not from Supabase
Storage (docs/architecture.md, "soulworker import"). The copy keeps every rule of
:func:`~soulworker.storage.download.download_export` that is not about HTTP: the same size limit
refused with the same :class:`~soulworker.storage.errors.ExportTooLarge` (code
``export_too_large``, same message), the same free-disk check before writing, the same private
``0600`` destination written in 1 MiB batches by the download's own sink, the same progress
callback, and a full disk as :class:`~soulworker.storage.errors.WorkerDiskFull`. There is nothing
to retry or resume: a local read either works or fails for good.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path
from typing import BinaryIO

from soulworker.storage.download import (
    DISK_RESERVE_BYTES,
    WRITE_BATCH_BYTES,
    DownloadObserver,
    DownloadResult,
    ProgressCallback,
    _FileSink,
    _too_large,
    check_disk_space,
)
from soulworker.storage.errors import ExportNotFound, WorkerDiskFull


async def copy_export(
    source: Path,
    destination: Path,
    *,
    max_bytes: int,
    progress: ProgressCallback | None = None,
    disk_reserve_bytes: int = DISK_RESERVE_BYTES,
    observer: DownloadObserver | None = None,
) -> DownloadResult:
    """Copy ``source`` into ``destination`` (created 0600 or truncated; never a symlink).

    ``progress`` is awaited at the start, each time a batch reached the file, and at the end,
    as for a download. Raises ``ExportTooLarge`` when the file is (or grows) over
    ``max_bytes``, ``ExportNotFound`` when it cannot be opened, ``WorkerDiskFull`` /
    ``WorkerDiskTooSmall`` as the download does. On failure ``destination`` may hold a partial
    file; removing it is the caller's job (``ProcessWorkspace.job_file`` does). ``observer``
    follows the copy as it follows a download (a parse may read the file as it grows).
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    started = time.monotonic()
    try:
        handle: BinaryIO = await asyncio.to_thread(source.open, "rb")
    except OSError as exc:
        raise ExportNotFound(
            f"The export file could not be read ({exc.strerror or type(exc).__name__})."
        ) from None
    try:
        with handle:
            total = os.fstat(handle.fileno()).st_size
            if total > max_bytes:
                raise _too_large(max_bytes, total)
            check_disk_space(destination.parent, total, disk_reserve_bytes)
            async with _FileSink(destination, observer) as sink:
                sink.total_known(total)
                if progress is not None:
                    await progress(0, total)
                while chunk := await asyncio.to_thread(handle.read, WRITE_BATCH_BYTES):
                    if sink.received + len(chunk) > max_bytes:
                        raise _too_large(max_bytes, None)
                    if await sink.add(chunk) and progress is not None:
                        await progress(sink.written, max(total, sink.written))
                await sink.flush()
                written = sink.written
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise WorkerDiskFull(
                "The worker ran out of disk space while copying the export."
            ) from None
        raise
    if progress is not None:
        await progress(written, written)
    return DownloadResult(
        bytes_written=written,
        etag=None,
        content_type=None,
        attempts=1,
        resumes=0,
        restarts=0,
        seconds=time.monotonic() - started,
    )
