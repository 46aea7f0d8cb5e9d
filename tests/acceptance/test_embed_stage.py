"""The embed stage through the real daemon (docs/pipeline.md, "Embed"; docs/embeddings.md):
pgserver's PostgreSQL 16 with pgvector, the fake Storage, and the loopback embeddings server.
Every chunk gets the vector of its own text at unit length; a skipped stage says why; a rescued
job embeds at most one page again; throttling slows but completes; a refused dimension stops
the daemon at start, or fails the job permanently; a set a newer import replaced is never
written to."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from soulworker.embeddings.dimensions import PROBE_TEXT
from soulworker.pipeline.embed_stage import page_chunks
from soulworker.testing import embeddings_server as kit
from soulworker.testing.embeddings_server import EmbeddingsServer, expected_vector
from soulworker.testing.export_generator import GeneratorConfig, write_export
from tests.acceptance.pipeline_harness import ImportHarness
from tests.acceptance.workers import REPO_ROOT, query, wait_for

pytestmark = pytest.mark.db

DIMENSIONS = 768  # the column migration 0003 creates


@pytest.fixture
def embeddings() -> Iterator[EmbeddingsServer]:
    with EmbeddingsServer() as server:
        yield server


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "conversations.json"
    write_export(path, GeneratorConfig(seed=11, conversations=40))
    return path


@pytest.fixture(scope="module")
def long_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough chunks for several pages."""
    path = tmp_path_factory.mktemp("long") / "conversations.json"
    write_export(path, GeneratorConfig(seed=12, target_bytes=3_000_000))
    return path


def openai_env(server: EmbeddingsServer, **extra: str) -> dict[str, str]:
    return {
        "SOULWORKER_EMBED_PROVIDER": "openai",
        "SOULWORKER_EMBED_ENDPOINT_URL": server.openai_base_url,
        "SOULWORKER_EMBED_API_KEY": kit.FAKE_OPENAI_API_KEY,
        **extra,
    }


def bedrock_env(server: EmbeddingsServer, **extra: str) -> dict[str, str]:
    return {
        "SOULWORKER_EMBED_PROVIDER": "bedrock",
        "SOULWORKER_EMBED_ENDPOINT_URL": server.base_url,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": kit.FAKE_AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": kit.FAKE_AWS_SECRET_ACCESS_KEY,
        **extra,
    }


def import_once(h: ImportHarness, export: Path, **env: str) -> tuple[uuid.UUID, uuid.UUID]:
    user = h.new_user()
    h.upload(user, export)
    job_id = h.enqueue(user)
    worker = h.worker(drain=True, **env).start()
    assert worker.wait(120) == 0, worker.output()[-3000:]
    return user, job_id


def vectors(database_url: str, user: uuid.UUID) -> list[dict[str, Any]]:
    return query(
        database_url,
        "select chunk_index, content, import_job_id, embedding::text as embedding "
        "from conversation_chunks where user_id = %s order by chunk_index",
        user,
    )


def parsed(text: str) -> list[float]:
    return [float(v) for v in text.strip("[]").split(",")]


def chunk_texts_sent(server: EmbeddingsServer) -> list[str]:
    """Every chunk text the server answered (the start-up probe left out)."""
    return [t for r in server.answered for t in r.texts if t != kit_probe()]


def kit_probe() -> str:
    return PROBE_TEXT


def assert_each_chunk_has_its_own_vector(database_url: str, user: uuid.UUID) -> int:
    rows = vectors(database_url, user)
    assert rows
    for row in rows:
        assert row["embedding"] is not None, f"chunk {row['chunk_index']} has no vector"
        stored = parsed(row["embedding"])
        assert len(stored) == DIMENSIONS
        assert math.isclose(math.fsum(v * v for v in stored), 1.0, rel_tol=1e-5)
        want = expected_vector(row["content"], DIMENSIONS)
        assert max(abs(a - b) for a, b in zip(stored, want, strict=True)) < 1e-6
    return len(rows)


