"""The embedder's pure parts: SigV4 against botocore's own signatures, unit-length vectors,
input budgets, the adaptive limiter, the retry policy's two kinds of patience, and the settings
(docs/embeddings.md)."""

from __future__ import annotations

import asyncio
import datetime
import json
import math

import pytest

from soulworker.embeddings.errors import EmbeddingThrottled, EmbeddingUnavailable
from soulworker.embeddings.pacing import AdaptiveLimiter
from soulworker.embeddings.retry import EmbedRetryPolicy
from soulworker.embeddings.sigv4 import AwsCredentials, canonical_path, sign_request
from soulworker.embeddings.vectors import (
    OPENAI_V3_LIMIT,
    TITAN_V2_LIMIT,
    cut_to_budget,
    normalized,
)
from soulworker.settings import Settings, SettingsError

# Signatures botocore 1.44 computed for this exact request (SigV4Auth("bedrock", "us-east-1")
# with the clock fixed at NOW): the signer must agree with the SDKs byte for byte.
URL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.titan-embed-text-v2%3A0/invoke"
BODY = json.dumps({"inputText": "hello", "dimensions": 1024, "normalize": True}).encode()
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
NOW = datetime.datetime(2026, 12, 7, 1, 2, 3, tzinfo=datetime.UTC)
KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # AWS's documented example key
BOTOCORE_SIGNATURE = "9aa718b7f52258e68eb0b4f30ba77c164846e8c96ede5e9f7b2e29d2100bc02c"
BOTOCORE_SIGNATURE_WITH_TOKEN = "71220ec1aee2f437c500d38e84fba3a2ed9109e568dd2480847ef8a7df311f67"


def test_sigv4_matches_botocore() -> None:
    added = sign_request(
        method="POST",
        url=URL,
        headers=HEADERS,
        body=BODY,
        credentials=AwsCredentials(KEY_ID, SECRET),
        region="us-east-1",
        now=NOW,
    )
    assert added == {
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/us-east-1/bedrock/"
        "aws4_request, SignedHeaders=accept;content-type;host;x-amz-date, "
        f"Signature={BOTOCORE_SIGNATURE}",
        "x-amz-date": "20261207T010203Z",
    }


def test_sigv4_with_a_session_token_matches_botocore() -> None:
    added = sign_request(
        method="POST",
        url=URL,
        headers=HEADERS,
        body=BODY,
        credentials=AwsCredentials(KEY_ID, SECRET, "TOKEN/abc=="),
        region="us-east-1",
        now=NOW,
    )
    assert added["x-amz-security-token"] == "TOKEN/abc=="
    assert added["Authorization"].endswith(f"Signature={BOTOCORE_SIGNATURE_WITH_TOKEN}")
    assert (
        "SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token"
        in (added["Authorization"])
    )


def test_the_encoded_model_id_is_encoded_again_in_the_canonical_path() -> None:
    assert canonical_path("/model/amazon.titan-embed-text-v2%3A0/invoke") == (
        "/model/amazon.titan-embed-text-v2%253A0/invoke"
    )


