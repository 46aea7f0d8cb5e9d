"""The export reader over a file still being downloaded (``soulworker/growing_file.py``): it
yields what has arrived before the download ends, exactly what the complete file yields, and
stops cleanly on a restart, a failure or a stop."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import pytest

from soulworker.export.reader import ExportLimits, ExportReader
from soulworker.growing_file import DownloadAbandoned, DownloadRestarted, GrowingFile
from soulworker.testing.export_generator import ExportForm, GeneratorConfig, write_export

WAIT = 10.0
DONE = object()


def generated(tmp_path: Path, form: ExportForm) -> bytes:
    path = tmp_path / f"source-{form.value}"
    write_export(path, GeneratorConfig(seed=3, target_bytes=600_000, form=form))
    return path.read_bytes()


def complete_read(tmp_path: Path, data: bytes) -> list[dict[str, Any]]:
    path = tmp_path / "complete"
    path.write_bytes(data)
    with ExportReader(path) as reader:
        return list(reader)


class Downloading:
    """A file written piece by piece as a download writes it, and a reader thread on it."""

    def __init__(self, path: Path, *, helper: bool = False, **reader_options: Any) -> None:
        self.path = path
        self.file = path.open("wb", buffering=0)
        self.growing = GrowingFile(path)
        self.written = 0
        self.items: queue.Queue[Any] = queue.Queue()
        # With ``helper``, the structure guard runs in the scan helper process, which follows
        # the download too; without it, in-process.
        limits = ExportLimits(scan_process_min_bytes=1 if helper else None)
        self.reader = ExportReader(path, limits=limits, growing=self.growing, **reader_options)
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        try:
            for item in self.reader:
                self.items.put(item)
        except BaseException as error:
            self.items.put(error)
        else:
            self.items.put(DONE)

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.written += len(data)
        self.growing.written(self.written)

    def take(self, count: int) -> list[Any]:
        return [self.items.get(timeout=WAIT) for _ in range(count)]

    def rest(self) -> list[Any]:
        found = []
        while (item := self.items.get(timeout=WAIT)) is not DONE:
            if isinstance(item, BaseException):
                raise item
            found.append(item)
        return found


@pytest.mark.parametrize("helper", [False, True], ids=["guard-in-process", "scan-helper"])
@pytest.mark.parametrize("form", [ExportForm.JSON, ExportForm.GZIP])
def test_conversations_come_before_the_download_ends_and_match_the_whole_file(
    tmp_path: Path, form: ExportForm, helper: bool
) -> None:
    data = generated(tmp_path, form)
    expected = complete_read(tmp_path, data)
    follow = Downloading(tmp_path / "export", helper=helper)
    follow.thread.start()  # before the download said anything: the reader waits
    # A download learns the object's size from its response, before it writes a byte.
    follow.growing.total_known(len(data))
    half = len(data) // 2
    follow.write(data[:half])
    first = follow.take(3)  # yielded while half of the file is still to come
    assert not follow.growing.finished
    assert (follow.reader._scan is not None) is helper, "the helper follows the download"
    assert 0 < follow.reader.progress < 0.6, "progress is a share of the declared size"
    follow.write(data[half:])
    follow.growing.finish(len(data))
    assert first + follow.rest() == expected


def test_a_zip_is_read_as_it_arrives(tmp_path: Path) -> None:
    data = generated(tmp_path, ExportForm.ZIP_SHARDS)
    expected = complete_read(tmp_path, data)
    follow = Downloading(tmp_path / "export")
    follow.write(data[: len(data) - 100])
    follow.thread.start()
    first = follow.take(1)  # from the local headers: the directory has not arrived
    assert not follow.growing.finished
    follow.write(data[len(data) - 100 :])
    follow.growing.finish(len(data))
    assert first + follow.rest() == expected


def test_a_zip_that_cannot_stream_is_read_once_it_is_whole(tmp_path: Path) -> None:
    # What the parse does after ``NeedsWholeFile`` (tests/unit/test_zip_stream.py has which
    # layouts say so): the archive is read through its central directory, at its very end.
    data = generated(tmp_path, ExportForm.ZIP_SHARDS)
    expected = complete_read(tmp_path, data)
    follow = Downloading(tmp_path / "export", stream_zip=False)
    follow.write(data[: len(data) - 100])
    follow.thread.start()
    with pytest.raises(queue.Empty):
        follow.items.get(timeout=0.5)  # its directory is at its very end: nothing yet
    follow.write(data[len(data) - 100 :])
    follow.growing.finish(len(data))
    assert follow.rest() == expected


@pytest.mark.parametrize("helper", [False, True], ids=["guard-in-process", "scan-helper"])
def test_a_restart_stops_the_reader_of_the_old_object(tmp_path: Path, helper: bool) -> None:
    data = generated(tmp_path, ExportForm.JSON)
    follow = Downloading(tmp_path / "export", helper=helper)
    follow.growing.total_known(len(data))
    follow.write(data[: len(data) // 2])
    follow.thread.start()
    follow.take(1)
    follow.growing.restarted()
    while not isinstance(item := follow.items.get(timeout=WAIT), BaseException):
        assert item is not DONE
    assert isinstance(item, DownloadRestarted)


@pytest.mark.parametrize("helper", [False, True], ids=["guard-in-process", "scan-helper"])
def test_a_failed_download_wakes_the_waiting_reader(tmp_path: Path, helper: bool) -> None:
    data = generated(tmp_path, ExportForm.GZIP)
    follow = Downloading(tmp_path / "export", helper=helper)
    follow.growing.total_known(len(data))
    follow.write(data[: len(data) // 3])
    follow.thread.start()
    follow.take(1)
    follow.growing.abandon()
    while not isinstance(item := follow.items.get(timeout=WAIT), BaseException):
        assert item is not DONE
    assert isinstance(item, DownloadAbandoned)


class Stopped(Exception):
    pass


def test_a_reader_waiting_for_bytes_notices_a_stop(tmp_path: Path) -> None:
    data = generated(tmp_path, ExportForm.JSON)
    stop = threading.Event()
    calls = []

    def interrupt() -> None:
        calls.append(1)
        if stop.is_set():
            raise Stopped()

    follow = Downloading(tmp_path / "export", interrupt=interrupt)
    follow.write(data[:1000])  # less than one conversation: the reader waits
    follow.thread.start()
    stop.set()
    item = follow.items.get(timeout=WAIT)
    assert isinstance(item, Stopped)
    follow.thread.join(WAIT)
    assert not follow.thread.is_alive()
    assert len(calls) < 20, "it waits on the condition, not in a busy loop"
