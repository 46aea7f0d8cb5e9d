"""The ``openai`` provider: any OpenAI-compatible ``POST {base}/embeddings`` (OpenAI, Azure,
Ollama, vLLM, TEI, LM Studio), many texts per request.

Request: ``{"model", "input": [texts], "encoding_format": "float"}`` plus ``"dimensions"`` for
the models documented to take it (OpenAI's text-embedding-3 family); other models produce their
own length, which is checked against the column instead (docs/embeddings.md, "Dimensions").
Answer: ``data[i].embedding`` (ordered by ``data[i].index``) and ``usage.prompt_tokens`` (zero
when a local server does not report it). The key goes as ``Authorization: Bearer``; a local
server without a key gets no header.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx2

from soulworker.embeddings.embedder import (
    Answer,
    EmbedderConfig,
    HttpEmbedder,
    is_dimension_complaint,
    is_too_long_complaint,
)
from soulworker.embeddings.errors import (
    EmbeddingConfigError,
    EmbeddingDimensionRefused,
    EmbeddingError,
    EmbeddingInputTooLong,
    EmbeddingRequestRejected,
    EmbeddingThrottled,
    EmbeddingUnavailable,
)
from soulworker.embeddings.pacing import AdaptiveLimiter
from soulworker.embeddings.vectors import OPENAI_V3_LIMIT

DEFAULT_ENDPOINT_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "text-embedding-3-small"

MODELS_WITH_DIMENSIONS_PARAMETER = ("text-embedding-3-",)
"""Model id prefixes that accept ``dimensions`` (OpenAI's embeddings guide)."""

NATIVE_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
"""Each known model's full length: the most it can be asked for."""

BATCH_MAX_TEXTS = 96
"""Texts per request: OpenAI takes up to 2,048, but a smaller batch spreads over the
concurrency and loses less to a retry."""

BATCH_MAX_CHARS = 600_000
"""Characters per request: at 3 characters per token, under OpenAI's 300,000 tokens a request."""

INSUFFICIENT_QUOTA_CODE = "insufficient_quota"
"""OpenAI's 429 for an account without credit or quota: a setting to fix, not a rate limit."""


def takes_dimensions(model: str) -> bool:
    """True when ``model`` accepts the ``dimensions`` parameter."""
    return model.startswith(MODELS_WITH_DIMENSIONS_PARAMETER)


class OpenAIEmbedder(HttpEmbedder):
    """Many texts per request to ``{endpoint_url}/embeddings``."""

    provider = "openai"
    input_limit = OPENAI_V3_LIMIT
    texts_per_request = BATCH_MAX_TEXTS

    def __init__(
        self,
        config: EmbedderConfig,
        *,
        api_key: str | None,
        client: httpx2.AsyncClient | None = None,
        limiter: AdaptiveLimiter | None = None,
    ) -> None:
        super().__init__(config, client=client, limiter=limiter)
        self._url = config.endpoint_url.rstrip("/") + "/embeddings"
        self._host = urlsplit(config.endpoint_url).netloc
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"

    def _batches(self, texts: list[str]) -> list[list[str]]:
        batches: list[list[str]] = []
        current: list[str] = []
        size = 0
        for text in texts:
            if current and (len(current) >= BATCH_MAX_TEXTS or size + len(text) > BATCH_MAX_CHARS):
                batches.append(current)
                current, size = [], 0
            current.append(text)
            size += len(text)
        if current:
            batches.append(current)
        return batches

    async def _send(self, texts: list[str]) -> Answer:
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if takes_dimensions(self.model):
            body["dimensions"] = self.dimensions
        response = await self._client.post(self._url, json=body, headers=self._headers)
        if response.status_code != 200:
            raise self._failure(response)
        try:
            payload = response.json()
            items = sorted(payload["data"], key=lambda item: int(item.get("index", 0)))
            vectors = [list(item["embedding"]) for item in items]
            usage = payload.get("usage") or {}
            tokens = int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise EmbeddingUnavailable(
                "The embedding service gave an unexpected answer.",
                operator_line=f"{self._host} answered /embeddings with something other than "
                "OpenAI's embeddings JSON: check SOULWORKER_EMBED_ENDPOINT_URL (it ends in /v1)",
                code="embedding_bad_answer",
            ) from None
        return Answer(vectors, tokens)

    def _failure(self, response: httpx2.Response) -> EmbeddingError:
        status = response.status_code
        code, message = _error_fields(response)
        where = f"{self._host} (HTTP {status}{', ' + code if code else ''})"
        details: dict[str, Any] = {"status_code": status, "provider_error": code or None}
        if status == 429 and code == INSUFFICIENT_QUOTA_CODE:
            return EmbeddingConfigError(
                "The embedding service account has no quota left.",
                operator_line=f"{where}: the account has no quota or credit; add credit or "
                "raise the quota, or choose another SOULWORKER_EMBED_PROVIDER",
                code="embedding_quota",
                **details,
            )
        if status == 429:
            return EmbeddingThrottled(
                "The embedding service is rate-limiting requests.",
                operator_line=f"{where}: rate-limited; soulworker slows down and carries on",
                **details,
            )
        if status in (408, 409) or status >= 500:
            return EmbeddingUnavailable(
                "The embedding service is unavailable.",
                operator_line=f"{where}: unavailable right now; try again in a minute",
                **details,
            )
        if status == 401:
            return EmbeddingConfigError(
                "The embedding service refused the key.",
                operator_line=f"{where} refused the key: set SOULWORKER_EMBED_API_KEY (or "
                "OPENAI_API_KEY) to a valid key for this endpoint",
                code="embedding_auth",
                **details,
            )
        if status == 403:
            return EmbeddingConfigError(
                "The embedding service does not allow this key to use the model.",
                operator_line=f"{where}: the key may not use model {self.model!r}; grant it "
                "access or choose another SOULWORKER_EMBED_MODEL",
                code="embedding_access_denied",
                **details,
            )
        if status == 404:
            return EmbeddingConfigError(
                "The embedding model was not found.",
                operator_line=f"{where} does not know model {self.model!r} at "
                f"{self._url}: check SOULWORKER_EMBED_MODEL and SOULWORKER_EMBED_ENDPOINT_URL",
                code="embedding_model_not_found",
                **details,
            )
        if status == 413 or is_too_long_complaint(message):
            return EmbeddingInputTooLong(
                "A text was too long for the embedding model.",
                operator_line=f"{where}: an input is over the token limit of {self.model!r} "
                "even when cut short; report this with the job id",
                **details,
            )
        if is_dimension_complaint(message) or is_dimension_complaint(code):
            return self.refused_dimension(None, status_code=status, provider_error=code or None)
        return EmbeddingRequestRejected(
            "The embedding service rejected the request.",
            operator_line=f"{where} rejected the request for model {self.model!r}: check "
            "SOULWORKER_EMBED_MODEL and SOULWORKER_EMBED_ENDPOINT_URL",
            **details,
        )

    def refused_dimension(
        self,
        produced: int | None,
        *,
        status_code: int | None = None,
        provider_error: str | None = None,
    ) -> EmbeddingDimensionRefused:
        wanted = self.dimensions
        column: int | None
        if produced is not None:
            finding = f"model {self.model!r} returns {produced} dimensions, not {wanted}"
            column = produced
        else:
            finding = f"{self._host} refused {wanted} dimensions for model {self.model!r}"
            column = NATIVE_DIMENSIONS.get(self.model)
        fix = (
            f"choose a SOULWORKER_EMBED_MODEL that produces {wanted} (text-embedding-3-small or "
            "-large take any length up to 1536 or 3072)"
        )
        if column is not None:
            fix += f", or set the embedding column to vector({column}) (and the app's query side)"
        return EmbeddingDimensionRefused(
            f"The embedding model cannot produce {wanted}-dimensional vectors.",
            operator_line=f"{finding}: {fix}",
            status_code=status_code,
            provider_error=provider_error,
        )


def _error_fields(response: httpx2.Response) -> tuple[str, str]:
    """``(code or type, message)`` from an OpenAI-style error body; empty strings when absent.
    The message is used only to recognise a complaint, never shown."""
    try:
        payload = response.json()
    except ValueError:
        return "", response.text[:500]
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):
        return "", error
    if not isinstance(error, dict):
        return "", ""
    code = error.get("code") or error.get("type") or ""
    return str(code), str(error.get("message") or "")
