"""The checks of this machine: the fast JSON parser (``ijson``) and the temp space
(``temp_space``). Each asks the part it checks: the export reader says whether its parser is
usable, the temp-file module creates its own private root."""

from __future__ import annotations

import shutil

import ijson

from soulworker.doctor.core import Check, DoctorContext, Outcome, fail, ok, warn
from soulworker.export.reader import FAST_BACKEND as FAST_JSON_BACKEND
from soulworker.export.reader import fast_json_backend_problem
from soulworker.settings import GIB
from soulworker.tempfiles import WorkspaceError, WorkspaceRoot

TEMP_FAIL_BELOW_BYTES = 1 * GIB
"""Below 1 GiB free even a mid-sized export (with media) cannot be downloaded: fail."""

LARGE_EXPORT_BYTES = 2 * GIB
"""A large real export: the predecessor's users had 1.1 GB and 1.8 GB ZIPs. Each running job
holds one downloaded export in the temp directory (members are streamed, never extracted), so
doctor warns when ``SOULWORKER_CONCURRENCY`` such exports would not fit at once."""


async def check_ijson(context: DoctorContext) -> Outcome:
    """ijson's C backend (yajl2_c) is usable: the export reader's own check, so the two can
    never disagree."""
    problem = fast_json_backend_problem()
    backend = str(getattr(ijson, "backend_name", "unknown"))
    if problem is None:
        return ok(f"ijson uses the {FAST_JSON_BACKEND} C backend", backend=backend)
    return fail(
        f"ijson's {FAST_JSON_BACKEND} backend is missing; parsing would be about 10× slower",
        "reinstall ijson from a binary wheel (pip install --force-reinstall --only-binary=ijson "
        "ijson) or install libyajl2",
        backend=backend,
    )


async def check_temp_space(context: DoctorContext) -> Outcome:
    """The private temp root can be created and used, and has room for the exports."""
    concurrency = context.settings.concurrency if context.settings else 2
    warn_below = max(TEMP_FAIL_BELOW_BYTES, concurrency * LARGE_EXPORT_BYTES)
    try:
        root = WorkspaceRoot.ensure(context.temp_base)
        workspace = root.create_workspace()
        try:
            with workspace.job_file("doctor", ".probe") as probe:
                probe.write_bytes(b"soulworker doctor\n")
        finally:
            workspace.close()
    except WorkspaceError as exc:
        return fail(str(exc), "fix the temp directory as said, or set TMPDIR to a private one")
    except OSError as exc:
        return fail(
            f"cannot write to the temp directory: {exc.strerror or type(exc).__name__}",
            "set TMPDIR to a writable local directory",
        )
    free = shutil.disk_usage(root.path).free
    details = {
        "path": str(root.path),
        "free_bytes": free,
        "warn_below_bytes": warn_below,
        "fail_below_bytes": TEMP_FAIL_BELOW_BYTES,
    }
    where = f"{root.path}: {_gib(free)} free"
    if free < TEMP_FAIL_BELOW_BYTES:
        return fail(
            f"{where}, under the {_gib(TEMP_FAIL_BELOW_BYTES)} minimum",
            "free disk space or set TMPDIR to a larger disk: each running job downloads its "
            "export there",
            **details,
        )
    if free < warn_below:
        return warn(
            f"{where}: {concurrency} large exports ({_gib(LARGE_EXPORT_BYTES)} each) would not fit",
            "free disk space, use a larger disk (TMPDIR), or lower SOULWORKER_CONCURRENCY",
            **details,
        )
    return ok(where, **details)


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


IJSON = Check("ijson", check_ijson)
TEMP_SPACE = Check(
    "temp_space",
    check_temp_space,
    timeout_hint="the temp directory is very slow (a network filesystem?); point TMPDIR at a "
    "local disk",
)
