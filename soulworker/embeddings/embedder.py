"""The embedder interface, and what every provider shares: one HTTP client, the adaptive limiter,
the retry policy, input cuts, unit-length vectors of exactly the requested length, and usage.

A provider (``openai``, ``bedrock``) says only how texts become requests (``_batches``), how one
request is sent and read (``_send``), and what its failures mean. Callers use :class:`Embedder`
and never see which provider is behind it (docs/embeddings.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Protocol

import httpx2

from soulworker.embeddings.errors import (
    EmbeddingDimensionRefused,
    EmbeddingInputTooLong,
    EmbeddingThrottled,
    EmbeddingUnavailable,
)
from soulworker.embeddings.pacing import AdaptiveLimiter
from soulworker.embeddings.retry import EmbedRetryPolicy
from soulworker.embeddings.usage import EmbedUsage, price_per_mtok
from soulworker.embeddings.vectors import InputLimit, Vector, cut_to_budget, normalized

CONNECT_TIMEOUT_SECONDS = 5.0
"""Both providers accept connections within a second when healthy."""

READ_TIMEOUT_SECONDS = 60.0
"""A batch of 96 chunks takes a few seconds; a minute means the request is lost."""

MIN_CUT_CHARS = 64
"""A text this short that is still "too long" is not cut further: the refusal means something
else, and the error is raised."""


class Embedder(Protocol):
    """Turns texts into unit-length vectors of ``dimensions`` values, one per text, in order."""

    provider: str
    model: str
    dimensions: int
    usage: EmbedUsage

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One vector per text. Texts must not be blank (callers skip and count those); a text
        over the model's limit is cut and counted. Raises ``EmbeddingError``."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP connections."""
        ...


@dataclass(frozen=True)
class EmbedderConfig:
    """What every provider needs; built from the settings by ``factory``."""

    model: str
    dimensions: int
    endpoint_url: str
    concurrency: int = 4
    price_per_mtok: Decimal | None = None
    retry: EmbedRetryPolicy = field(default_factory=EmbedRetryPolicy)
    connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS
    read_timeout_seconds: float = READ_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Answer:
    """One request's vectors (as received, in input order) and the input tokens it billed."""

    vectors: list[list[float]]
    input_tokens: int