def test_credentials_are_never_in_their_repr() -> None:
    credentials = AwsCredentials.from_environ(
        {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": "t0k"}
    )
    assert credentials is not None
    assert SECRET not in repr(credentials)
    assert "t0k" not in repr(credentials)
    assert AwsCredentials.from_environ({"AWS_ACCESS_KEY_ID": KEY_ID}) is None


def test_vectors_are_scaled_to_unit_length() -> None:
    vector = normalized([3.0, 4.0])
    assert vector == [0.6, 0.8]
    assert math.isclose(math.fsum(v * v for v in normalized([1e-3] * 1024)), 1.0)
    with pytest.raises(ValueError, match="zeros"):
        normalized([0.0, 0.0])
    with pytest.raises(ValueError, match="non-finite"):
        normalized([1.0, math.nan])


def test_budgets_follow_the_documented_limits() -> None:
    assert TITAN_V2_LIMIT.char_budget == 8_192 * 3  # under Titan's 50,000 characters
    assert OPENAI_V3_LIMIT.char_budget == 8_191 * 3
    assert cut_to_budget("abcdef", 4) == ("abcd", True)
    assert cut_to_budget("abc", 4) == ("abc", False)


async def test_the_limiter_halves_on_throttling_and_grows_back() -> None:
    limiter = AdaptiveLimiter(8, min_pause_seconds=0.0, max_pause_seconds=0.0)
    limiter.throttled()
    assert limiter.allowed == 4
    limiter.throttled()
    limiter.throttled()
    limiter.throttled()
    assert limiter.allowed == 1, "never below one"
    for _ in range(1):
        limiter.succeeded()
    assert limiter.allowed == 2
    for _ in range(2 + 3 + 4 + 5 + 6 + 7):
        limiter.succeeded()
    assert limiter.allowed == 8
    for _ in range(100):
        limiter.succeeded()
    assert limiter.allowed == 8, "never above the setting"


async def test_the_limiter_bounds_requests_in_flight() -> None:
    limiter = AdaptiveLimiter(3)
    in_flight = 0
    peak = 0

    async def request() -> None:
        nonlocal in_flight, peak
        async with limiter.slot():
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.005)
            in_flight -= 1
            limiter.succeeded()

    await asyncio.gather(*(request() for _ in range(20)))
    assert peak == 3
    assert limiter.max_in_flight == 3


async def test_a_throttle_pauses_every_caller() -> None:
    limiter = AdaptiveLimiter(4, min_pause_seconds=0.05, max_pause_seconds=0.05)
    limiter.throttled()
    started = asyncio.get_running_loop().time()
    async with limiter.slot():
        pass
    assert asyncio.get_running_loop().time() - started >= 0.049


async def _attempts(policy: EmbedRetryPolicy, error: Exception) -> int:
    count = 0
    with pytest.raises(type(error)):
        async for attempt in policy.retrying():
            with attempt:
                count += 1
                raise error
    return count


async def test_outages_stop_after_max_attempts_but_throttling_goes_on() -> None:
    async def no_sleep(_: float) -> None:
        return None

    policy = EmbedRetryPolicy(max_attempts=3, throttle_budget_seconds=0.05, sleep=no_sleep)
    unavailable = EmbeddingUnavailable("down", operator_line="down: wait")
    assert await _attempts(policy, unavailable) == 3
    throttled = EmbeddingThrottled("slow", operator_line="slow: wait")
    assert await _attempts(policy, throttled) > 3, "throttling is not counted as attempts"


def test_embedding_settings_parse_and_refuse() -> None:
    settings = Settings.from_env(
        {
            "SOULWORKER_EMBED_PROVIDER": "Bedrock",
            "SOULWORKER_EMBED_DIMENSIONS": "1024",
            "SOULWORKER_EMBED_PRICE_PER_MTOK": "0.02",
            "SOULWORKER_EMBED_ENDPOINT_URL": "http://localhost:11434/v1/",
        }
    )
    assert settings.embed_provider == "bedrock"
    assert settings.embed_dimensions == 1024
    assert settings.embed_price_per_mtok == 0.02
    assert settings.embed_endpoint_url == "http://localhost:11434/v1"
    defaults = Settings.from_env({})
    assert defaults.embed_provider == "off"
    assert defaults.embed_dimensions is None
    assert defaults.embed_concurrency == 4
    with pytest.raises(SettingsError, match="SOULWORKER_EMBED_PROVIDER must be one of"):
        Settings.from_env({"SOULWORKER_EMBED_PROVIDER": "cohere"})
    with pytest.raises(SettingsError, match="SOULWORKER_EMBED_DIMENSIONS"):
        Settings.from_env({"SOULWORKER_EMBED_DIMENSIONS": "0"})
    with pytest.raises(SettingsError, match="SOULWORKER_EMBED_PRICE_PER_MTOK"):
        Settings.from_env({"SOULWORKER_EMBED_PRICE_PER_MTOK": "-1"})
