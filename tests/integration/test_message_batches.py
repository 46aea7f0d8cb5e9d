"""Message Batches through the real SDK against the fake Messages API on loopback: the same
requests as direct calls, results matched by custom id in any order, per-request outcomes,
cancel, listing, batch prices, and a create that is never sent twice."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from decimal import Decimal

import pytest

from soulworker.llm.batches import MessageBatches
from soulworker.llm.client import ModelClient, ModelClientConfig, StructuredRequest
from soulworker.llm.errors import (
    ModelAuthFailed,
    ModelRefused,
    ModelTruncated,
    ModelUnavailable,
)
from soulworker.llm.pricing import PriceTable
from soulworker.llm.retry import RetryPolicy
from soulworker.llm.schemas import FACT_EXTRACTION
from soulworker.llm.usage import UsageLedger
from soulworker.testing import messages_api as fakes
from soulworker.testing.message_batches import BATCHES_PATH
from soulworker.testing.messages_api import FakeMessagesAPI

MODEL = "claude-haiku-5-5"


@pytest.fixture
def fake() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as server:
        yield server


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def client_for(fake: FakeMessagesAPI) -> ModelClient:
    config = ModelClientConfig(
        api_key="sk-ant-test-0123456789",
        base_url=fake.base_url,
        request_timeout_seconds=5,
        retry=RetryPolicy(sleep=no_sleep),
    )
    return ModelClient(config, ledger=UsageLedger())


def request(text: str, *, effort: str | None = "low") -> StructuredRequest:
    return StructuredRequest(
        purpose="fact_extraction",
        model=MODEL,
        system="Extract facts.",
        content=f"<conversation_data>{text}</conversation_data>",
        schema=FACT_EXTRACTION,
        max_tokens=6000,
        effort=effort,  # type: ignore[arg-type]
    )


async def test_a_batch_sends_the_direct_requests_and_reads_every_outcome(
    fake: FakeMessagesAPI,
) -> None:
    fake.script(
        fakes.in_batches(fakes.truncated(when=lambda r: "two" in r.text)),
        fakes.in_batches(fakes.server_error(when=lambda r: "three" in r.text)),
        fakes.batch_request_expired(when=lambda r: "four" in r.text),
        fakes.in_batches(fakes.refusal(when=lambda r: "five" in r.text)),
    )
    async with client_for(fake) as client:
        batches = MessageBatches(client)
        texts = ["one", "two", "three", "four", "five"]
        requests = [(f"n0nce-{i}", request(t)) for i, t in enumerate(texts)]
        state = await batches.create(requests)
        assert state.processing_status == "in_progress"
        assert state.requests == 5
        ended = await batches.retrieve(state.id)
        assert ended.ended
        assert ended.counts == {
            "processing": 0,
            "succeeded": 3,
            "errored": 1,
            "canceled": 0,
            "expired": 1,
        }
        results = await batches.results(state.id)
        # Unordered, as the API says: matched by custom id.
        assert [r.custom_id for r in results] != [cid for cid, _ in requests]
        by_id = {r.custom_id: r for r in results}
        assert {cid: r.kind for cid, r in by_id.items()} == {
            "n0nce-0": "succeeded",
            "n0nce-1": "succeeded",
            "n0nce-2": "errored",
            "n0nce-3": "expired",
            "n0nce-4": "succeeded",
        }
        assert by_id["n0nce-2"].error_type == "api_error"
        answer = batches.judge(by_id["n0nce-0"], FACT_EXTRACTION, 6000)
        assert answer is not None
        assert set(answer.data) == set(FACT_EXTRACTION.wire_schema["properties"])
        with pytest.raises(ModelTruncated):
            batches.judge(by_id["n0nce-1"], FACT_EXTRACTION, 6000)
        with pytest.raises(ModelRefused):
            batches.judge(by_id["n0nce-4"], FACT_EXTRACTION, 6000)
    # The batch request is byte for byte the direct request's body.
    sent = fake.batch_requests[0].body
    assert sent == request("one").params()
    assert sent["output_config"]["effort"] == "low"


async def test_a_batch_answer_costs_half_the_direct_price(fake: FakeMessagesAPI) -> None:
    async with client_for(fake) as client:
        batches = MessageBatches(client)
        state = await batches.create([("n-0", request("the same words"))])
        (result,) = await batches.results(state.id)
        usage, cost = batches.billed(result)
        direct = await client.ask(request("the same words"))
    assert usage.input_tokens == direct.usage.input_tokens
    assert cost is not None
    assert direct.cost_usd is not None
    assert cost == direct.cost_usd * Decimal("0.5")
    assert PriceTable.defaults().cost_usd(usage, batch=True) == cost


async def test_create_is_never_sent_twice(fake: FakeMessagesAPI) -> None:
    """A create that failed may have created the batch: it is not retried (the caller looks
    for the batch by its custom ids instead)."""
    fake.script(fakes.server_error(path=BATCHES_PATH))
    async with client_for(fake) as client:
        with pytest.raises(ModelUnavailable):
            await MessageBatches(client).create([("n-0", request("x"))])
    creates = [r for r in fake.requests if r.path == BATCHES_PATH and r.method == "POST"]
    assert len(creates) == 1


async def test_a_refused_key_is_permanent(fake: FakeMessagesAPI) -> None:
    fake.script(fakes.unauthorized(path=BATCHES_PATH))
    async with client_for(fake) as client:
        with pytest.raises(ModelAuthFailed):
            await MessageBatches(client).create([("n-0", request("x"))])


async def test_reads_are_retried(fake: FakeMessagesAPI) -> None:
    async with client_for(fake) as client:
        batches = MessageBatches(client)
        state = await batches.create([("n-0", request("x"))])
        fake.script(fakes.overloaded(path=f"{BATCHES_PATH}/{state.id}"))
        assert (await batches.retrieve(state.id)).ended


async def test_bad_custom_ids_are_refused_before_sending(fake: FakeMessagesAPI) -> None:
    async with client_for(fake) as client:
        batches = MessageBatches(client)
        for bad in ("", "x" * 65, "a b", "ü", "a/b"):
            with pytest.raises(ValueError, match="custom id"):
                await batches.create([(bad, request("x"))])
    assert fake.batches == []


async def test_cancel_ends_unanswered_requests_as_canceled(fake: FakeMessagesAPI) -> None:
    fake.batch_book.hold_batches = True
    async with client_for(fake) as client:
        batches = MessageBatches(client)
        state = await batches.create([("n-0", request("a")), ("n-1", request("b"))])
        assert not (await batches.retrieve(state.id)).ended
        assert (await batches.cancel(state.id)).processing_status == "canceling"
        ended = await batches.retrieve(state.id)
        assert ended.counts["canceled"] == 2
        assert {r.kind for r in await batches.results(state.id)} == {"canceled"}
    assert fake.billed(in_batches=True)["calls"] == 0


async def test_an_expired_batch_ends_with_expired_requests(fake: FakeMessagesAPI) -> None:
    fake.batch_book.hold_batches = True
    async with client_for(fake) as client:
        batches = MessageBatches(client)
        state = await batches.create([("n-0", request("a"))])
        fake.batch_book.expire(state.id)
        ended = await batches.retrieve(state.id)
        assert ended.ended
        assert ended.counts["expired"] == 1


async def test_created_since_lists_newest_first_across_pages(fake: FakeMessagesAPI) -> None:
    async with client_for(fake) as client:
        batches = MessageBatches(client)
        before = datetime.datetime.now(datetime.UTC)
        made = [(await batches.create([(f"n-{i}", request(str(i)))])).id for i in range(3)]
        listed = await batches.created_since(before - datetime.timedelta(seconds=1), page_size=2)
        assert [state.id for state in listed] == list(reversed(made))
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=5)
        assert await batches.created_since(later) == []
        assert {r.custom_id for r in await batches.results(made[0])} == {"n-0"}
