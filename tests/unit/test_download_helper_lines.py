"""What the daemon accepts from its download helper: exactly the lines it sends, nothing else."""

from __future__ import annotations

import json

import pytest

from soulworker.storage.download import DownloadResult
from soulworker.storage.download_process import DownloadHelperFailed, _decoded


def test_the_helper_s_own_lines_are_read_as_sent() -> None:
    assert _decoded(b'{"written": 1048576}\n') == ("written", 1048576)
    assert _decoded(b'{"total": null}\n') == ("total", None)
    assert _decoded(b'{"progress": [5, 10]}\n') == ("progress", (5, 10))
    assert _decoded(b'{"progress": [5, null]}\n') == ("progress", (5, None))
    assert _decoded(b'{"restart": true}\n') == ("restart", None)
    assert _decoded(b'{"log": {"event": "x"}}\n') == ("log", {"event": "x"})
    result = {
        "bytes_written": 3,
        "etag": '"e"',
        "content_type": None,
        "attempts": 1,
        "resumes": 0,
        "restarts": 0,
        "seconds": 0.5,
    }
    kind, value = _decoded(json.dumps({"result": result}).encode() + b"\n")
    assert (kind, value) == ("result", DownloadResult(**result))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'{"written": 1, "total": 2}\n',  # one event per line
        b'{"written": -1}\n',
        b'{"written": true}\n',  # a bool is an int to Python, not a byte count
        b'{"written": 1.5}\n',
        b'{"written": "1"}\n',
        b'{"progress": [1]}\n',
        b'{"log": "text"}\n',
        b'{"result": {"bytes_written": 1}}\n',
        b'{"something": 1}\n',
        b"\xff\xfe\n",
    ],
)
def test_anything_else_is_a_broken_helper(line: bytes) -> None:
    with pytest.raises(DownloadHelperFailed) as caught:
        _decoded(line)
    assert caught.value.reason == "helper_protocol"