class HttpEmbedder:
    """The shared machinery; subclasses implement ``_batches``, ``_send`` and the limits."""

    provider = "?"
    input_limit: InputLimit = InputLimit(max_tokens=8_191)
    texts_per_request = 1
    """The most texts one request carries (callers size their work to fill every slot)."""

    def __init__(
        self,
        config: EmbedderConfig,
        *,
        client: httpx2.AsyncClient | None = None,
        limiter: AdaptiveLimiter | None = None,
    ) -> None:
        """``limiter``: one shared by several embedders (the daemon's jobs), so that
        ``config.concurrency`` bounds them all together; by default one of their own."""
        self.config = config
        self.model = config.model
        self.dimensions = config.dimensions
        self.usage = EmbedUsage(
            model=config.model,
            price_per_mtok=price_per_mtok(config.model, config.price_per_mtok),
        )
        self.limiter = limiter or limiter_for(config)
        timeout = httpx2.Timeout(
            config.read_timeout_seconds, connect=config.connect_timeout_seconds
        )
        # Redirects are never followed: they would carry the key or signature elsewhere.
        self._client = client or httpx2.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            limits=httpx2.Limits(max_connections=config.concurrency * 2),
        )

    async def __aenter__(self) -> HttpEmbedder:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        if any(not text.strip() for text in texts):
            raise ValueError("blank texts cannot be embedded; skip them before calling embed")
        budget = self.input_limit.char_budget
        prepared: list[str] = []
        already_cut: set[str] = set()
        for text in texts:
            cut_text, was_cut = cut_to_budget(text, budget)
            prepared.append(cut_text)
            if was_cut:
                self.usage.cut_texts += 1
                already_cut.add(cut_text)
        batches = self._batches(prepared)
        answers: list[list[Vector]] = [[] for _ in batches]
        pending = iter(enumerate(batches))

        async def work() -> None:
            # Workers share one iterator (no await between taking and starting a batch), so
            # only ``limit`` tasks per call wait on the limiter, however many texts there are.
            for index, batch in pending:
                answers[index] = await self._request(batch, already_cut)

        workers = [
            asyncio.ensure_future(work()) for _ in range(min(self.limiter.limit, len(batches)))
        ]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            # One request failed for good: the others' vectors are of no use, stop them.
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        return [vector for answer in answers for vector in answer]

    def _batches(self, texts: list[str]) -> list[list[str]]:
        """How texts are grouped into requests (in order)."""
        raise NotImplementedError

    async def _send(self, texts: list[str]) -> Answer:
        """Send one request for ``texts``; raise an ``EmbeddingError`` for any failure."""
        raise NotImplementedError

    def refused_dimension(
        self,
        produced: int | None,
        *,
        status_code: int | None = None,
        provider_error: str | None = None,
    ) -> EmbeddingDimensionRefused:
        """The error for a model that cannot produce ``self.dimensions`` values (``produced`` is
        what it gave, when it answered at all); its operator line says what to change."""
        raise NotImplementedError

    async def _request(self, texts: list[str], already_cut: set[str]) -> list[Vector]:
        """``_request_once``, and when the provider says an input is too long for it (dense
        text can pass the character budget and still exceed the token limit): a batch is sent
        again text by text (which text it was is not said), a single text cut in half (and
        counted once, however often it is cut) until it fits."""
        try:
            return await self._request_once(texts)
        except EmbeddingInputTooLong:
            if len(texts) > 1:
                vectors: list[Vector] = []
                for text in texts:
                    vectors.extend(await self._request([text], already_cut))
                return vectors
            (text,) = texts
            if len(text) < MIN_CUT_CHARS:
                raise
            shorter = text[: len(text) // 2]
            if text not in already_cut:
                self.usage.cut_texts += 1
            already_cut.add(shorter)
            return await self._request([shorter], already_cut)

    async def _request_once(self, texts: list[str]) -> list[Vector]:
        """One request through the limiter and the retry policy; vectors checked and scaled."""
        attempts = 0
        async for attempt in self.config.retry.retrying():
            with attempt:
                attempts += 1
                if attempts > 1:
                    self.usage.retries += 1
                async with self.limiter.slot():
                    try:
                        answer = await self._send_safely(texts)
                    except EmbeddingThrottled:
                        self.usage.throttled += 1
                        self.limiter.throttled()
                        raise
                    self.limiter.succeeded()
        return self._accept(answer, len(texts))

    async def _send_safely(self, texts: list[str]) -> Answer:
        """``_send``, with transport failures as ``EmbeddingUnavailable`` (never chained: the
        httpx2 exception holds the request, whose headers carry the key)."""
        failure: str | None = None
        try:
            return await self._send(texts)
        except httpx2.TimeoutException:
            failure = "timeout"
        except httpx2.TransportError:
            failure = "connection"
        raise EmbeddingUnavailable(
            "The embedding service could not be reached.",
            operator_line=f"cannot reach the {self.provider} embedding endpoint "
            f"({failure}): check SOULWORKER_EMBED_ENDPOINT_URL and outbound network access",
            code=f"embedding_{failure}",
        )

    def _accept(self, answer: Answer, expected: int) -> list[Vector]:
        if len(answer.vectors) != expected:
            raise EmbeddingUnavailable(
                "The embedding service gave an unexpected answer.",
                operator_line=f"the {self.provider} endpoint answered {len(answer.vectors)} "
                f"vectors for {expected} texts",
                code="embedding_bad_answer",
            )
        for raw in answer.vectors:
            if len(raw) != self.dimensions:
                raise self.refused_dimension(len(raw))
        try:
            vectors = [normalized(raw) for raw in answer.vectors]
        except ValueError:
            raise EmbeddingUnavailable(
                "The embedding service gave an unexpected answer.",
                operator_line=f"the {self.provider} endpoint answered a zero or non-finite vector",
                code="embedding_bad_answer",
            ) from None
        self.usage.calls += 1
        self.usage.texts += expected
        self.usage.input_tokens += answer.input_tokens
        return vectors


def limiter_for(config: EmbedderConfig) -> AdaptiveLimiter:
    """The adaptive limiter ``config`` asks for (docs/embeddings.md, "Throttling")."""
    return AdaptiveLimiter(
        config.concurrency,
        min_pause_seconds=config.retry.throttle_pause_initial_seconds,
        max_pause_seconds=config.retry.throttle_pause_max_seconds,
    )


def is_dimension_complaint(message: str) -> bool:
    """True when a provider's refusal is about the requested vector length."""
    lowered = message.lower()
    return "dimension" in lowered


_TOO_LONG_MARKERS = (
    "too long",
    "too many input tokens",
    "max input tokens",
    "maximum context length",
    "maximum input length",
)


def is_too_long_complaint(message: str) -> bool:
    """True when a provider's refusal says an input exceeds the model's token limit (Titan:
    "Too many input tokens"; OpenAI: "maximum context length", "maximum input length")."""
    lowered = message.lower()
    return any(marker in lowered for marker in _TOO_LONG_MARKERS)