def test_every_chunk_gets_the_unit_vector_of_its_own_text(
    vector_database_url: str, embeddings: EmbeddingsServer, export: Path
) -> None:
    with ImportHarness(vector_database_url) as h:
        user, job_id = import_once(h, export, **openai_env(embeddings))
    job = h.job(job_id)
    assert job["status"] == "succeeded", job["last_error"]
    result = job["result"]
    count = assert_each_chunk_has_its_own_vector(vector_database_url, user)
    assert result["embeddings"] == result["chunks"] == count
    assert (result["embed_skipped"], result["embed_skipped_reasons"]) == (0, {})
    assert job["checkpoint"]["embed"]["done"] is True
    assert sorted(chunk_texts_sent(embeddings)) == sorted(r["content"] for r in h.chunks(user))
    embedding_cost = result["cost"]["embeddings"]
    assert embedding_cost["texts"] == count
    assert embedding_cost["input_tokens"] > 0
    assert embedding_cost["usd"] > 0
    assert "total" in result["cost"], "the model cost keeps its shape"


def test_skipped_with_the_reason_when_off_or_without_pgvector(
    vector_database_url: str, database_url: str, embeddings: EmbeddingsServer, export: Path
) -> None:
    with ImportHarness(vector_database_url) as h:
        user, job_id = import_once(h, export, SOULWORKER_EMBED_PROVIDER="off")
    result = h.job(job_id)["result"]
    assert (result["embeddings"], result["embed_skipped_reason"]) == (0, "embedding_off")
    assert result["embed_skipped"] == result["chunks"] > 0
    assert all(row["embedding"] is None for row in vectors(vector_database_url, user))

    with ImportHarness(database_url) as h:  # the test server has no pgvector
        _, job_id = import_once(h, export, **openai_env(embeddings))
    job = h.job(job_id)
    assert job["status"] == "succeeded", job["last_error"]
    result = job["result"]
    assert (result["embeddings"], result["embed_skipped_reason"]) == (0, "no_embedding_column")
    assert result["embed_skipped"] == result["chunks"]
    assert embeddings.answered == []


def test_a_rescued_job_embeds_at_most_one_page_again(
    vector_database_url: str, long_export: Path
) -> None:
    with (
        EmbeddingsServer(latency_seconds=0.01, bedrock_dimensions=(768,)) as server,
        ImportHarness(vector_database_url) as h,
    ):
        user = h.new_user()
        h.upload(user, long_export)
        job_id = h.enqueue(user)
        env = bedrock_env(server, SOULWORKER_EMBED_CONCURRENCY="2")
        page = page_chunks(texts_per_request=1, concurrency=2)  # Bedrock: one text per call
        first = h.worker(drain=False, **env).start()
        wait_for(
            lambda: (h.job(job_id)["checkpoint"].get("embed") or {}).get("cursor", -1) >= page,
            timeout=60,
            what="a page or more embedded",
            context=first.output,
        )
        first.kill()
        killed = h.job(job_id)
        assert not killed["checkpoint"]["embed"].get("done"), "the kill landed in the stage"
        worker = h.worker(drain=True, **env).start()
        assert worker.wait(120) == 0, worker.output()[-3000:]
        job = h.job(job_id)
        assert (job["status"], job["attempt"]) == ("succeeded", 2), job["last_error"]
        count = assert_each_chunk_has_its_own_vector(vector_database_url, user)
        sent = chunk_texts_sent(server)
    assert job["result"]["embeddings"] == count
    assert count <= len(sent) <= count + page, "at most one page embedded twice"


def test_throttling_slows_the_stage_but_it_completes(
    vector_database_url: str, embeddings: EmbeddingsServer, export: Path
) -> None:
    # The start-up check takes the first throttle (and only warns); the stage the rest.
    embeddings.script(kit.throttle(times=3))
    with ImportHarness(vector_database_url) as h:
        user, job_id = import_once(h, export, **openai_env(embeddings))
    job = h.job(job_id)
    assert job["status"] == "succeeded", job["last_error"]
    assert job["result"]["embedding_usage"]["throttled"] >= 2
    assert (
        assert_each_chunk_has_its_own_vector(vector_database_url, user)
        == job["result"]["embeddings"]
    )


def test_throttling_without_end_fails_only_at_the_time_limit_and_as_transient(
    vector_database_url: str, embeddings: EmbeddingsServer, export: Path
) -> None:
    # An account whose quota never frees up: the stage keeps slowing down and retrying (never
    # "embedding_throttled" on its own) until the attempt's time limit ends it, as a failure
    # the queue would retry. One attempt here, so the job ends failed and can be inspected.
    embeddings.script(kit.throttle(times=None))
    with ImportHarness(vector_database_url) as h:
        user = h.new_user()
        h.upload(user, export)
        job_id = h.enqueue(user, max_attempts=1)
        started = time.monotonic()
        worker = h.worker(
            drain=True, SOULWORKER_JOB_TIMEOUT_SECONDS="6", **openai_env(embeddings)
        ).start()
        assert worker.wait(120) == 0, worker.output()[-3000:]
        elapsed = time.monotonic() - started
    job = h.job(job_id)
    assert job["status"] == "failed"
    assert "took longer than" in job["last_error"], job["last_error"]
    codes = [error.get("code") for error in job["errors"]]
    assert codes == ["time_limit"], job["errors"]
    assert elapsed >= 6
    assert len(embeddings.requests) > 3, "it went on asking"


