"""The model client's OpenTelemetry spans carry metadata only, whatever the environment says.

The SDK puts the prompts and the answers into its spans when
``ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE=content`` is set and the client was given no
``open_telemetry`` option. These tests set that variable, record every span in memory, and send
real requests through the real SDK to a loopback Messages API server: the SDK alone leaks the
text (so the recording would see a leak), our client does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from soulworker.llm.client import METADATA_ONLY_TRACES, ModelClient, ModelClientConfig
from soulworker.llm.retry import RetryPolicy
from soulworker.llm.schemas import SOULPRINT
from tests.fakes.messages_api import FakeMessagesAPI

API_KEY = "sk-ant-api03-TESTSECRET-0123456789abcdefghij"
MODEL = "claude-haiku-4-5"
# Words that appear nowhere but in the conversation and in the system prompt.
CONVERSATION_MARKER = "zanzibarquokka"
SYSTEM_MARKER = "pelicanmarmalade"
CONTENT_ENV = {
    "ANTHROPIC_OPEN_TELEMETRY": "true",
    "ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE": "content",
    "ANTHROPIC_OPEN_TELEMETRY_TRACES_MAX_CONTENT_BYTES": "1000000",
}

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span of the test, recorded by the process's tracer provider (set once: the
    OpenTelemetry API allows one per process)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
def content_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CONTENT_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def fake() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as server:
        yield server


def _texts(span: ReadableSpan) -> list[str]:
    """Every string a span carries: its name, attributes, and its events' names and attributes."""
    texts = [span.name]
    attribute_sets: list[Any] = [span.attributes or {}]
    for event in span.events:
        texts.append(event.name)
        attribute_sets.append(event.attributes or {})
    for attributes in attribute_sets:
        for key, value in attributes.items():
            texts.append(str(key))
            texts.append(str(value))
    return texts


def _leaks(recorded: tuple[ReadableSpan, ...]) -> list[str]:
    return [
        text
        for span in recorded
        for text in _texts(span)
        if CONVERSATION_MARKER in text or SYSTEM_MARKER in text
    ]


@pytest.mark.usefixtures("content_env")
async def test_the_sdk_alone_puts_the_conversation_into_spans_when_the_environment_asks(
    fake: FakeMessagesAPI, spans: InMemorySpanExporter
) -> None:
    """The control: the variable works, and the recording would see the text."""
    async with anthropic.AsyncAnthropic(
        api_key=API_KEY, base_url=fake.base_url, max_retries=0
    ) as sdk:
        assert sdk.open_telemetry["traces"]["content_mode"] == "content"
        await sdk.messages.create(
            model=MODEL,
            max_tokens=64,
            system=f"You read {SYSTEM_MARKER}.",
            messages=[{"role": "user", "content": f"I sail to {CONVERSATION_MARKER}."}],
        )
    assert spans.get_finished_spans()
    assert _leaks(spans.get_finished_spans())


@pytest.mark.usefixtures("content_env")
async def test_our_client_records_metadata_only_spans_whatever_the_environment_says(
    fake: FakeMessagesAPI, spans: InMemorySpanExporter
) -> None:
    config = ModelClientConfig(
        api_key=API_KEY,
        base_url=fake.base_url,
        request_timeout_seconds=5.0,
        retry=RetryPolicy(max_attempts=1),
    )
    async with ModelClient(config) as client:
        assert client._shared.sdk.open_telemetry["traces"] == {
            "enabled": True,
            "content_mode": "metadata_only",
            "max_content_bytes": client._shared.sdk.open_telemetry["traces"]["max_content_bytes"],
        }
        await client.structured(
            purpose="quick_pass",
            model=MODEL,
            system=f"You read {SYSTEM_MARKER}.",
            content=f"<conversation_data>\nUser: I sail to {CONVERSATION_MARKER}.\n"
            "</conversation_data>",
            schema=SOULPRINT,
            max_tokens=4096,
        )
        await client.count_tokens(
            model=MODEL, system=f"You read {SYSTEM_MARKER}.", content=CONVERSATION_MARKER
        )
    recorded = spans.get_finished_spans()
    # Spans are still made (metadata is what an operator traces by), but without the text.
    assert len(recorded) >= 2
    assert any(MODEL in text for span in recorded for text in _texts(span))
    assert _leaks(recorded) == []


def test_the_option_is_given_so_the_environment_is_never_read() -> None:
    """The SDK reads the variables only for a client given no option (``None``)."""
    assert METADATA_ONLY_TRACES["traces"] == {"enabled": True, "content_mode": "metadata_only"}
