"""The async model client: one structured-output call, judged, retried, costed and logged.

Built on the official SDK (``anthropic.AsyncAnthropic``, 2.17) with the SDK's retries off
(``max_retries=0``); ``soulworker.llm.retry`` is the only retry layer.

**How structured output is requested.** Every call sends
``output_config={"format": {"type": "json_schema", "schema": <wire schema>}}`` (structured
outputs, generally available; ``output_config`` is a first-class ``messages.create`` parameter
in SDK 2.x and goes over the wire unchanged) and reads the JSON from the answer's text blocks.
A forced tool (``tool_choice={"type": "tool"}``) was the alternative; it was not chosen because:
(1) forced tool choice is incompatible with extended/adaptive thinking, which
``claude-haiku-5-5`` uses by default, so the request would fail or thinking would have to be
switched off; (2) structured outputs constrain decoding to the schema, while a non-strict tool
only encourages it; (3) the answer is the message itself, no tool-use round trip to interpret.
``temperature``, ``top_p`` and ``top_k`` are never sent: API version 2026-10-21 (the one SDK
2.x speaks) rejects them, even at their defaults.

**What a call checks.** ``stop_reason`` first: ``refusal`` → ``ModelRefused`` (permanent, not
retried); ``max_tokens`` → ``ModelTruncated`` and ``model_context_window_exceeded`` →
``ModelContextExceeded`` (not retried here: the caller shrinks the input or raises the limit).
Then the answer is judged (``OutputSchema.judge``): soft rules (counts, lengths, defaults) are
repaired and reported in ``StructuredAnswer.repairs``; a hard one broken (not JSON, a type, an
enum, a required property, a real ``ai_name``, an unexpected stop) gets one re-ask: the same
request plus a second text saying which paths broke which rules, so the same body is never
sent twice except after a transport failure. A second hard violation is ``ModelBadOutput``.
The policy and its reasons: docs/model-answers.md.

**Concurrency.** Each ``ModelClient`` owns an ``asyncio.Semaphore`` of
``max_concurrent_calls`` that every request made through it, and through every
``for_job`` view of it, must hold; a view can add a tighter per-job limit. A slot is held only
while a request is in flight, never while a retry waits.

**Usage.** Every answered request is recorded in the client's ``UsageLedger`` (if it has one)
under the call's ``purpose``, including answers that were then rejected; requests that got no
answer are counted as failed requests (see ``soulworker.llm.usage``).

**Secrets and privacy.** The key is only handed to the SDK; ``ModelClientConfig`` hides it
from ``repr``; errors raised here are built from safe fields and never chained to SDK
exceptions (whose request carries the key in a header). Logs carry purpose, model, tokens,
latency, attempt and outcome; never the prompt or the answer. Note that the SDK's own stdlib
logger (``anthropic``) dumps whole request bodies at DEBUG: keep it at INFO or above.

**Traces.** The SDK makes an OpenTelemetry span per request (with the tracer provider the
process registers; none registered, nothing is recorded). Its spans carry the prompts and the
answers when ``ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE=content`` is set, but only for a
client given no ``open_telemetry`` option: ours is always given :data:`METADATA_ONLY_TRACES`, so
no deployment setting can put conversation text into a trace (docs/dependencies.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import structlog
from tenacity import RetryCallState

from soulworker.llm.errors import (
    ModelBadOutput,
    ModelContextExceeded,
    ModelError,
    ModelRefused,
    ModelTruncated,
    model_error_from_api_error,
)
from soulworker.llm.json_schema import Judgement, Repair
from soulworker.llm.pricing import PriceTable
from soulworker.llm.retry import RetryPolicy
from soulworker.llm.schemas import OutputSchema
from soulworker.llm.usage import CallUsage, UsageLedger

if TYPE_CHECKING:
    # The SDK itself is imported where a client is built or its errors are read: it takes
    # ~1.5 s to import, which every start-up that needs no model (`soulworker --help`,
    # `soulworker run` with the model stages off) would otherwise pay.
    import anthropic
    from anthropic.types import Message, OutputConfigParam, TextBlockParam

log = structlog.get_logger(__name__)
T = TypeVar("T")

# ``output_config.effort``: how much the model thinks before answering
# (docs/full-pass-batches.md, "Effort").
Effort = Literal["low", "medium", "high", "xhigh", "max"]
EFFORTS: tuple[Effort, ...] = ("low", "medium", "high", "xhigh", "max")


def effort_setting(value: str) -> Effort | None:
    """An effort setting's value as sent: ``default`` (or anything else) sends none."""
    return next((effort for effort in EFFORTS if effort == value), None)


