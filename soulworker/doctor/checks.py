"""Every check doctor runs, in the order they are reported, and running them."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from soulworker.doctor.configuration import CONFIGURATION
from soulworker.doctor.core import (
    CHECK_TIMEOUT_SECONDS,
    Check,
    DoctorContext,
    DoctorReport,
    run_checks,
)
from soulworker.doctor.database import DATABASE, LISTEN, MIGRATIONS, POOLER
from soulworker.doctor.embeddings import EMBEDDINGS
from soulworker.doctor.exposure import EXPOSURE
from soulworker.doctor.machine import IJSON, TEMP_SPACE
from soulworker.doctor.model import MODEL
from soulworker.doctor.storage import STORAGE

CHECKS: tuple[Check, ...] = (
    CONFIGURATION,
    DATABASE,
    POOLER,
    LISTEN,
    MIGRATIONS,
    EXPOSURE,
    STORAGE,
    MODEL,
    EMBEDDINGS,
    IJSON,
    TEMP_SPACE,
)
"""Every check, in the order they are reported. Only ``listen``, ``migrations``, ``exposure``
and ``embeddings`` wait for another (``database``)."""

CHECK_NAMES: tuple[str, ...] = tuple(check.name for check in CHECKS)


async def run_doctor(
    context: DoctorContext,
    *,
    only: Collection[str] | None = None,
    timeout_seconds: float = CHECK_TIMEOUT_SECONDS,
    checks: Sequence[Check] | None = None,
) -> DoctorReport:
    """Run the checks (``only`` these and what they need, when given) concurrently; ``checks``
    replaces the list (tests). See :func:`soulworker.doctor.core.run_checks`."""
    return await run_checks(
        CHECKS if checks is None else checks,
        context,
        only=only,
        timeout_seconds=timeout_seconds,
    )
