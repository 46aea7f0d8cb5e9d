"""Message Batches: the same structured requests as ``ModelClient.structured``, at half price.

A batch is created once with ``(custom_id, StructuredRequest)`` pairs, looked at later
(``retrieve``), and, once ended, read back (``results``: unordered, matched by ``custom_id``).
Answers are judged by the same ``read_answer`` as direct calls and priced at the batch rate
(``PriceTable.cost_usd(..., batch=True)``). Every answered request is billed, whatever its answer
is worth: the caller records ``billed(result)`` in its ledger with what it keeps of the answer.

**Create is never retried.** A request that fails without an answer may still have created the
batch; sending it again could leave a second paid batch. The caller saves a marker before it
creates and finds the batch again by its custom ids (``created_since`` and ``results``), as
docs/full-pass-batches.md explains. Every other call here reads or cancels by id, and is
retried by the client's retry policy like a direct call.

The results of a batch are read whole into memory: the full pass's token budget bounds a job's
batch to about a hundred requests (SOULWORKER_FULL_PASS_TOKEN_BUDGET /
SOULWORKER_FULL_PASS_BATCH_TOKENS), a few MB of answers.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

from soulworker.llm.client import (
    ModelClient,
    StructuredAnswer,
    StructuredRequest,
    read_answer,
)
from soulworker.llm.errors import ModelError, model_error_from_api_error
from soulworker.llm.schemas import OutputSchema
from soulworker.llm.usage import CallUsage

if TYPE_CHECKING:
    from anthropic.types import Message

log = structlog.get_logger(__name__)

# What the API accepts as a custom id.
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# Purpose of the bookkeeping requests (create, retrieve, list, results, cancel) in logs.
BATCH_PURPOSE = "message_batch"
# A page of the batch list: the most the API gives at once.
LIST_PAGE = 100


@dataclass(frozen=True)
class BatchState:
    """What the API says about one batch."""

    id: str
    processing_status: str  # in_progress | canceling | ended
    created_at: datetime.datetime
    expires_at: datetime.datetime
    requests: int
    counts: Mapping[str, int]

    @property
    def ended(self) -> bool:
        return self.processing_status == "ended"

    @classmethod
    def of(cls, batch: Any) -> BatchState:
        counts = batch.request_counts
        tallies = {
            name: int(getattr(counts, name))
            for name in ("processing", "succeeded", "errored", "canceled", "expired")
        }
        return cls(
            id=batch.id,
            processing_status=batch.processing_status,
            created_at=batch.created_at,
            expires_at=batch.expires_at,
            requests=sum(tallies.values()),
            counts=tallies,
        )


@dataclass(frozen=True)
class BatchResult:
    """One request's result: ``kind`` is ``succeeded``, ``errored``, ``canceled`` or
    ``expired``; ``message`` is the answer of a succeeded one."""

    custom_id: str
    kind: str
    message: Message | None = None
    error_type: str | None = None


class MessageBatches:
    """The Message Batches endpoints over a ``ModelClient``'s connection pool, retry policy,
    prices and ledger (a job's view records into the job's ledger)."""

    def __init__(self, client: ModelClient) -> None:
        self._client = client

    async def create(self, requests: Sequence[tuple[str, StructuredRequest]]) -> BatchState:
        """Create one batch of ``requests``; not retried (see the module docstring).

        Raises the ``ModelError`` of the failure; a ``ModelUnavailable`` among them does not
        say whether the batch was created."""
        import anthropic  # loaded already: the client's SDK client is built with it

        if not requests:
            raise ValueError("a batch needs at least one request")
        for custom_id, _ in requests:
            if not CUSTOM_ID.match(custom_id):
                raise ValueError("a custom id is 1-64 letters, digits, '-' or '_'")
        body: list[Any] = [
            {"custom_id": custom_id, "params": request.params()} for custom_id, request in requests
        ]
        failure: ModelError | None = None
        try:
            async with self._client.slot():
                batch = await self._client.sdk.messages.batches.create(requests=body)
        except anthropic.APIError as exc:
            failure = model_error_from_api_error(exc, attempts=1)
        if failure is not None:
            log.warning("message_batch_create_failed", outcome=failure.code)
            raise failure  # outside the except block: not chained to the SDK exception
        state = BatchState.of(batch)
        log.info("message_batch_created", batch_id=state.id, requests=len(requests))
        return state

    async def retrieve(self, batch_id: str) -> BatchState:
        async def send(_: int) -> BatchState:
            async with self._client.slot():
                return BatchState.of(await self._client.sdk.messages.batches.retrieve(batch_id))

        state, _ = await self._client.retried(BATCH_PURPOSE, "", send)
        return state

    async def cancel(self, batch_id: str) -> BatchState:
        async def send(_: int) -> BatchState:
            async with self._client.slot():
                return BatchState.of(await self._client.sdk.messages.batches.cancel(batch_id))

        state, _ = await self._client.retried(BATCH_PURPOSE, "", send)
        log.info("message_batch_cancel_requested", batch_id=batch_id)
        return state

    async def created_since(
        self, since: datetime.datetime, *, page_size: int = LIST_PAGE
    ) -> list[BatchState]:
        """The organisation's batches created at or after ``since``, newest first (the list
        is newest first, so reading stops at the first older one)."""

        async def send(_: int) -> list[BatchState]:
            found: list[BatchState] = []
            async with self._client.slot():
                pages = self._client.sdk.messages.batches.list(limit=page_size)
                async for batch in pages:
                    state = BatchState.of(batch)
                    if state.created_at < since:
                        break
                    found.append(state)
            return found

        found, _ = await self._client.retried(BATCH_PURPOSE, "", send)
        return found

    async def custom_ids(self, batch_id: str) -> set[str]:
        """The custom ids of an ended batch's results (to tell whose batch it is)."""
        return {result.custom_id for result in await self.results(batch_id)}

    async def results(self, batch_id: str) -> list[BatchResult]:
        """Every result of an ended batch, in the API's order (which is none)."""

        async def send(_: int) -> list[BatchResult]:
            out: list[BatchResult] = []
            async with self._client.slot():
                lines = await self._client.sdk.messages.batches.results(batch_id)
                async for line in lines:
                    result = line.result
                    if result.type == "succeeded":
                        out.append(BatchResult(line.custom_id, "succeeded", result.message))
                    elif result.type == "errored":
                        error = result.error.error
                        out.append(BatchResult(line.custom_id, "errored", error_type=error.type))
                    else:
                        out.append(BatchResult(line.custom_id, result.type))
            return out

        results, _ = await self._client.retried(BATCH_PURPOSE, "", send)
        return results

    def billed(self, result: BatchResult) -> tuple[CallUsage, Decimal | None]:
        """What a succeeded result consumed and costs at the batch price. Not recorded here:
        the caller records it in the same commit as what it keeps of the answer, so reading
        the results again after a crash does not count it twice."""
        message = result.message
        assert message is not None, "only a succeeded result has an answer"
        usage = CallUsage.from_api(message.model, message.usage)
        return usage, self._client.prices.cost_usd(usage, batch=True)

    def judge(
        self, result: BatchResult, schema: OutputSchema, max_tokens: int
    ) -> StructuredAnswer | None:
        """A succeeded result's answer, judged as a direct call's first answer is.

        ``None`` when the answer is not usable as it is (a hard rule broken, an unexpected
        stop): the caller asks again directly. A refusal, a truncation or a full context
        raise as in a direct call (``ModelRefused``, ``ModelTruncated``…)."""
        message = result.message
        assert message is not None, "only a succeeded result has an answer"
        usage, cost = self.billed(result)
        purpose = BATCH_PURPOSE
        try:
            judged, code = read_answer(message, schema, max_tokens, last_chance=False)
        except ModelError as failure:
            self._log(purpose, result, usage=usage, cost=cost, outcome=failure.code)
            raise
        outcome = code if not judged.usable else "repaired" if judged.repairs else "ok"
        self._log(
            purpose, result, usage=usage, cost=cost, outcome=outcome, problems=judged.problems
        )
        if not judged.usable:
            return None
        return StructuredAnswer(
            data=judged.data,
            usage=usage,
            stop_reason=message.stop_reason or "end_turn",
            cost_usd=cost,
            attempts=1,
            request_id=None,
            repairs=judged.repairs,
        )

    @staticmethod
    def _log(
        purpose: str,
        result: BatchResult,
        *,
        usage: CallUsage,
        cost: Decimal | None,
        outcome: str,
        problems: Sequence[str] = (),
    ) -> None:
        # Metrics and rule names only, never the prompt or the answer (as for direct calls).
        log.info(
            "model_batch_answer",
            purpose=purpose,
            model=usage.model,
            custom_id=result.custom_id,
            outcome=outcome,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=float(cost) if cost is not None else None,
            problems=list(problems) or None,
        )