# A non-streaming answer of 16K tokens can take several minutes; the SDK's own default for
# non-streaming requests is the same ten minutes.
DEFAULT_REQUEST_TIMEOUT_SECONDS = 600.0
# Connecting is quick or broken; fail fast so the retry policy can try again.
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
# The predecessor hit rate limits at 10 parallel calls and settled on 5.
DEFAULT_MAX_CONCURRENT_CALLS = 5
# Header naming the purpose of a request, so logs on either side (and the test fake) can
# count calls per stage. It carries no user data.
PURPOSE_HEADER = "X-Soulworker-Purpose"
# Purpose of token-counting requests.
COUNT_TOKENS_PURPOSE = "count_tokens"
# The only stop reason of a complete structured answer.
COMPLETE_STOP_REASON = "end_turn"

_PURPOSE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

METADATA_ONLY_TRACES: anthropic.OpenTelemetryOptions = {
    "traces": {"enabled": True, "content_mode": "metadata_only"},
}
"""The SDK's ``open_telemetry`` option: spans with model, tokens, timings and status, never the
content of a request or an answer. Given explicitly, it makes the SDK read none of the
``ANTHROPIC_OPEN_TELEMETRY*`` environment variables."""


@dataclass(frozen=True)
class ModelClientConfig:
    """How to reach the API and how hard to push it.

    ``base_url`` ``None`` lets the SDK use ``ANTHROPIC_BASE_URL`` (else the public API).
    ``api_key`` never appears in ``repr``.
    """

    api_key: str = field(repr=False)
    base_url: str | None = None
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS
    connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not self.api_key.strip():
            raise ValueError("the model API key is empty")
        if self.max_concurrent_calls < 1:
            raise ValueError("max_concurrent_calls must be at least 1")
        if self.request_timeout_seconds <= 0 or self.connect_timeout_seconds <= 0:
            raise ValueError("timeouts must be positive")


@dataclass(frozen=True)
class StructuredAnswer:
    """A judged structured answer.

    ``usage`` and ``cost_usd`` are those of the request that produced ``data`` (rejected
    earlier answers of the same call are in the ledger, not here); ``cost_usd`` is ``None``
    when the model has no price. ``attempts`` counts every request the call made.
    ``repairs`` lists the soft rules the answer broke and how ``data`` was mended;
    ``asked_again`` is true when the first answer was unusable and this is the re-ask's.
    """

    data: dict[str, Any]
    usage: CallUsage
    stop_reason: str
    cost_usd: Decimal | None
    attempts: int
    request_id: str | None
    repairs: tuple[Repair, ...] = ()
    asked_again: bool = False


def _check_purpose(purpose: str) -> None:
    if not _PURPOSE_RE.match(purpose):
        raise ValueError("purpose must be a short snake_case name")


def _failure_outcome(exc: BaseException) -> str:
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return "timeout"
    if isinstance(exc, anthropic.APIConnectionError):
        return "connection_error"
    if isinstance(exc, anthropic.APIStatusError):
        return f"http_{exc.status_code}"
    if isinstance(exc, ModelError):
        return exc.code
    return type(exc).__name__


