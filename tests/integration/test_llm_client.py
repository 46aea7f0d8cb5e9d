"""The model client against a real HTTP server that speaks the Messages API, through the real
SDK: structured answers, retries, failures, concurrency, usage and cost, and secrecy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import pytest
import structlog

from soulworker.errors import PermanentJobError, TransientJobError
from soulworker.llm.ai_name import FALLBACK_NAMES
from soulworker.llm.client import (
    PURPOSE_HEADER,
    ModelClient,
    ModelClientConfig,
)
from soulworker.llm.errors import (
    ModelAuthFailed,
    ModelBadOutput,
    ModelContextExceeded,
    ModelRefused,
    ModelRequestRejected,
    ModelSpendLimit,
    ModelTruncated,
    ModelUnavailable,
    is_spend_limit_error,
)
from soulworker.llm.models import estimate_tokens
from soulworker.llm.pricing import DEFAULT_PRICES, PriceTable
from soulworker.llm.retry import RetryPolicy, is_retryable_api_error, retry_after_seconds
from soulworker.llm.schemas import FACT_EXTRACTION, SOULPRINT, OutputSchema
from soulworker.llm.usage import CallUsage, UsageLedger
from soulworker.testing import messages_api as fakes
from soulworker.testing.messages_api import FakeMessagesAPI, RecordedRequest, schema_responder

API_KEY = "sk-ant-api03-TESTSECRET-0123456789abcdefghij"
MODEL = "claude-haiku-4-5"
SYSTEM = "You analyse conversations."
CONTENT = "<conversation_data>\nUser: I love sailing.\n</conversation_data>"


class RecordingSleep:
    """Stands in for ``asyncio.sleep`` in the retry policy: records the wait, does not wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@contextlib.contextmanager