def test_a_refused_dimension_stops_the_daemon_at_start_with_the_fix(
    vector_database_url: str, embeddings: EmbeddingsServer
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": vector_database_url,
        "SOULWORKER_MODEL_STAGES": "off",
        "SUPABASE_URL": "http://127.0.0.1:9",
        "SUPABASE_SERVICE_KEY": "x",
        **bedrock_env(embeddings),
    }
    done = subprocess.run(
        [sys.executable, "-m", "soulworker", "run", "--drain"],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Titan V2 cannot produce 768 dimensions: " in done.stderr
    assert "set the embedding column to vector(1024)" in done.stderr


def test_a_refused_dimension_in_the_stage_fails_the_job_permanently(
    vector_database_url: str, embeddings: EmbeddingsServer, export: Path
) -> None:
    # A throttled start-up check is inconclusive: the daemon starts, and the stage meets the
    # refusal itself.
    embeddings.script(kit.throttle(times=1))
    with ImportHarness(vector_database_url) as h:
        user, job_id = import_once(h, export, **bedrock_env(embeddings))
        output = h.workers[-1].output()
    job = h.job(job_id)
    assert (job["status"], job["attempt"]) == ("failed", 1)
    assert "set the embedding column to vector(1024)" in output
    assert all(row["embedding"] is None for row in vectors(vector_database_url, user))


def test_chunks_a_newer_import_replaced_are_never_written_to(
    vector_database_url: str, long_export: Path
) -> None:
    with (
        EmbeddingsServer(latency_seconds=0.02, bedrock_dimensions=(768,)) as server,
        ImportHarness(vector_database_url) as h,
    ):
        user = h.new_user()
        h.upload(user, long_export)
        job_id = h.enqueue(user)
        worker = h.worker(drain=True, **bedrock_env(server)).start()
        wait_for(
            lambda: (h.job(job_id)["checkpoint"].get("embed") or {}).get("cursor", -1) >= 0,
            timeout=60,
            what="the first page embedded",
            context=worker.output,
        )
        # What a newer import's parse commits: its own set, and this job's set gone.
        newer = uuid.uuid4()
        query(
            vector_database_url,
            "with moved as (delete from conversation_chunks where import_job_id = %s "
            "returning *) insert into conversation_chunks (user_id, conversation_id, title, "
            "content, created_at, import_job_id, chunk_index) select user_id, conversation_id, "
            "title, content, created_at, %s, chunk_index from moved returning chunk_index",
            job_id,
            newer,
        )
        assert worker.wait(120) == 0, worker.output()[-3000:]
    job = h.job(job_id)
    assert job["status"] == "succeeded", job["last_error"]
    assert job["result"]["embed_skipped_reason"] == "chunks_replaced"
    rows = vectors(vector_database_url, user)
    assert rows and {row["import_job_id"] for row in rows} == {newer}
    assert all(row["embedding"] is None for row in rows), "nothing written to the newer set"


def test_two_jobs_in_one_process_share_its_embedding_concurrency(
    vector_database_url: str, export: Path
) -> None:
    server = EmbeddingsServer(latency_seconds=0.02, bedrock_dimensions=(DIMENSIONS,))
    with server, ImportHarness(vector_database_url) as h:
        users = [h.new_user(), h.new_user()]
        jobs = []
        for user in users:
            h.upload(user, export)
            jobs.append(h.enqueue(user))
        env = bedrock_env(server, SOULWORKER_EMBED_CONCURRENCY="2", SOULWORKER_CONCURRENCY="2")
        worker = h.worker(drain=True, **env).start()
        assert worker.wait(120) == 0, worker.output()[-3000:]
        for user, job_id in zip(users, jobs, strict=True):
            job = h.job(job_id)
            assert job["status"] == "succeeded", job["last_error"]
            assert (
                assert_each_chunk_has_its_own_vector(vector_database_url, user)
                == job["result"]["embeddings"]
            )
        assert server.max_in_flight <= 2, "the limit is the process's, not each job's"