@dataclass(frozen=True)
class _Shared:
    """What a client and its job views share: the SDK client (one connection pool), the
    timeout, and the process-wide concurrency limit."""

    sdk: anthropic.AsyncAnthropic
    timeout: anthropic.Timeout
    semaphore: asyncio.Semaphore

    @classmethod
    def create(cls, config: ModelClientConfig) -> _Shared:
        import anthropic

        timeout = anthropic.Timeout(
            config.request_timeout_seconds, connect=config.connect_timeout_seconds
        )
        sdk = anthropic.AsyncAnthropic(
            api_key=config.api_key,
            base_url=config.base_url,
            # Our retry policy is the only retry layer (see soulworker.llm.retry).
            max_retries=0,
            timeout=timeout,
            open_telemetry=METADATA_ONLY_TRACES,
        )
        return cls(
            sdk=sdk, timeout=timeout, semaphore=asyncio.Semaphore(config.max_concurrent_calls)
        )


class ModelClient:
    """Structured-output calls to the Messages API. Use as ``async with`` or call ``aclose``.

    ``prices`` prices every answer (default: ``PriceTable.defaults()``); ``ledger`` receives
    every call's usage (``None``: not recorded). ``for_job`` makes a view for one job with its
    own ledger and, optionally, a tighter concurrency limit.
    """

    def __init__(
        self,
        config: ModelClientConfig,
        *,
        prices: PriceTable | None = None,
        ledger: UsageLedger | None = None,
        _shared: _Shared | None = None,
        _job_limit: int | None = None,
    ) -> None:
        self._config = config
        self._prices = prices if prices is not None else PriceTable.defaults()
        self.ledger = ledger
        self._owns_shared = _shared is None
        self._shared = _shared if _shared is not None else _Shared.create(config)
        # The job's own limit comes first: a call queues for its job slot before it takes a
        # process slot, so a job at its limit never holds process slots idle.
        job = () if _job_limit is None else (asyncio.Semaphore(_job_limit),)
        self._semaphores: tuple[asyncio.Semaphore, ...] = (*job, self._shared.semaphore)

    def __repr__(self) -> str:
        return (
            f"ModelClient(base_url={str(self._shared.sdk.base_url)!r}, "
            f"max_concurrent_calls={self._config.max_concurrent_calls})"
        )

    @property
    def config(self) -> ModelClientConfig:
        """The configuration this client was built with."""
        return self._config

    @property
    def sdk(self) -> anthropic.AsyncAnthropic:
        """The SDK client (shared connection pool), for ``soulworker.llm.batches``."""
        return self._shared.sdk

    @property
    def prices(self) -> PriceTable:
        return self._prices

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A place among the requests in flight (job and process limits)."""
        return self._slot()

    async def retried(
        self, purpose: str, model: str, send: Callable[[int], Awaitable[T]]
    ) -> tuple[T, int]:
        """``send`` under the retry policy, as every call here (see ``_retried``)."""
        return await self._retried(purpose, model, send)

    def for_job(
        self, ledger: UsageLedger, *, max_concurrent_calls: int | None = None
    ) -> ModelClient:
        """A view that shares this client's connection pool and concurrency limit, records into
        ``ledger``, and (when ``max_concurrent_calls`` is given) also never has more than that
        many of its own requests in flight. Closing a view does not close the shared client."""
        if max_concurrent_calls is not None and max_concurrent_calls < 1:
            raise ValueError("max_concurrent_calls must be at least 1")
        return ModelClient(
            self._config,
            prices=self._prices,
            ledger=ledger,
            _shared=self._shared,
            _job_limit=max_concurrent_calls,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool (only the client that created it does)."""
        if self._owns_shared:
            await self._shared.sdk.close()

    async def __aenter__(self) -> ModelClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for semaphore in self._semaphores:
                await stack.enter_async_context(semaphore)
            yield

    def _before_sleep(self, purpose: str, model: str) -> Callable[[RetryCallState], None]:
        def before_sleep(retry_state: RetryCallState) -> None:
            outcome = retry_state.outcome
            exc = outcome.exception() if outcome is not None else None
            log.info(
                "model_call_retry",
                purpose=purpose,
                model=model,
                attempt=retry_state.attempt_number,
                wait_seconds=round(retry_state.upcoming_sleep, 3),
                reason=_failure_outcome(exc) if exc is not None else "unknown",
            )

        return before_sleep

    async def structured(
        self,
        *,
        purpose: str,
        model: str,
        system: str,
        content: str,
        schema: OutputSchema,
        max_tokens: int,
        effort: Effort | None = None,
    ) -> StructuredAnswer:
        """Ask ``model`` for an answer in ``schema``'s format and return it judged.

        ``effort`` (``low``…``max``) is sent as ``output_config.effort``; ``None`` sends none
        and leaves it to the model's default (docs/full-pass-batches.md, "Effort").

        ``purpose`` (snake_case, e.g. ``fact_extraction``) keys the usage ledger and logs.
        ``content`` is the single user turn; wrap conversation text with
        ``soulworker.llm.delimit`` first.

        Soft violations are repaired and listed in the answer's ``repairs``. An answer that
        breaks a hard rule is asked once more in a *different* request, which tells the model
        what was wrong (``reask_feedback``): JSON paths and rule names, never values. When that
        answer breaks one too, the call fails with ``ModelBadOutput`` (transient).

        Raises ``ModelRefused``, ``ModelSpendLimit``, ``ModelAuthFailed``,
        ``ModelRequestRejected`` (permanent); ``ModelTruncated`` / ``ModelContextExceeded``
        (the caller should shrink the input or raise ``max_tokens``); ``ModelBadOutput`` after
        the re-ask; ``ModelUnavailable`` when transient failures outlast the policy.
        ``ValueError`` for a bad ``purpose`` or ``max_tokens``.
        """
        _check_purpose(purpose)
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        request = StructuredRequest(purpose, model, system, content, schema, max_tokens, effort)
        requests = 0
        for asked_again in (False, True):
            sent, tries = await self._retried(purpose, model, partial(self._send, request))
            requests += tries
            message = sent.message
            usage = CallUsage.from_api(message.model or model, message.usage)
            call = _AnsweredCall(
                purpose, schema.name, tries, sent.latency_ms, usage, self._prices.cost_usd(usage)
            )
            try:
                judged, code = read_answer(message, schema, max_tokens, last_chance=asked_again)
            except ModelError as failure:
                call.log(message, outcome=failure.code)
                raise
            call.log(
                message,
                outcome=code if not judged.usable else "repaired" if judged.repairs else "ok",
                problems=judged.problems,
                repairs=judged.repairs,
            )
            if judged.usable:
                return StructuredAnswer(
                    data=judged.data,
                    usage=usage,
                    stop_reason=message.stop_reason or COMPLETE_STOP_REASON,
                    cost_usd=call.cost_usd,
                    attempts=requests,
                    request_id=message._request_id,
                    repairs=judged.repairs,
                    asked_again=asked_again,
                )
            if asked_again:
                raise ModelBadOutput(judged.problems, code=code, request_id=message._request_id)
            request = request.asked_again(judged.problems)
        raise AssertionError("unreachable: the second answer returns or raises")

    async def ask(self, request: StructuredRequest) -> StructuredAnswer:
        """``structured`` with the fields of ``request`` (built once, sent by either road)."""
        return await self.structured(
            purpose=request.purpose,
            model=request.model,
            system=request.system,
            content=request.content,
            schema=request.schema,
            max_tokens=request.max_tokens,
            effort=request.effort,
        )

    async def _retried(
        self, purpose: str, model: str, send: Callable[[int], Awaitable[T]]
    ) -> tuple[T, int]:
        """``send(attempt number)``, sent again only after transport failures, as the retry
        policy says; ``(its result, requests made)``. SDK errors become ``ModelError``s."""
        import anthropic

        results: list[T] = []
        failure: ModelError | None = None
        attempt_number = 0
        try:
            async for attempt in self._config.retry.retrying(
                before_sleep=self._before_sleep(purpose, model)
            ):
                with attempt:
                    attempt_number = attempt.retry_state.attempt_number
                    results.append(await send(attempt_number))
        except anthropic.APIError as exc:
            failure = model_error_from_api_error(exc, attempts=attempt_number)
        if failure is not None:
            # Raised outside the except block so the SDK exception is not its __context__.
            raise failure
        return results[-1], attempt_number

    async def _send(self, request: StructuredRequest, attempt_number: int) -> _Sent:
        """One request. Every answered request is recorded in the ledger before anything judges
        it: it is billed whatever its answer is worth."""
        import anthropic

        async with self._slot():
            started = time.monotonic()
            try:
                message = await self._shared.sdk.messages.create(
                    **request.params(),
                    extra_headers={PURPOSE_HEADER: request.purpose},
                    timeout=self._shared.timeout,
                )
            except anthropic.APIError as exc:
                self._record_failed_request(
                    request.purpose, request.model, exc, attempt_number, started
                )
                raise
        usage = CallUsage.from_api(message.model or request.model, message.usage)
        if self.ledger is not None:
            self.ledger.record(request.purpose, usage, self._prices.cost_usd(usage))
        return _Sent(message, latency_ms=round((time.monotonic() - started) * 1000))

    def _record_failed_request(
        self, purpose: str, model: str, exc: anthropic.APIError, attempt: int, started: float
    ) -> None:
        if self.ledger is not None:
            self.ledger.record_failed_request(purpose, model)
        log.warning(
            "model_call",
            purpose=purpose,
            model=model,
            attempt=attempt,
            outcome=_failure_outcome(exc),
            latency_ms=round((time.monotonic() - started) * 1000),
            request_id=getattr(exc, "request_id", None),
            api_error_type=getattr(exc, "type", None),
            api_error_code=getattr(exc, "error_code", None),
        )

    async def count_tokens(
        self, *, model: str, system: str, content: str, schema: OutputSchema | None = None
    ) -> int:
        """The API's count of input tokens for this request (``messages.count_tokens``).

        Free of charge and not recorded in the ledger. Retried like a call; raises the same
        errors as ``structured`` for auth, spend limit, bad request or an unavailable API.
        """
        import anthropic

        async def count(_: int) -> int:
            async with self._slot():
                result = await self._shared.sdk.messages.count_tokens(
                    model=model,
                    system=system,
                    messages=[{"role": "user", "content": content}],
                    output_config=_output_config(schema) if schema is not None else anthropic.omit,
                    extra_headers={PURPOSE_HEADER: COUNT_TOKENS_PURPOSE},
                    timeout=self._shared.timeout,
                )
            return result.input_tokens

        counted, _ = await self._retried(COUNT_TOKENS_PURPOSE, model, count)
        return counted


