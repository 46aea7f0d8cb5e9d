"""Failing imports through the real daemon (docs/contract.md, docs/pipeline.md): every bad export,
missing object, refused key or hostile path ends in the documented state with a message a person can
act on, the daemon keeps running other jobs, and a Storage outage is retried until it passes."""

from __future__ import annotations

import gzip
import io
import json
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import tenacity

from soulworker.pipeline.download_stage import DownloadStage
from soulworker.pipeline.handler import ImportPipeline
from soulworker.pipeline.parse_stage import ParseStage
from soulworker.settings import Settings
from soulworker.storage.download import RetryPolicy
from soulworker.testing.export_generator import GeneratorConfig, write_export
from soulworker.testing.storage_server import FAKE_SERVICE_JWT, Respond
from tests.acceptance.pipeline_harness import ImportHarness
from tests.acceptance.workers import WorkerProcess, wait_for

pytestmark = pytest.mark.db

SIZE_LIMIT = "4MiB"
SIZE_LIMIT_BYTES = 4 * 1024 * 1024
"""Small enough to exceed with a test file, large enough for every other export here."""


# -- building the uploads --------------------------------------------------------------------


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def small_export(tmp_path: Path, name: str, seed: int = 3) -> bytes:
    path = tmp_path / name
    write_export(path, GeneratorConfig(seed=seed, conversations=6))
    return path.read_bytes()


def message_node(node_id: str, parent: str | None, role: str, text: str) -> dict[str, Any]:
    return {
        "id": node_id,
        "parent": parent,
        "message": {
            "id": node_id,
            "author": {"role": role},
            "content": {"content_type": "text", "parts": [text]},
            "recipient": "all",
            "create_time": 1_760_000_000.0,
        },
    }


def broken_graphs() -> bytes:
    """Conversations whose node graphs are damaged: the guard salvages what it can."""
    cycle = {
        "a": message_node("a", "c", "user", "Cycle question one."),
        "b": message_node("b", "a", "assistant", "Cycle answer one."),
        "c": message_node("c", "b", "user", "Cycle question two."),
    }
    orphan = {
        "x": message_node("x", "gone-node", "user", "Orphan question."),
        "y": message_node("y", "x", "assistant", "Orphan answer."),
    }
    no_current = {
        "r": message_node("r", None, "user", "Lost current node question."),
        "s": message_node("s", "r", "assistant", "Lost current node answer."),
    }
    conversations = [
        {"id": "cycle", "title": "Cycle", "create_time": 1_760_000_000.0,
         "mapping": cycle, "current_node": "c"},
        {"id": "orphan", "title": "Orphan", "create_time": 1_760_000_000.0,
         "mapping": orphan, "current_node": "y"},
        {"id": "nocurrent", "title": "No current node", "create_time": 1_760_000_000.0,
         "mapping": no_current, "current_node": "deleted"},
    ]  # fmt: skip
    return json.dumps(conversations).encode()


@dataclass
class Case:
    """One job: what is uploaded where, and how the job must end."""

    name: str
    code: str | None  # None: the job must succeed
    stage: str = "parse"
    upload: bytes | None = None
    path: Callable[[uuid.UUID, uuid.UUID], str] | None = None  # (user, victim) -> storage_path
    says: tuple[str, ...] = ()  # phrases the message must contain