def captured_logs() -> Iterator[list[structlog.typing.EventDict]]:
    """Every structlog event at any level, whatever level the session configured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


@pytest.fixture
def fake() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as server:
        yield server


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


def make_client(
    fake: FakeMessagesAPI,
    sleeps: RecordingSleep,
    *,
    ledger: UsageLedger | None = None,
    max_concurrent_calls: int = 5,
    request_timeout_seconds: float = 5.0,
    prices: PriceTable | None = None,
    **policy: Any,
) -> ModelClient:
    config = ModelClientConfig(
        api_key=API_KEY,
        base_url=fake.base_url,
        request_timeout_seconds=request_timeout_seconds,
        max_concurrent_calls=max_concurrent_calls,
        retry=RetryPolicy(sleep=sleeps, **policy),
    )
    return ModelClient(config, ledger=ledger, prices=prices)


async def ask(client: ModelClient, schema: OutputSchema = SOULPRINT, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "purpose": "quick_pass",
        "model": MODEL,
        "system": SYSTEM,
        "content": CONTENT,
        "schema": schema,
        "max_tokens": 4096,
    }
    args.update(kw)
    return await client.structured(**args)


# --- a valid answer -----------------------------------------------------------------------------


async def test_valid_structured_answer(fake: FakeMessagesAPI, sleeps: RecordingSleep) -> None:
    ledger = UsageLedger()
    async with make_client(fake, sleeps, ledger=ledger) as client:
        answer = await ask(client)
    assert SOULPRINT.validate(answer.data) == []
    (request,) = fake.message_requests
    assert answer.data == schema_responder(request)  # exactly what the server sent
    assert answer.stop_reason == "end_turn"
    assert answer.attempts == 1
    (sent,) = fake.responses
    assert answer.usage == CallUsage(
        MODEL, sent["usage"]["input_tokens"], sent["usage"]["output_tokens"]
    )
    assert answer.request_id is not None and answer.request_id.startswith("req_")
    price = DEFAULT_PRICES[MODEL]
    expected_cost = (
        answer.usage.input_tokens * price.input_per_mtok
        + answer.usage.output_tokens * price.output_per_mtok
    ) / Decimal(1_000_000)
    assert answer.cost_usd == expected_cost
    assert ledger.by_purpose["quick_pass"].calls == 1
    assert ledger.total.cost_usd == expected_cost
    assert sleeps.waits == []


async def test_request_carries_the_schema_and_no_sampling_parameters(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    async with make_client(fake, sleeps) as client:
        await ask(client, schema=FACT_EXTRACTION, purpose="fact_extraction", max_tokens=2048)
    (request,) = fake.message_requests
    body = request.body
    assert body["output_config"] == {
        "format": {"type": "json_schema", "schema": FACT_EXTRACTION.wire_schema}
    }
    assert not {"temperature", "top_p", "top_k", "tools", "tool_choice"} & set(body)
    assert body["model"] == MODEL
    assert body["max_tokens"] == 2048
    assert body["system"] == SYSTEM
    assert body["messages"] == [{"role": "user", "content": CONTENT}]
    headers = request.headers
    assert headers["authorization"] == f"Bearer {fakes.REDACTED}"
    assert "x-api-key" not in headers
    assert headers["anthropic-version"] == "2026-10-21"
    assert headers[PURPOSE_HEADER.lower()] == "fact_extraction"
    assert headers["x-stainless-retry-count"] == "0"


async def test_base_url_comes_from_the_environment_when_not_configured(
    fake: FakeMessagesAPI, sleeps: RecordingSleep, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    config = ModelClientConfig(api_key=API_KEY, retry=RetryPolicy(sleep=sleeps))
    async with ModelClient(config) as client:
        await ask(client)
    assert len(fake.message_requests) == 1


async def test_count_tokens_asks_the_api_and_costs_nothing(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    ledger = UsageLedger()
    async with make_client(fake, sleeps, ledger=ledger) as client:
        counted = await client.count_tokens(
            model=MODEL, system=SYSTEM, content=CONTENT, schema=SOULPRINT
        )
    (request,) = fake.requests
    assert request.path == "/v1/messages/count_tokens"
    assert counted == fakes.estimate_tokens(request.text)
    assert request.body["output_config"]["format"]["schema"] == SOULPRINT.wire_schema
    assert request.purpose == "count_tokens"
    assert ledger.to_dict()["by_purpose"] == {}
    assert estimate_tokens("x" * 9) == 3


# --- retries ------------------------------------------------------------------------------------


async def test_429_with_retry_after_is_honoured(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    ledger = UsageLedger()
    fake.script(fakes.rate_limited(retry_after=2), fakes.rate_limited(retry_after_ms=1500))
    async with make_client(fake, sleeps, ledger=ledger) as client:
        answer = await ask(client)
    assert answer.attempts == 3
    assert len(fake.message_requests) == 3
    assert len(sleeps.waits) == 2
    assert 2.0 <= sleeps.waits[0] <= 2.2  # the hint plus at most 10 % jitter
    assert 1.5 <= sleeps.waits[1] <= 1.65
    assert ledger.by_purpose["quick_pass"].failed_requests == 2
    assert ledger.by_purpose["quick_pass"].calls == 1


async def test_retry_after_over_the_cap_is_capped(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    fake.script(fakes.rate_limited(retry_after=3600))
    async with make_client(fake, sleeps, retry_after_cap_seconds=7.5) as client:
        await ask(client)
    assert sleeps.waits == [7.5]


async def test_529_and_500_are_retried_with_backoff(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    fake.script(fakes.overloaded(), fakes.server_error(), fakes.server_error(503))
    async with make_client(
        fake, sleeps, backoff_initial_seconds=0.5, backoff_max_seconds=3.0
    ) as client:
        answer = await ask(client)
    assert answer.attempts == 4
    assert len(sleeps.waits) == 3
    # Full jitter below an exponential ceiling: 0.5*2^n capped at 3.
    for n, wait in enumerate(sleeps.waits, start=1):
        assert 0.0 <= wait <= min(3.0, 0.5 * 2**n)


async def test_exhausted_retries_are_transient(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    fake.script(fakes.overloaded(times=10))
    async with make_client(fake, sleeps, max_attempts=3) as client:
        with pytest.raises(ModelUnavailable) as caught:
            await ask(client)
    assert isinstance(caught.value, TransientJobError)
    assert caught.value.status_code == 529
    assert caught.value.attempts == 3
    assert caught.value.request_id is not None
    assert len(fake.message_requests) == 3


async def test_total_time_bound_stops_before_a_long_wait(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    fake.script(fakes.rate_limited(retry_after=30))
    async with make_client(fake, sleeps, max_total_seconds=10) as client:
        with pytest.raises(ModelUnavailable):
            await ask(client)
    assert len(fake.message_requests) == 1
    assert sleeps.waits == []


async def test_timeouts_are_retried(fake: FakeMessagesAPI, sleeps: RecordingSleep) -> None:
    fake.script(fakes.slow(1.0))
    async with make_client(fake, sleeps, request_timeout_seconds=0.2) as client:
        answer = await ask(client)
    assert answer.attempts == 2
    fake.script(fakes.slow(1.0, times=2))
    async with make_client(fake, sleeps, request_timeout_seconds=0.2, max_attempts=2) as client:
        with pytest.raises(ModelUnavailable) as caught:
            await ask(client)
    assert caught.value.code == "model_timeout"


async def test_x_should_retry_false_is_obeyed(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    fake.script(fakes.server_error(headers={"x-should-retry": "false"}))
    async with make_client(fake, sleeps) as client:
        with pytest.raises(ModelUnavailable):
            await ask(client)
    assert len(fake.message_requests) == 1


# --- permanent failures --------------------------------------------------------------------------


async def test_401_is_permanent_and_never_shows_the_key(
    fake: FakeMessagesAPI, sleeps: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(fakes.unauthorized())
    with captured_logs() as logs:
        # The SDK's and the HTTP stack's own loggers too, below the level the daemon keeps.
        for name in (None, "anthropic", "httpx2", "httpcore2"):
            caplog.set_level(logging.DEBUG, logger=name)
        client = make_client(fake, sleeps)
        async with client:
            with pytest.raises(ModelAuthFailed) as caught:
                await ask(client)
    error = caught.value
    assert isinstance(error, PermanentJobError)
    assert error.code == "model_auth_failed"
    assert error.status_code == 401
    assert len(fake.message_requests) == 1
    # The SDK exception (whose request holds the key) is not attached.
    assert error.__cause__ is None
    assert error.__context__ is None
    texts = [str(error), repr(error), repr(error.args), repr(vars(error)), repr(client)]
    texts.append(repr(client.config))
    texts.extend(repr(entry) for entry in logs)
    texts.extend(record.getMessage() for record in caplog.records)
    texts.extend(repr(record.args) for record in caplog.records)
    assert caplog.records  # the SDK did log at DEBUG, and still not the key
    for text in texts:
        assert API_KEY not in text
        assert "TESTSECRET" not in text


async def test_403_is_permanent(fake: FakeMessagesAPI, sleeps: RecordingSleep) -> None:
    fake.script(fakes.permission_denied())
    async with make_client(fake, sleeps) as client:
        with pytest.raises(ModelAuthFailed) as caught:
            await ask(client)
    assert caught.value.code == "model_permission_denied"
    assert len(fake.message_requests) == 1


@pytest.mark.parametrize("fault", [fakes.spend_limit, fakes.credit_balance_too_low])
async def test_spend_limit_is_permanent_and_not_retried(
    fake: FakeMessagesAPI, sleeps: RecordingSleep, fault: Any
) -> None:
    fake.script(fault(times=5))
    async with make_client(fake, sleeps) as client:
        with pytest.raises(ModelSpendLimit) as caught:
            await ask(client)
    assert isinstance(caught.value, PermanentJobError)
    assert len(fake.message_requests) == 1
    assert sleeps.waits == []
    assert "spend limit" in caught.value.message


async def test_spend_limit_maps_to_the_sdk_class(fake: FakeMessagesAPI) -> None:
    """The fake's spend-limit shape is the one the SDK recognises."""
    fake.script(fakes.spend_limit())
    async with anthropic.AsyncAnthropic(
        api_key=API_KEY, base_url=fake.base_url, max_retries=0
    ) as sdk:
        with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as caught:
            await sdk.messages.create(
                model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
    assert is_spend_limit_error(caught.value)
    assert not is_retryable_api_error(caught.value)


@pytest.mark.parametrize(
    ("fault", "error", "code"),
    [
        (fakes.bad_request, ModelRequestRejected, "model_request_rejected"),
        (fakes.not_found, ModelRequestRejected, "model_not_found"),
        (
            lambda: fakes.bad_request("prompt is too long: 250000 tokens > 200000 maximum"),
            ModelContextExceeded,
            "model_context_exceeded",
        ),
    ],
)
async def test_rejected_requests_are_not_retried(
    fake: FakeMessagesAPI, sleeps: RecordingSleep, fault: Any, error: type[Exception], code: str
) -> None:
    fake.script(fault())
    async with make_client(fake, sleeps) as client:
        with pytest.raises(error) as caught:
            await ask(client)
    assert getattr(caught.value, "code", None) == code
    assert len(fake.message_requests) == 1
    assert "250000" not in str(caught.value)  # the API's wording is never shown


# --- answers that cannot be used ------------------------------------------------------------------


async def test_max_tokens_is_truncation(fake: FakeMessagesAPI, sleeps: RecordingSleep) -> None:
    ledger = UsageLedger()
    fake.script(fakes.truncated())
    async with make_client(fake, sleeps, ledger=ledger) as client:
        with pytest.raises(ModelTruncated) as caught:
            await ask(client, max_tokens=300)
    assert not isinstance(caught.value, ModelContextExceeded)
    assert caught.value.max_tokens == 300
    assert caught.value.can_raise_limit
    assert isinstance(caught.value, TransientJobError)
    assert len(fake.message_requests) == 1
    # The truncated answer was billed: it is in the ledger.
    assert ledger.total.calls == 1
    assert ledger.total.output_tokens == 300


async def test_context_window_exceeded(fake: FakeMessagesAPI, sleeps: RecordingSleep) -> None:
    fake.script(fakes.context_exceeded())
    async with make_client(fake, sleeps) as client:
        with pytest.raises(ModelContextExceeded) as caught:
            await ask(client)
    assert not caught.value.can_raise_limit
    assert len(fake.message_requests) == 1


async def test_refusal_is_permanent(fake: FakeMessagesAPI, sleeps: RecordingSleep) -> None:
    fake.script(fakes.refusal())
    async with make_client(fake, sleeps) as client:
        with pytest.raises(ModelRefused) as caught:
            await ask(client)
    assert caught.value.message == "The model declined to analyse this export."
    assert caught.value.category == "general_harms"
    assert isinstance(caught.value, PermanentJobError)
    assert len(fake.message_requests) == 1


async def test_invalid_json_is_asked_again_once_with_feedback_then_bad_output(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    ledger = UsageLedger()
    fake.script(fakes.invalid_json(times=2))
    async with make_client(fake, sleeps, ledger=ledger) as client:
        with pytest.raises(ModelBadOutput) as caught:
            await ask(client)
    assert caught.value.code == "model_invalid_json"
    assert caught.value.message == "The model's answers could not be used."
    assert isinstance(caught.value, TransientJobError)
    assert caught.value.__context__ is None  # the decoder error (holding the text) is dropped
    first, second = fake.message_requests
    assert first.body["messages"] == [{"role": "user", "content": CONTENT}]
    [turn] = second.body["messages"]
    assert turn["content"][0] == {"type": "text", "text": CONTENT}
    assert "- $: not valid JSON" in turn["content"][1]["text"]
    assert fake.repeated_bodies() == [], "the re-ask is a different request"
    assert ledger.total.calls == 2  # both answers were billed
    assert sleeps.waits == [], "a bad answer is not load: no wait"


@pytest.mark.parametrize("stop_reason", ["pause_turn", "stop_sequence", "tool_use"])
async def test_an_unexpected_stop_reason_is_a_bad_output(
    fake: FakeMessagesAPI, sleeps: RecordingSleep, stop_reason: str
) -> None:
    fake.script(fakes.stopped(stop_reason, times=2))
    async with make_client(fake, sleeps) as client:
        with pytest.raises(ModelBadOutput) as caught:
            await ask(client)
    assert caught.value.code == "model_unexpected_stop"
    assert caught.value.problems == (f"$: the answer ended early (stop_reason {stop_reason})",)
    assert len(fake.message_requests) == 2


async def test_one_bad_answer_then_a_good_one_succeeds(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    fake.script(fakes.raw_text("[1, 2, 3]"))
    async with make_client(fake, sleeps) as client:
        answer = await ask(client)
    assert (answer.attempts, answer.asked_again) == (2, True)
    assert SOULPRINT.validate(answer.data) == []
    assert "- $: expected object" in fake.message_requests[1].text


def soulprint_answer(seed: str = "x") -> dict[str, Any]:
    body = {
        "messages": [{"content": seed}],
        "output_config": {"format": {"schema": SOULPRINT.wire_schema}},
    }
    return schema_responder(RecordedRequest("POST", "/v1/messages", {}, body))


async def test_two_hard_violations_in_a_row_fail_the_call_without_a_third_request(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    broken = soulprint_answer()
    broken["soul"]["formality_level"] = "extremely formal"
    del broken["identity"]["ai_name"]
    fake.script(fakes.answer(broken, times=5))
    with captured_logs() as logs:
        async with make_client(fake, sleeps) as client:
            with pytest.raises(ModelBadOutput) as caught:
                await ask(client)
    assert caught.value.problems == (
        "$.soul.formality_level: not one of the allowed values",
        "$.identity.ai_name: missing",
    )
    assert len(fake.message_requests) == 2
    feedback = fake.message_requests[1].body["messages"][0]["content"][1]["text"]
    assert "$.soul.formality_level: not one of the allowed values" in feedback
    assert "$.identity.ai_name: missing" in feedback
    assert "extremely" not in feedback, "rules and paths, never values"
    assert fake.repeated_bodies() == []
    outcomes = [e["outcome"] for e in logs if e["event"] == "model_call"]
    assert outcomes == ["model_bad_output", "model_bad_output"]
    assert "extremely" not in repr(logs)


async def test_soft_violations_are_repaired_without_asking_again(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    loose = soulprint_answer()
    loose["soul"]["personality_traits"] = ["curious"]
    loose["user"]["interests"] = [f"interest {n}" for n in range(30)]
    loose["agents"]["response_style"] = "Long. " * 500
    del loose["tools"]["depth_preference"]
    fake.script(fakes.answer(loose))
    with captured_logs() as logs:
        async with make_client(fake, sleeps) as client:
            answer = await ask(client)
    assert len(fake.message_requests) == 1
    assert (answer.attempts, answer.asked_again) == (1, False)
    assert sorted(str(r) for r in answer.repairs) == [
        "$.agents.response_style: max_length",
        "$.soul.personality_traits: min_items",
        "$.tools.depth_preference: missing",
        "$.user.interests: max_items",
    ]
    assert answer.data["soul"]["personality_traits"] == ["curious"]
    assert len(answer.data["user"]["interests"]) == 12
    assert len(answer.data["agents"]["response_style"]) <= 600
    assert answer.data["tools"]["depth_preference"] == "not enough data"
    [call] = [e for e in logs if e["event"] == "model_call"]
    assert call["outcome"] == "repaired"
    assert "Long." not in repr(logs)


def generic_name_responder(request: RecordedRequest) -> dict[str, Any]:
    data = schema_responder(request)
    data["identity"]["ai_name"] = "Assistant"
    return data


async def test_a_generic_ai_name_twice_gets_a_fallback_name(sleeps: RecordingSleep) -> None:
    with (
        FakeMessagesAPI(responder=generic_name_responder) as fake,
        captured_logs() as logs,
    ):
        async with make_client(fake, sleeps) as client:
            answer = await ask(client)
        assert len(fake.message_requests) == 2
        assert "$.identity.ai_name: generic name" in fake.message_requests[1].text
    name = answer.data["identity"]["ai_name"]
    assert name in FALLBACK_NAMES
    assert "$.identity.ai_name: fallback_name" in [str(r) for r in answer.repairs]
    calls = [e for e in logs if e["event"] == "model_call"]
    assert [e["outcome"] for e in calls] == ["model_bad_output", "repaired"]
    assert all("Assistant" not in repr(e) for e in logs)


async def test_generic_name_once_then_a_real_one(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    first = soulprint_answer()
    first["identity"]["ai_name"] = "My AI"
    fake.script(fakes.answer(first))
    async with make_client(fake, sleeps) as client:
        answer = await ask(client)
    assert answer.attempts == 2
    assert answer.data["identity"]["ai_name"] != "My AI"
    assert answer.data["identity"]["ai_name"] not in FALLBACK_NAMES


async def test_a_transport_failure_of_the_re_ask_sends_the_same_re_ask_again(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    first = soulprint_answer()
    first["identity"]["ai_name"] = ""
    fake.script(fakes.answer(first), fakes.overloaded())
    async with make_client(fake, sleeps) as client:
        answer = await ask(client)
    assert answer.attempts == 3
    bodies = [r.body for r in fake.message_requests]
    assert bodies[1] == bodies[2] != bodies[0]
    assert fake.repeated_bodies() == [], "the same body only after a transport failure"


# --- concurrency ----------------------------------------------------------------------------------


async def test_concurrency_limit_is_never_exceeded(sleeps: RecordingSleep) -> None:
    limit = 3
    with FakeMessagesAPI(latency_seconds=0.05) as fake:
        async with make_client(fake, sleeps, max_concurrent_calls=limit) as client:
            answers = await asyncio.gather(
                *(ask(client, content=f"{CONTENT} {i}") for i in range(20))
            )
        assert len(answers) == 20
        assert fake.max_in_flight == limit  # reached, never exceeded


async def test_job_views_share_the_process_limit_and_keep_their_own(
    sleeps: RecordingSleep,
) -> None:
    with FakeMessagesAPI(latency_seconds=0.05) as fake:
        async with make_client(fake, sleeps, max_concurrent_calls=3) as client:
            job_a = client.for_job(UsageLedger(), max_concurrent_calls=2)
            job_b = client.for_job(UsageLedger(), max_concurrent_calls=2)
            await asyncio.gather(
                *(ask(job_a, purpose="job_a", content=f"a{i}") for i in range(10)),
                *(ask(job_b, purpose="job_b", content=f"b{i}") for i in range(10)),
            )
            await job_a.aclose()  # a view does not close the shared pool
            await ask(client)
        assert fake.max_in_flight == 3
        assert fake.max_in_flight_for("job_a") == 2
        assert fake.max_in_flight_for("job_b") == 2
        assert fake.calls_by_purpose() == {"job_a": 10, "job_b": 10, "quick_pass": 1}
        assert job_a.ledger is not None and job_a.ledger.total.calls == 10
        assert job_b.ledger is not None and job_b.ledger.total.calls == 10


async def test_a_retry_wait_does_not_hold_a_slot(sleeps: RecordingSleep) -> None:
    gate = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        sleeps.waits.append(seconds)
        await gate.wait()

    with FakeMessagesAPI() as fake:
        fake.script(fakes.overloaded(when=lambda r: "first" in r.text))
        config = ModelClientConfig(
            api_key=API_KEY,
            base_url=fake.base_url,
            max_concurrent_calls=1,
            retry=RetryPolicy(sleep=slow_sleep),
        )
        async with ModelClient(config) as client:
            first = asyncio.create_task(ask(client, content="first"))
            while not sleeps.waits:
                await asyncio.sleep(0.01)
            # The first call is waiting to retry; with one slot, the second still gets through.
            await asyncio.wait_for(ask(client, content="second"), timeout=5)
            gate.set()
            await first


async def test_cancelling_a_call_releases_its_slot(sleeps: RecordingSleep) -> None:
    with FakeMessagesAPI() as fake:
        fake.script(fakes.slow(2.0, when=lambda r: "stuck" in r.text))
        async with make_client(fake, sleeps, max_concurrent_calls=1) as client:
            stuck = asyncio.create_task(ask(client, content="stuck"))
            while not fake.requests:
                await asyncio.sleep(0.01)
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck
            answer = await asyncio.wait_for(ask(client, content="next"), timeout=1.5)
        assert answer.attempts == 1


# --- usage and cost -------------------------------------------------------------------------------


async def test_usage_and_cost_accumulate_across_calls(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    ledger = UsageLedger()
    cache = {"cache_creation_input_tokens": 1200, "cache_read_input_tokens": 4000}
    fake.script(
        fakes.rate_limited(retry_after=0),
        fakes.Fault(kind="delay", usage=cache, when=lambda r: r.purpose == "fact_extraction"),
        fakes.invalid_json(when=lambda r: r.purpose == "fact_extraction"),
    )
    table = PriceTable.defaults()
    async with make_client(fake, sleeps, ledger=ledger, prices=table) as client:
        await ask(client)
        for i in range(3):
            await ask(client, purpose="fact_extraction", schema=FACT_EXTRACTION, content=f"c{i}")
    responses = fake.responses
    assert len(responses) == 5  # 1 quick pass + 3 facts + 1 rejected answer
    expected_cost = Decimal(0)
    for sent in responses:
        usage = sent["usage"]
        call = CallUsage(
            MODEL,
            usage["input_tokens"],
            usage["output_tokens"],
            usage["cache_creation_input_tokens"],
            0,
            usage["cache_read_input_tokens"],
        )
        cost = table.cost_usd(call)
        assert cost is not None
        expected_cost += cost
    total = ledger.total
    assert total.calls == 5
    assert total.failed_requests == 1
    assert total.input_tokens == sum(r["usage"]["input_tokens"] for r in responses)
    assert total.output_tokens == sum(r["usage"]["output_tokens"] for r in responses)
    assert total.cache_creation_input_tokens == 1200
    assert total.cache_read_input_tokens == 4000
    assert total.cost_usd == expected_cost
    assert ledger.by_purpose["fact_extraction"].calls == 4
    assert ledger.by_purpose["quick_pass"].failed_requests == 1
    assert UsageLedger.from_dict(ledger.to_dict()).to_dict() == ledger.to_dict()


async def test_unknown_model_is_recorded_without_cost(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    ledger = UsageLedger()
    async with make_client(fake, sleeps, ledger=ledger) as client:
        answer = await ask(client, model="claude-unknown-1")
    assert answer.cost_usd is None
    assert ledger.total.unpriced_calls == 1
    assert ledger.total.input_tokens == answer.usage.input_tokens
    assert ledger.total.cost_usd == 0


async def test_logs_carry_metrics_but_never_text(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    fake.script(fakes.overloaded())
    with captured_logs() as logs:
        async with make_client(fake, sleeps) as client:
            answer = await ask(client)
    events = [e["event"] for e in logs]
    assert events == ["model_call", "model_call_retry", "model_call"]
    done = logs[-1]
    assert done["purpose"] == "quick_pass"
    assert done["model"] == MODEL
    assert done["attempt"] == 2
    assert done["input_tokens"] == answer.usage.input_tokens
    assert done["output_tokens"] == answer.usage.output_tokens
    assert isinstance(done["latency_ms"], int)
    assert logs[0]["outcome"] == "http_529"
    text = repr(logs)
    assert "sailing" not in text
    for value in answer.data["identity"].values():
        assert repr(value) not in text


# --- pure helpers of the retry policy -----------------------------------------------------------


def status_error(status: int, headers: dict[str, str]) -> anthropic.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    response = httpx2.Response(status, headers=headers, request=request)
    return anthropic.APIStatusError("error", response=response, body=None)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2026 07:28:30 GMT"}, 30.0),
        ({"retry-after": "Wed, 21 Oct 2026 07:27:00 GMT"}, None),  # in the past
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({}, None),
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    now = 1792567680.0  # Wed, 21 Oct 2026 07:28:00 GMT
    assert retry_after_seconds(status_error(429, headers), now=now) == expected


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
        (529, True),
    ],
)
def test_retryable_statuses(status: int, retryable: bool) -> None:
    assert is_retryable_api_error(status_error(status, {})) is retryable


def test_config_hides_the_key_and_refuses_bad_values() -> None:
    config = ModelClientConfig(api_key=API_KEY)
    assert API_KEY not in repr(config)
    with pytest.raises(ValueError, match="empty") as caught:
        ModelClientConfig(api_key="  ")
    assert "  " not in str(caught.value).replace("the model API key is empty", "")
    with pytest.raises(ValueError):
        ModelClientConfig(api_key=API_KEY, max_concurrent_calls=0)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


async def test_bad_arguments_fail_before_any_request(
    fake: FakeMessagesAPI, sleeps: RecordingSleep
) -> None:
    async with make_client(fake, sleeps) as client:
        with pytest.raises(ValueError, match="purpose"):
            await ask(client, purpose="Quick Pass!")
        with pytest.raises(ValueError, match="max_tokens"):
            await ask(client, max_tokens=0)
    assert fake.requests == []