def _output_config(schema: OutputSchema, effort: Effort | None = None) -> OutputConfigParam:
    config: OutputConfigParam = {"format": {"type": "json_schema", "schema": schema.wire_schema}}
    if effort is not None:
        config["effort"] = effort
    return config


@dataclass(frozen=True)
class StructuredRequest:
    """What one structured request sends. ``feedback`` is the re-ask's second text.

    The direct call and the Message Batches request (``soulworker.llm.batches``) send the same
    ``params()``, so a request costs and answers the same by either road."""

    purpose: str
    model: str
    system: str
    content: str
    schema: OutputSchema
    max_tokens: int
    effort: Effort | None = None
    feedback: str | None = None

    def params(self) -> dict[str, Any]:
        """The body of ``messages.create`` (and a batch request's ``params``)."""
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": self.system,
            "messages": [{"role": "user", "content": self.user_turn}],
            "output_config": _output_config(self.schema, self.effort),
        }

    @property
    def user_turn(self) -> str | list[TextBlockParam]:
        if self.feedback is None:
            return self.content
        return [{"type": "text", "text": self.content}, {"type": "text", "text": self.feedback}]

    def asked_again(self, problems: Sequence[str]) -> StructuredRequest:
        """The re-ask: the same request with a second text saying what was wrong."""
        return replace(self, feedback=reask_feedback(problems))


