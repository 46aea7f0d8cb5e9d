"""The embeddings check of ``soulworker doctor``: the ``embedding`` column's length read from a
real database (pgserver's PostgreSQL 16 with pgvector, and the test server without it) and one
live call to the test kit's embeddings server (docs/embeddings.md, "Dimensions")."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from soulworker.doctor import DoctorContext, Status, run_doctor
from soulworker.embeddings.dimensions import EmbeddingColumn, embedding_column
from soulworker.testing import embeddings_server as kit
from soulworker.testing.embeddings_server import EmbeddingsServer

pytestmark = pytest.mark.db

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def embeddings() -> Iterator[EmbeddingsServer]:
    with EmbeddingsServer() as server:
        yield server


def bedrock_env(database_url: str, server: EmbeddingsServer, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "SOULWORKER_MODEL_STAGES": "off",
        "SOULWORKER_EMBED_PROVIDER": "bedrock",
        "SOULWORKER_EMBED_ENDPOINT_URL": server.base_url,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": kit.FAKE_AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": kit.FAKE_AWS_SECRET_ACCESS_KEY,
        **extra,
    }


def openai_env(database_url: str, server: EmbeddingsServer, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "SOULWORKER_MODEL_STAGES": "off",
        "SOULWORKER_EMBED_PROVIDER": "openai",
        "SOULWORKER_EMBED_ENDPOINT_URL": server.openai_base_url,
        "SOULWORKER_EMBED_API_KEY": kit.FAKE_OPENAI_API_KEY,
        **extra,
    }


async def check(env: Mapping[str, str]) -> tuple[Status, str, str | None, dict[str, object]]:
    report = await run_doctor(DoctorContext.from_environ(env), only=["embeddings"])
    result = report.result("embeddings")
    return result.status, result.finding, result.hint, dict(result.details)


async def test_the_column_length_is_read_from_the_database(vector_database_url: str) -> None:
    conn = await psycopg.AsyncConnection.connect(vector_database_url, row_factory=dict_row)
    try:
        assert await embedding_column(conn) == EmbeddingColumn("vector(768)", 768)
    finally:
        await conn.close()


async def test_no_column_without_pgvector(database_url: str) -> None:
    conn = await psycopg.AsyncConnection.connect(database_url)
    try:
        assert await embedding_column(conn) is None
    finally:
        await conn.close()


async def test_titan_refusing_the_columns_768_fails_with_the_line_to_fix(
    vector_database_url: str, embeddings: EmbeddingsServer
) -> None:
    status, finding, hint, details = await check(bedrock_env(vector_database_url, embeddings))
    assert status is Status.FAIL
    assert finding == "Titan V2 cannot produce 768 dimensions"
    assert hint is not None
    assert hint.startswith("set the embedding column to vector(1024)")
    assert "SOULWORKER_EMBED_PROVIDER=openai" in hint
    assert details["code"] == "embedding_dimension_refused"
    assert details["column"] == "vector(768)"
    (request,) = embeddings.requests
    assert request.dimensions == 768, "the length asked for is the column's"


async def test_a_provider_that_produces_the_columns_length_is_ok(
    vector_database_url: str, embeddings: EmbeddingsServer
) -> None:
    embeddings.bedrock_dimensions = (1024, 768, 512, 256)
    status, finding, _, details = await check(bedrock_env(vector_database_url, embeddings))
    assert status is Status.OK, finding
    assert finding == (
        "bedrock model amazon.titan-embed-text-v2:0 produces 768-dimensional vectors for the "
        "embedding column (vector(768))"
    )
    assert details["dimensions"] == 768

    status, finding, _, _ = await check(openai_env(vector_database_url, embeddings))
    assert status is Status.OK, finding
    assert "text-embedding-3-small produces 768-dimensional" in finding


async def test_a_dimensions_setting_that_contradicts_the_column_fails(
    vector_database_url: str, embeddings: EmbeddingsServer
) -> None:
    env = openai_env(vector_database_url, embeddings, SOULWORKER_EMBED_DIMENSIONS="1024")
    status, finding, hint, _ = await check(env)
    assert status is Status.FAIL
    assert finding == "SOULWORKER_EMBED_DIMENSIONS=1024 but the embedding column is vector(768)"
    assert hint is not None
    assert "unset SOULWORKER_EMBED_DIMENSIONS" in hint
    assert embeddings.requests == [], "no call is made for a setting that cannot work"


async def test_access_denied_fails_with_what_to_enable(
    vector_database_url: str, embeddings: EmbeddingsServer
) -> None:
    embeddings.script(kit.access_denied())
    status, finding, hint, _ = await check(bedrock_env(vector_database_url, embeddings))
    assert status is Status.FAIL
    assert "AccessDeniedException" in finding
    assert hint is not None
    assert "enable the model" in hint


async def test_throttling_right_now_is_only_a_warning(
    vector_database_url: str, embeddings: EmbeddingsServer
) -> None:
    embeddings.bedrock_dimensions = (768,)
    embeddings.script(kit.throttle())
    status, _, hint, _ = await check(bedrock_env(vector_database_url, embeddings))
    assert status is Status.WARN
    assert hint is not None
    assert "slows down and carries on" in hint


async def test_without_pgvector_it_warns_that_nothing_will_be_embedded(
    database_url: str, embeddings: EmbeddingsServer
) -> None:
    status, finding, hint, _ = await check(bedrock_env(database_url, embeddings))
    assert status is Status.WARN
    assert "no conversation_chunks.embedding column" in finding
    assert hint is not None
    assert "create extension vector" in hint
    assert embeddings.requests == []


async def test_it_is_skipped_when_embedding_is_off(database_url: str) -> None:
    status, finding, _, _ = await check({"DATABASE_URL": database_url})
    assert status is Status.SKIP
    assert "SOULWORKER_EMBED_PROVIDER=off" in finding


def test_the_command_prints_the_fix_line(
    vector_database_url: str, embeddings: EmbeddingsServer, tmp_path: Path
) -> None:
    env = bedrock_env(vector_database_url, embeddings)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SOULWORKER_", "AWS_", "OPENAI_", "DATABASE_URL", "PG"))
    }
    base["PYTHONPATH"] = str(REPO_ROOT)
    completed = subprocess.run(
        [sys.executable, "-m", "soulworker", "doctor", "--check", "embeddings"],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    (line,) = [line for line in lines if line.startswith("FAIL")]
    assert " ".join(line.split()) == "FAIL embeddings Titan V2 cannot produce 768 dimensions"
    fix = lines[lines.index(line) + 1].strip()
    assert fix.startswith("fix: set the embedding column to vector(1024)")
    assert kit.FAKE_AWS_SECRET_ACCESS_KEY not in completed.stdout + completed.stderr