def cases(tmp_path: Path) -> list[Case]:
    exported = small_export(tmp_path, "conversations.json")
    cut = exported[: int(len(exported) * 0.6)]
    bad_utf8 = b'[{"id": "a", "title": "caf\xe9", "mapping": {}}]'
    bad_byte = bad_utf8.index(b"\xe9")
    too_big_json = tmp_path / "big.json"
    write_export(too_big_json, GeneratorConfig(seed=9, target_bytes=SIZE_LIMIT_BYTES + 1_000_000))
    return [
        Case("good", None, upload=exported),
        Case("broken graphs", None, upload=broken_graphs()),
        Case(
            "object not found",
            "export_not_found",
            stage="download",
            says=("not found", "upload the export again"),
        ),
        Case("truncated JSON", "export_truncated", upload=cut, says=(f"byte {len(cut):,}",)),
        Case(
            "a PDF", "not_an_export", upload=b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", says=("PDF",)
        ),
        Case(
            "an HTML page",
            "not_an_export",
            upload=b"<!DOCTYPE html><html><head><title>ChatGPT</title></head></html>",
            says=("web page",),
        ),
        Case(
            "a ZIP without conversations.json",
            "no_conversations_file",
            upload=zip_bytes({"chat.html": b"<html></html>", "user.json": b"{}"}),
            says=("conversations.json",),
        ),
        Case("an empty export", "empty_export", upload=b"[]", says=("no conversations",)),
        Case(
            "over the size limit",
            "export_too_large",
            stage="download",
            upload=b"[" + b" " * (SIZE_LIMIT_BYTES + 1024 * 1024) + b"]",
            says=("5.0 MiB", "4.0 MiB this service can import"),
        ),
        Case(
            "over the size limit once decompressed",
            "export_too_large",
            upload=gzip.compress(too_big_json.read_bytes()),
            says=("4 MiB",),
        ),
        Case(
            "a ZIP bomb",
            "zip_bomb",
            upload=zip_bytes({"conversations.json": b"[" + b" " * 3_000_000 + b"]"}),
            says=("expands to far more data",),
        ),
        Case(
            "invalid UTF-8",
            "invalid_utf8",
            upload=bad_utf8,
            says=(f"at byte {bad_byte}", "UTF-8"),
        ),
        Case("hostile nesting", "nesting_too_deep", upload=b"[" * 300_000, says=("nested",)),
        Case(
            "a path with ..",
            "invalid_storage_path",
            stage="download",
            path=lambda user, victim: f"imports/{user}/../{victim}/export.zip",
        ),
        Case(
            "an encoded ..",
            "invalid_storage_path",
            stage="download",
            path=lambda user, victim: f"imports/{user}/%2e%2e/{victim}/export.zip",
        ),
        Case(
            "another user's folder",
            "invalid_storage_path",
            stage="download",
            path=lambda user, victim: f"imports/{victim}/export.zip",
            says=("own",),
        ),
        Case(
            "a bucket not allowed",
            "invalid_storage_path",
            stage="download",
            path=lambda user, victim: f"private/{user}/export.zip",
            says=("bucket",),
        ),
    ]


def assert_failed(
    h: ImportHarness, job_id: uuid.UUID, user: uuid.UUID, code: str, stage: str
) -> str:
    """The documented end state of a permanent failure (docs/contract.md); returns the message."""
    job = h.job(job_id)
    assert (job["status"], job["attempt"]) == ("failed", 1), (code, job["last_error"])
    message: str = job["last_error"]
    assert message and len(message) < 400
    assert str(user) not in message and job["storage_path"] not in message
    [entry] = job["errors"]
    assert entry["code"] == code, (entry, message)
    assert (entry["permanent"], entry["attempt"], entry["message"]) == (True, 1, message)
    assert entry["stage"] == stage, entry
    assert entry["error_class"]
    profile = h.profile(user)
    assert profile is not None
    assert (profile["import_status"], profile["import_error"]) == ("failed", message)
    assert h.chunk_count(user) == 0
    return message


def test_every_bad_export_fails_permanently_with_its_message_and_the_daemon_carries_on(
    database_url: str, tmp_path: Path
) -> None:
    planned = cases(tmp_path)
    exported = (tmp_path / "conversations.json").read_bytes()
    with ImportHarness(database_url) as h:
        victim = h.new_user()
        h.upload(victim, tmp_path / "conversations.json")  # another user's real upload
        jobs: list[tuple[Case, uuid.UUID, uuid.UUID]] = []
        for case in planned:
            user = h.new_user()
            if case.upload is not None:
                h.storage.put_bytes("imports", f"{user}/export.zip", case.upload)
            path = case.path(user, victim) if case.path else None
            if path and path.startswith("private/"):  # a real export, in the wrong bucket
                h.storage.put_bytes("private", f"{user}/export.zip", exported)
            jobs.append((case, user, h.enqueue(user, path)))
        worker = h.worker(
            drain=True, SOULWORKER_MAX_EXPORT_BYTES=SIZE_LIMIT, SOULWORKER_CONCURRENCY="4"
        ).start()
        assert worker.wait(90) == 0, worker.output()[-3000:]
        requested = [request.path for request in h.storage.requests]

        for case, user, job_id in jobs:
            if case.code is None:
                job = h.job(job_id)
                assert job["status"] == "succeeded", (case.name, job["last_error"])
                assert h.chunk_count(user) == job["result"]["chunks"] > 0
                continue
            message = assert_failed(h, job_id, user, case.code, case.stage)
            for phrase in case.says:
                assert phrase in message, (case.name, message)
            if case.path is not None:
                asked = [p for p in requested if str(user) in p or str(victim) in p]
                assert asked == [], f"{case.name}: refused before any request, yet {asked}"

    [(graphs_user, graphs_job)] = [(u, j) for c, u, j in jobs if c.name == "broken graphs"]
    result = h.job(graphs_job)["result"]
    assert (result["conversations"], result["messages"], result["bad_conversations"]) == (3, 7, 0)
    contents = " ".join(c["content"] for c in h.chunks(graphs_user))
    for text in ("Cycle question one.", "Cycle question two.", "Orphan answer.",
                 "Lost current node answer."):  # fmt: skip
        assert text in contents