def _answer_text(message: Message) -> str:
    # Thinking blocks (adaptive thinking) and any other block types are not the answer.
    return "".join(block.text for block in message.content if block.type == "text")


def read_answer(
    message: Message, schema: OutputSchema, max_tokens: int, *, last_chance: bool
) -> tuple[Judgement, str]:
    """The answer judged, with the error code it earns if it is not usable.

    A refusal, a truncation or a full context raise at once (asking the same again cannot
    help); an unexpected stop, text that is not JSON, or a hard rule broken make a judgement
    with problems, which the caller answers with a re-ask.
    """
    # A batch result's message came in no HTTP answer of its own, so it has no request id.
    request_id: str | None = getattr(message, "_request_id", None)
    stop_reason = message.stop_reason
    if stop_reason == "refusal":
        details = message.stop_details
        raise ModelRefused(
            category=details.category if details is not None else None, request_id=request_id
        )
    if stop_reason == "max_tokens":
        raise ModelTruncated(max_tokens=max_tokens)
    if stop_reason == "model_context_window_exceeded":
        raise ModelContextExceeded(max_tokens=max_tokens)
    if stop_reason != COMPLETE_STOP_REASON:
        problem = f"$: the answer ended early (stop_reason {stop_reason})"
        judged, code = Judgement(None, (problem,), ()), "model_unexpected_stop"
    else:
        try:
            data: object = json.loads(_answer_text(message))
        except ValueError:
            # No detail from the decoder: its message is harmless, but the exception holds
            # the text.
            data = _NOT_JSON
        if data is _NOT_JSON:
            judged, code = Judgement(None, ("$: not valid JSON",), ()), "model_invalid_json"
        else:
            judged, code = schema.judge(data, last_chance=last_chance), "model_bad_output"
    return judged, code


