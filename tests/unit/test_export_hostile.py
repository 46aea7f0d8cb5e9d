"""The export reader against hostile uploads: a stalled helper, a stop request in the middle of a
long run of non-conversations, archives with too many entries, numbers no C parser can hold.

Each rule is tested with the worst input it must still accept and the worst it must refuse."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from soulworker.pipeline.export_errors import ExportError
from soulworker.pipeline.export_reader import ExportLimits, ExportReader
from soulworker.queue.errors import TransientJobError

IN_PROCESS = ExportLimits(scan_process_min_bytes=None)
HELPER = ExportLimits(scan_process_min_bytes=0)


class Stop(Exception):
    """What the test's interrupt raises."""


def conv(ident: str, **extra: Any) -> dict[str, Any]:
    return {"id": ident, "title": f"t {ident}", "mapping": {}, **extra}


def put(tmp_path: Path, data: bytes, name: str = "upload.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def make_zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def wordy_array(count: int) -> bytes:
    return json.dumps([conv(f"c{i}", text=f"{i} " * 200) for i in range(count)]).encode()


# -- a stalled helper ----------------------------------------------------------------------------


def test_a_stalled_helper_fails_the_read_as_transient_after_its_limit(tmp_path: Path) -> None:
    path = put(tmp_path, make_zip([("conversations.json", wordy_array(20_000))]))
    limits = ExportLimits(scan_process_min_bytes=0, helper_stall_seconds=1)
    reader = ExportReader(path, limits=limits)
    conversations = iter(reader)
    next(conversations)
    assert reader._scan is not None
    helper = reader._scan._process
    os.kill(helper.pid, signal.SIGSTOP)  # alive, silent: the pipe empties and nothing follows
    started = time.monotonic()
    try:
        with pytest.raises(TransientJobError) as caught:
            for _ in conversations:
                pass
    finally:
        if helper.poll() is None:
            os.kill(helper.pid, signal.SIGCONT)
    assert caught.value.code == "export_scan_stalled"
    assert time.monotonic() - started < 30
    helper.wait(timeout=10)  # killed, and reaped by the reader's close


def test_a_stop_request_ends_a_wait_for_a_stalled_helper(tmp_path: Path) -> None:
    path = put(tmp_path, make_zip([("conversations.json", wordy_array(20_000))]))
    stop = False

    def interrupt() -> None:
        if stop:
            raise Stop()

    reader = ExportReader(path, limits=HELPER, interrupt=interrupt)
    conversations = iter(reader)
    next(conversations)
    assert reader._scan is not None
    helper = reader._scan._process
    os.kill(helper.pid, signal.SIGSTOP)
    stop = True
    try:
        with pytest.raises(Stop):
            for _ in conversations:
                pass
    finally:
        if helper.poll() is None:
            os.kill(helper.pid, signal.SIGCONT)
    assert helper.wait(timeout=10) is not None  # the reader closed it on the way out


# -- a stop request inside a long run of non-conversations -------------------------------------


@pytest.mark.parametrize("limits", [IN_PROCESS, HELPER], ids=["in-process", "helper"])
def test_a_run_of_non_objects_is_interrupted_within_one_read(
    tmp_path: Path, limits: ExportLimits
) -> None:
    # 8 MB of zeros yields no conversation at all: only the per-read interrupt can stop it.
    path = put(tmp_path, b"[" + b"0," * 4_000_000 + b"0]", "zeros.json")
    reads = 0

    def interrupt() -> None:
        nonlocal reads
        reads += 1
        if reads == 3:
            raise Stop()

    reader = ExportReader(path, limits=limits, interrupt=interrupt)
    with pytest.raises(Stop):
        list(reader)
    assert reader.skipped_items < 3 * 64 * 1024  # stopped after a few reads, not at the end


def test_a_run_of_non_objects_is_refused_as_not_an_export(tmp_path: Path) -> None:
    path = put(tmp_path, b"[" + b"0," * 500_000 + b"0]", "zeros.json")
    with pytest.raises(ExportError) as caught:
        list(ExportReader(path, limits=IN_PROCESS))
    assert caught.value.code == "not_an_export"