def test_a_wrong_storage_key_fails_the_job_without_showing_the_key(
    database_url: str, tmp_path: Path
) -> None:
    header, payload, _ = FAKE_SERVICE_JWT.split(".")
    wrong_key = f"{header}.{payload}.another-signature-entirely"
    with ImportHarness(database_url) as h:
        user = h.new_user()
        h.storage.put_bytes("imports", f"{user}/export.zip", small_export(tmp_path, "e.json"))
        job_id = h.enqueue(user)
        worker = h.worker(drain=True, SUPABASE_SERVICE_KEY=wrong_key).start()
        assert worker.wait(60) == 0, worker.output()[-3000:]
        message = assert_failed(h, job_id, user, "storage_auth_failed", "download")
        assert "SUPABASE_SERVICE_KEY" in message
        assert "another-signature" not in message
        assert "another-signature" not in worker.output(), "the key never reaches the logs"
        assert [r.auth for r in h.storage.requests] == ["wrong_key"], "refused at once"


FAST_DOWNLOAD_RETRIES = RetryPolicy(wait=tenacity.wait_none())
"""The production limits (six requests without progress), without the minute of backoff."""


def fast_storage_retries(settings: Settings) -> ImportPipeline:
    """The real import handler, its download retrying without waiting (``--handler`` target)."""
    return ImportPipeline(settings, [DownloadStage(FAST_DOWNLOAD_RETRIES), ParseStage()])


def test_a_storage_outage_retries_the_job_with_backoff_until_storage_recovers(
    database_url: str, tmp_path: Path
) -> None:
    with ImportHarness(database_url) as h:
        user = h.new_user()
        h.storage.put_bytes("imports", f"{user}/export.zip", small_export(tmp_path, "e.json"))
        attempts = FAST_DOWNLOAD_RETRIES.max_attempts_without_progress
        h.storage.add_fault(Respond.server_error(500), times=attempts)
        job_id = h.enqueue(user)
        env = h.env(SOULWORKER_RETRY_BASE_SECONDS="1", SOULWORKER_RETRY_MAX_SECONDS="2")
        worker = WorkerProcess(
            database_url,
            handler=f"{__name__}:fast_storage_retries",
            drain=True,
            env=env,
        )
        h.workers.append(worker)
        worker.start()

        waiting = wait_for(
            lambda: (row := h.job(job_id))["status"] == "queued" and row["errors"] and row,
            timeout=30,
            what="the job to wait for its retry",
            context=worker.output,
        )
        [entry] = waiting["errors"]
        assert (entry["code"], entry["permanent"], entry["stage"]) == (
            "storage_unavailable",
            False,
            "download",
        )
        assert waiting["attempt"] == 1 and waiting["lease_owner"] is None
        assert "will be retried" in waiting["last_error"]
        # The failure and the new run_after are written by one statement, at one now().
        delay = waiting["run_after"] - datetime.fromisoformat(entry["at"])
        assert 0.75 <= delay.total_seconds() <= 1.25, "the base backoff with its ±25% jitter"
        profile = h.profile(user)
        assert profile is not None
        assert (profile["import_status"], profile["import_error"]) == ("processing", None)

        assert worker.wait(60) == 0, worker.output()[-3000:]
        job = h.job(job_id)
        assert (job["status"], job["attempt"]) == ("succeeded", 2), job["last_error"]
        assert len(job["errors"]) == 1, "the history keeps the failed attempt"
        assert h.chunk_count(user) == job["result"]["chunks"] > 0
        profile = h.profile(user)
        assert profile is not None
        assert (profile["import_status"], profile["import_error"]) == ("complete", None)
        gets = [r for r in h.storage.requests if r.method == "GET"]
        assert [r.status for r in gets] == [500] * attempts + [200]
        assert h.storage.pending_faults == 0