@dataclass(frozen=True)
class _Sent:
    """A request's answer and how long it took."""

    message: Message
    latency_ms: int


@dataclass(frozen=True)
class _AnsweredCall:
    """What the log line of one answered request says: metrics and the judgement's outcome,
    paths and rule names; never the prompt or the answer."""

    purpose: str
    schema: str
    attempt: int
    latency_ms: int
    usage: CallUsage
    cost_usd: Decimal | None

    def log(
        self,
        message: Message,
        *,
        outcome: str,
        problems: Sequence[str] = (),
        repairs: Sequence[Repair] = (),
    ) -> None:
        usage = self.usage
        log.info(
            "model_call",
            purpose=self.purpose,
            model=usage.model,
            schema=self.schema,
            attempt=self.attempt,
            outcome=outcome,
            stop_reason=message.stop_reason,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            cost_usd=float(self.cost_usd) if self.cost_usd is not None else None,
            latency_ms=self.latency_ms,
            request_id=message._request_id,
            problems=list(problems) or None,
            repairs=[str(repair) for repair in repairs] or None,
        )


def reask_feedback(problems: Sequence[str]) -> str:
    """The second text of a re-ask's user turn: what was wrong, as paths and rule names only."""
    listed = "\n".join(f"- {problem}" for problem in problems)
    return (
        "Your previous answer to this request could not be used: it broke these rules of the "
        f"answer format.\n{listed}\n"
        "Answer again with the complete JSON object in the required format, with these points "
        "fixed."
    )


_NOT_JSON = object()
