"""Both embedding providers against the test kit's embeddings server (a real loopback HTTP server):
vectors, batching, signing, throttling, outages, refusals, cuts and cost (docs/embeddings.md)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from decimal import Decimal
from http.server import BaseHTTPRequestHandler

import pytest

from soulworker.embeddings.bedrock import BedrockEmbedder
from soulworker.embeddings.embedder import HttpEmbedder
from soulworker.embeddings.errors import (
    EmbeddingConfigError,
    EmbeddingDimensionRefused,
    EmbeddingThrottled,
    EmbeddingUnavailable,
)
from soulworker.embeddings.factory import embedder_from_settings
from soulworker.embeddings.openai import BATCH_MAX_TEXTS
from soulworker.embeddings.retry import EmbedRetryPolicy
from soulworker.embeddings.vectors import OPENAI_V3_LIMIT, TITAN_V2_LIMIT
from soulworker.settings import Settings
from soulworker.testing import embeddings_server as kit
from soulworker.testing.embeddings_server import EmbeddingsServer, expected_vector
from soulworker.testing.loopback import LoopbackServer

FAST = EmbedRetryPolicy(
    max_attempts=4,
    backoff_initial_seconds=0.001,
    backoff_max_seconds=0.01,
    throttle_pause_initial_seconds=0.02,
    throttle_pause_max_seconds=0.1,
    throttle_budget_seconds=30,
)

TEXTS = [f"chunk {i}: what I said about gardening, week {i}" for i in range(20)]


@pytest.fixture
def server() -> Iterator[EmbeddingsServer]:
    with EmbeddingsServer() as running:
        yield running


def bedrock_env(server: EmbeddingsServer, **extra: str) -> dict[str, str]:
    return {
        "SOULWORKER_EMBED_PROVIDER": "bedrock",
        "SOULWORKER_EMBED_ENDPOINT_URL": server.base_url,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": kit.FAKE_AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": kit.FAKE_AWS_SECRET_ACCESS_KEY,
        **extra,
    }


def openai_env(server: EmbeddingsServer, **extra: str) -> dict[str, str]:
    return {
        "SOULWORKER_EMBED_PROVIDER": "openai",
        "SOULWORKER_EMBED_ENDPOINT_URL": server.openai_base_url,
        "SOULWORKER_EMBED_API_KEY": kit.FAKE_OPENAI_API_KEY,
        **extra,
    }


def make(env: Mapping[str, str], dimensions: int, retry: EmbedRetryPolicy = FAST) -> HttpEmbedder:
    settings = Settings.from_env(env)
    return embedder_from_settings(settings, dimensions=dimensions, environ=env, retry=retry)


def assert_vectors_of(vectors: list[list[float]], texts: list[str], dimensions: int) -> None:
    assert len(vectors) == len(texts)
    for vector, text in zip(vectors, texts, strict=True):
        assert len(vector) == dimensions
        assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-9)
        assert vector == pytest.approx(expected_vector(text, dimensions), abs=1e-12)


# --- the two protocols -------------------------------------------------------------------------


async def test_openai_batches_many_texts_per_request_and_normalizes(
    server: EmbeddingsServer,
) -> None:
    texts = [f"text number {i}" for i in range(2 * BATCH_MAX_TEXTS + 5)]
    async with make(openai_env(server), 768) as embedder:
        vectors = await embedder.embed(texts)
        again = await embedder.embed(texts[:3])
    assert_vectors_of(vectors, texts, 768)
    assert again == vectors[:3], "the same text gets the same vector"
    requests = server.answered
    # The batches run concurrently, so they arrive in any order; each keeps its texts' order.
    first = sorted(requests[:3], key=lambda r: texts.index(r.texts[0]))
    assert [len(r.texts) for r in first] == [BATCH_MAX_TEXTS, BATCH_MAX_TEXTS, 5]
    assert [t for r in first for t in r.texts] == texts, "in order, each text once"
    assert {r.dimensions for r in requests} == {768}, "text-embedding-3 is asked for the length"
    assert {r.model for r in requests} == {"text-embedding-3-small"}
    assert {r.headers["authorization"] for r in requests} == {"Bearer <redacted>"}
    assert embedder.usage.calls == 4
    assert embedder.usage.texts == len(texts) + 3


@pytest.mark.parametrize("provider", ["openai", "bedrock"])
async def test_the_benchmark_vector_bank_answers_both_protocols_consistently(
    provider: str,
) -> None:
    # The benchmarks' cheap answers must still be answers a client accepts: the right length,
    # a unit vector after normalizing, the same text always the same vector.
    texts = [f"bank text {i}" for i in range(40)]
    with EmbeddingsServer(vector_bank=8, bedrock_dimensions=(768,)) as banked:
        env = openai_env(banked) if provider == "openai" else bedrock_env(banked)
        async with make(env, 768) as embedder:
            vectors = await embedder.embed(texts)
            again = await embedder.embed(texts[:5])
        assert banked.tokens_billed > 0
    assert len(vectors) == len(texts)
    for vector in vectors:
        assert len(vector) == 768
        assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-9)
    assert again == vectors[:5]
    assert 1 < len({tuple(v) for v in vectors}) <= 8, "one of the bank's vectors per text"


async def test_openai_falls_back_to_openai_api_key(server: EmbeddingsServer) -> None:
    env = openai_env(server, OPENAI_API_KEY=kit.FAKE_OPENAI_API_KEY)
    del env["SOULWORKER_EMBED_API_KEY"]
    async with make(env, 256) as embedder:
        assert_vectors_of(await embedder.embed(TEXTS[:2]), TEXTS[:2], 256)


async def test_bedrock_signs_one_request_per_text_with_the_model_id_encoded(
    server: EmbeddingsServer,
) -> None:
    async with make(bedrock_env(server), 1024) as embedder:
        vectors = await embedder.embed(TEXTS[:5])
    assert_vectors_of(vectors, TEXTS[:5], 1024)
    requests = server.answered
    assert len(requests) == 5
    assert all(len(r.texts) == 1 for r in requests)
    assert sorted(r.texts[0] for r in requests) == sorted(TEXTS[:5])
    assert {r.path for r in requests} == {"/model/amazon.titan-embed-text-v2%3A0/invoke"}
    authorization = requests[0].headers["authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={kit.FAKE_AWS_ACCESS_KEY_ID}/")
    assert "/us-east-1/bedrock/aws4_request" in authorization
    assert kit.FAKE_AWS_SECRET_ACCESS_KEY not in str(requests)


async def test_bedrock_sends_a_session_token_with_temporary_credentials(
    server: EmbeddingsServer,
) -> None:
    env = bedrock_env(server, AWS_SESSION_TOKEN="session-token-fake")
    async with make(env, 512) as embedder:
        await embedder.embed(TEXTS[:1])
    (request,) = server.answered
    assert request.headers["x-amz-security-token"] == "<redacted>"
    assert "x-amz-security-token" in request.headers["authorization"]


async def test_bedrock_takes_an_api_key_as_bearer(server: EmbeddingsServer) -> None:
    env = {
        "SOULWORKER_EMBED_PROVIDER": "bedrock",
        "SOULWORKER_EMBED_ENDPOINT_URL": server.base_url,
        "AWS_REGION": "eu-west-1",
        "AWS_BEARER_TOKEN_BEDROCK": kit.FAKE_BEDROCK_API_KEY,
    }
    async with make(env, 256) as embedder:
        assert_vectors_of(await embedder.embed(TEXTS[:2]), TEXTS[:2], 256)
    assert {r.headers["authorization"] for r in server.answered} == {"Bearer <redacted>"}


def test_bedrock_without_region_or_credentials_says_what_to_set(server: EmbeddingsServer) -> None:
    env = bedrock_env(server)
    del env["AWS_REGION"]
    with pytest.raises(EmbeddingConfigError) as no_region:
        make(env, 1024)
    assert "AWS_REGION" in no_region.value.operator_line
    env = bedrock_env(server)
    del env["AWS_SECRET_ACCESS_KEY"]
    with pytest.raises(EmbeddingConfigError) as no_key:
        make(env, 1024)
    assert "AWS_BEARER_TOKEN_BEDROCK" in no_key.value.operator_line


async def test_blank_texts_are_the_callers_to_skip(server: EmbeddingsServer) -> None:
    async with make(openai_env(server), 768) as embedder:
        with pytest.raises(ValueError, match="blank"):
            await embedder.embed(["fine", "   "])
    assert server.requests == []


# --- throttling and outages ----------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["bedrock", "openai"])
async def test_throttling_slows_down_and_drops_nothing(
    server: EmbeddingsServer, provider: str
) -> None:
    env = bedrock_env(server) if provider == "bedrock" else openai_env(server)
    env["SOULWORKER_EMBED_CONCURRENCY"] = "4"
    texts = TEXTS if provider == "bedrock" else [f"t{i}" for i in range(5 * BATCH_MAX_TEXTS)]
    server.script(kit.throttle(times=6))
    started = time.monotonic()
    async with make(env, 256) as embedder:
        vectors = await embedder.embed(texts)
    assert_vectors_of(vectors, texts, 256)
    assert embedder.usage.throttled == 6
    assert embedder.usage.retries == 6
    assert embedder.limiter.throttles == 6
    assert time.monotonic() - started >= FAST.throttle_pause_initial_seconds, "it paused"
    answered = [text for request in server.answered for text in request.texts]
    assert sorted(answered) == sorted(texts), "every text answered exactly once"
    if provider == "bedrock":
        # 6 throttles took it down to one in flight; 14 answers later it is back at 4.
        assert embedder.limiter.allowed == 4, "recovered"


async def test_throttling_past_its_budget_is_a_transient_failure(server: EmbeddingsServer) -> None:
    server.script(kit.throttle(times=None))
    patient_briefly = EmbedRetryPolicy(
        throttle_pause_initial_seconds=0.01,
        throttle_pause_max_seconds=0.02,
        throttle_budget_seconds=0.2,
    )
    async with make(bedrock_env(server), 1024, patient_briefly) as embedder:
        with pytest.raises(EmbeddingThrottled) as caught:
            await embedder.embed(TEXTS[:1])
    assert not caught.value.permanent
    assert len(server.requests) > 2


@pytest.mark.parametrize("limit", ["600", "7200"])
def test_throttling_is_endured_for_as_long_as_the_jobs_time_limit(
    server: EmbeddingsServer, limit: str
) -> None:
    # Only the job's time limit ends a throttled job, whatever that limit is set to.
    env = openai_env(server, SOULWORKER_JOB_TIMEOUT_SECONDS=limit)
    embedder = embedder_from_settings(Settings.from_env(env), dimensions=768, environ=env)
    assert embedder.config.retry.throttle_budget_seconds == float(limit)


@pytest.mark.parametrize("provider", ["bedrock", "openai"])
async def test_server_errors_are_retried(server: EmbeddingsServer, provider: str) -> None:
    env = bedrock_env(server) if provider == "bedrock" else openai_env(server)
    server.script(kit.server_error(times=2))
    async with make(env, 512) as embedder:
        vectors = await embedder.embed(TEXTS[:1])
    assert_vectors_of(vectors, TEXTS[:1], 512)
    assert embedder.usage.retries == 2
    assert len(server.requests) == 3


async def test_an_outage_ends_after_the_attempts_as_a_transient_failure(
    server: EmbeddingsServer,
) -> None:
    server.script(kit.server_error(times=None))
    async with make(openai_env(server), 512) as embedder:
        with pytest.raises(EmbeddingUnavailable) as caught:
            await embedder.embed(TEXTS[:1])
    assert not caught.value.permanent
    assert caught.value.status_code == 500
    assert len(server.requests) == FAST.max_attempts


async def test_an_unreachable_endpoint_is_transient_and_names_the_setting() -> None:
    with EmbeddingsServer() as gone:
        env = openai_env(gone)
    async with make(env, 512) as embedder:
        with pytest.raises(EmbeddingUnavailable) as caught:
            await embedder.embed(TEXTS[:1])
    assert caught.value.code == "embedding_connection"
    assert "SOULWORKER_EMBED_ENDPOINT_URL" in caught.value.operator_line


# --- permanent refusals --------------------------------------------------------------------------


async def test_titan_refusing_768_dimensions_is_permanent_with_the_fix(
    server: EmbeddingsServer,
) -> None:
    async with make(bedrock_env(server), 768) as embedder:
        with pytest.raises(EmbeddingDimensionRefused) as caught:
            await embedder.embed(TEXTS[:1])
    error = caught.value
    assert error.permanent
    assert error.provider_error == "ValidationException"
    assert error.operator_line.startswith("Titan V2 cannot produce 768 dimensions: ")
    assert "vector(1024)" in error.operator_line
    assert "SOULWORKER_EMBED_PROVIDER=openai" in error.operator_line
    assert len(server.requests) == 1, "never retried"
    assert TEXTS[0] not in error.message + error.operator_line


async def test_titan_accepting_768_gives_768(server: EmbeddingsServer) -> None:
    server.bedrock_dimensions = (1024, 768, 512, 256)
    async with make(bedrock_env(server), 768) as embedder:
        assert_vectors_of(await embedder.embed(TEXTS[:1]), TEXTS[:1], 768)


async def test_openai_refusing_a_length_is_permanent_with_the_fix(
    server: EmbeddingsServer,
) -> None:
    async with make(openai_env(server), 2000) as embedder:
        with pytest.raises(EmbeddingDimensionRefused) as caught:
            await embedder.embed(TEXTS[:1])
    assert "refused 2000 dimensions for model 'text-embedding-3-small'" in (
        caught.value.operator_line
    )
    assert "vector(1536)" in caught.value.operator_line


async def test_a_model_of_another_length_is_refused_with_its_length(
    server: EmbeddingsServer,
) -> None:
    env = openai_env(server, SOULWORKER_EMBED_MODEL="nomic-embed-text")
    async with make(env, 1024) as embedder:
        with pytest.raises(EmbeddingDimensionRefused) as caught:
            await embedder.embed(TEXTS[:1])
    assert caught.value.operator_line.startswith(
        "model 'nomic-embed-text' returns 768 dimensions, not 1024: "
    )
    assert "vector(768)" in caught.value.operator_line
    assert server.requests[0].dimensions is None, "only text-embedding-3 is sent a length"


@pytest.mark.parametrize("provider", ["bedrock", "openai"])
async def test_access_denied_is_a_permanent_configuration_error(
    server: EmbeddingsServer, provider: str
) -> None:
    env = bedrock_env(server) if provider == "bedrock" else openai_env(server)
    server.script(kit.access_denied())
    async with make(env, 256) as embedder:
        with pytest.raises(EmbeddingConfigError) as caught:
            await embedder.embed(TEXTS[:3])
    assert caught.value.permanent
    assert caught.value.code == "embedding_access_denied"
    assert caught.value.status_code == 403
    if provider == "bedrock":
        assert "enable the model" in caught.value.operator_line
    assert len(server.requests) <= 3, "never retried"


@pytest.mark.parametrize("provider", ["bedrock", "openai"])
async def test_a_quota_of_zero_is_permanent_not_endless_retries(
    server: EmbeddingsServer, provider: str
) -> None:
    env = bedrock_env(server) if provider == "bedrock" else openai_env(server)
    server.script(kit.no_quota())
    async with make(env, 256) as embedder:
        with pytest.raises(EmbeddingConfigError) as caught:
            await embedder.embed(TEXTS[:1])
    assert caught.value.code == "embedding_quota"
    assert len(server.requests) == 1


async def test_refused_credentials_are_permanent(server: EmbeddingsServer) -> None:
    bad_bedrock = bedrock_env(server, AWS_ACCESS_KEY_ID="AKIDSOMEONEELSE00000")
    async with make(bad_bedrock, 1024) as embedder:
        with pytest.raises(EmbeddingConfigError) as bedrock_caught:
            await embedder.embed(TEXTS[:1])
    assert bedrock_caught.value.code == "embedding_auth"
    assert bedrock_caught.value.provider_error == "UnrecognizedClientException"
    bad_openai = openai_env(server, SOULWORKER_EMBED_API_KEY="sk-wrong")
    async with make(bad_openai, 256) as embedder:
        with pytest.raises(EmbeddingConfigError) as openai_caught:
            await embedder.embed(TEXTS[:1])
    assert openai_caught.value.code == "embedding_auth"
    assert "sk-wrong" not in openai_caught.value.operator_line


# --- cuts and cost -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "budget"),
    [("bedrock", TITAN_V2_LIMIT.char_budget), ("openai", OPENAI_V3_LIMIT.char_budget)],
)
async def test_long_input_is_cut_at_the_models_budget_and_counted(
    server: EmbeddingsServer, provider: str, budget: int
) -> None:
    env = bedrock_env(server) if provider == "bedrock" else openai_env(server)
    long_text = "word " * 20_000
    async with make(env, 256) as embedder:
        vectors = await embedder.embed([long_text, "short"])
        assert embedder.usage.cut_texts == 1
    received = sorted((t for r in server.answered for t in r.texts), key=len)
    assert received == ["short", long_text[:budget]]
    assert vectors[0] == pytest.approx(expected_vector(long_text[:budget], 256))


@pytest.mark.parametrize("provider", ["bedrock", "openai"])
async def test_dense_text_over_the_token_limit_is_cut_until_it_fits(
    server: EmbeddingsServer, provider: str
) -> None:
    server.chars_per_token = 1.0  # as dense as CJK: the character budget is not enough
    env = bedrock_env(server) if provider == "bedrock" else openai_env(server)
    dense = "語" * 20_000
    others = [f"short text {i}" for i in range(3)]
    async with make(env, 256) as embedder:
        vectors = await embedder.embed([others[0], dense, *others[1:]])
    assert embedder.usage.cut_texts == 1, "one text, counted once however often it was cut"
    sent = [t for r in server.answered for t in r.texts if t.startswith("語")]
    (fitted,) = sent
    assert len(fitted) <= 8_191
    assert dense.startswith(fitted)
    assert vectors[1] == pytest.approx(expected_vector(fitted, 256))
    assert vectors[0] == pytest.approx(expected_vector(others[0], 256)), "the others unchanged"
    assert vectors[3] == pytest.approx(expected_vector(others[2], 256))


async def test_usage_and_cost_are_counted_from_the_answers(server: EmbeddingsServer) -> None:
    async with make(bedrock_env(server), 1024) as bedrock:
        await bedrock.embed(TEXTS)
    assert isinstance(bedrock, BedrockEmbedder)
    assert bedrock.usage.input_tokens == server.tokens_billed > 0
    assert bedrock.usage.calls == len(TEXTS)
    assert bedrock.usage.cost_usd == Decimal(server.tokens_billed) * Decimal("0.02") / 10**6
    summary = bedrock.usage.to_json()
    assert summary["model"] == "amazon.titan-embed-text-v2:0"
    assert summary["input_tokens"] == server.tokens_billed

    env = openai_env(server, SOULWORKER_EMBED_PRICE_PER_MTOK="0.5")
    billed_before = server.tokens_billed
    async with make(env, 256) as openai:
        await openai.embed(TEXTS)
    tokens = server.tokens_billed - billed_before
    assert openai.usage.input_tokens == tokens
    assert openai.usage.cost_usd == Decimal(tokens) * Decimal("0.5") / 10**6


async def test_an_unpriced_model_counts_tokens_without_a_cost(server: EmbeddingsServer) -> None:
    env = openai_env(server, SOULWORKER_EMBED_MODEL="nomic-embed-text")
    async with make(env, 768) as embedder:
        await embedder.embed(TEXTS[:2])
    assert embedder.usage.input_tokens > 0
    assert embedder.usage.cost_usd is None
    assert embedder.usage.to_json()["cost_usd"] is None


async def test_concurrency_is_bounded_by_the_setting(server: EmbeddingsServer) -> None:
    server.latency_seconds = 0.02
    env = bedrock_env(server, SOULWORKER_EMBED_CONCURRENCY="3")
    async with make(env, 256) as embedder:
        await embedder.embed(TEXTS)
    assert server.max_in_flight == 3
    assert embedder.limiter.max_in_flight == 3


# --- answers no real service should give (a hostile or broken endpoint) -------------------------

BAD_ANSWERS = {
    "not JSON": b"<html>gateway</html>",
    "no data": b'{"object": "list"}',
    "fewer vectors": b'{"data": [{"index": 0, "embedding": [1.0, 0.0, 0.0]}]}',
    "all zeros": b'{"data": [{"index": 0, "embedding": [0, 0, 0]}, '
    b'{"index": 1, "embedding": [0, 0, 0]}]}',
    "not finite": b'{"data": [{"index": 0, "embedding": [NaN, 1, 1]}, '
    b'{"index": 1, "embedding": [Infinity, 1, 1]}]}',
    "lists for numbers": b'{"data": [{"index": 0, "embedding": [[1], [2], [3]]}, '
    b'{"index": 1, "embedding": [null, {}, "x"]}]}',
    "a huge index": b'{"data": [{"index": "' + b"9" * 5000 + b'", "embedding": [1, 1, 1]}]}',
}


@pytest.mark.parametrize("body", list(BAD_ANSWERS.values()), ids=list(BAD_ANSWERS))
async def test_a_broken_answer_is_a_bad_answer_never_a_crash_nor_a_leak(body: bytes) -> None:
    class Answers(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    endpoint = LoopbackServer(Answers, name="broken-embeddings")
    try:
        env = {
            "SOULWORKER_EMBED_PROVIDER": "openai",
            "SOULWORKER_EMBED_ENDPOINT_URL": endpoint.base_url + "/v1",
            "SOULWORKER_EMBED_API_KEY": kit.FAKE_OPENAI_API_KEY,
        }
        texts = ["my private note one", "my private note two"]
        async with make(env, 3) as embedder:
            with pytest.raises(EmbeddingUnavailable) as caught:
                await embedder.embed(texts)
    finally:
        endpoint.stop()
    error = caught.value
    assert error.code == "embedding_bad_answer"
    assert not error.permanent, "a broken answer may be a passing fault: the job is retried"
    shown = " ".join([str(error), repr(error), str(getattr(error, "operator_line", ""))])
    assert "private note" not in shown and kit.FAKE_OPENAI_API_KEY not in shown
