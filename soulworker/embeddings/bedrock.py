"""The ``bedrock`` provider: Titan Text Embeddings V2 through ``bedrock-runtime`` InvokeModel.

One text per request, as Titan requires: ``POST {endpoint}/model/{model id}/invoke``, the id
percent-encoded (``%3A`` for its colon), with ``{"inputText", "dimensions", "normalize": true}``;
the answer is ``{"embedding": [...], "inputTextTokenCount": n}``. Requests are signed with SigV4
(``sigv4``) from the standard credential variables, or carry a Bedrock API key
(``AWS_BEARER_TOKEN_BEDROCK``) as ``Authorization: Bearer``, which wins when both are set, as in
the AWS SDKs.

Failures are read from the ``x-amzn-ErrorType`` header (else the body's ``__type``): the
exception names of the InvokeModel API reference decide what each means (docs/embeddings.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

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
from soulworker.embeddings.sigv4 import AwsCredentials, sign_request
from soulworker.embeddings.vectors import TITAN_V2_LIMIT

DEFAULT_MODEL = "amazon.titan-embed-text-v2:0"

TITAN_V2_DIMENSIONS = (1024, 512, 256)
"""The lengths Titan Text Embeddings V2 documents; 1024 is its default."""

THROTTLING_ERRORS = frozenset({"ThrottlingException"})
OUTAGE_ERRORS = frozenset(
    {
        "InternalServerException",
        "ServiceUnavailableException",
        "ModelTimeoutException",
        "ModelNotReadyException",
        "ModelErrorException",
    }
)
CREDENTIAL_ERRORS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
    }
)


def default_endpoint_url(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


@dataclass(frozen=True)
class BedrockAuth:
    """How requests are authorised: a Bedrock API key, or SigV4 with credentials."""

    region: str
    bearer_token: str | None = None
    credentials: AwsCredentials | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> BedrockAuth:
        """The standard variables; raises ``EmbeddingConfigError`` when a region or any
        credential is missing."""
        region = (environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "").strip()
        if not region:
            raise EmbeddingConfigError(
                "The embedding service is not configured.",
                operator_line="SOULWORKER_EMBED_PROVIDER=bedrock needs AWS_REGION (the region "
                "where Titan Text Embeddings V2 is enabled, e.g. us-east-1)",
                code="embedding_not_configured",
            )
        token = environ.get("AWS_BEARER_TOKEN_BEDROCK", "").strip() or None
        credentials = AwsCredentials.from_environ(environ)
        if token is None and credentials is None:
            raise EmbeddingConfigError(
                "The embedding service is not configured.",
                operator_line="SOULWORKER_EMBED_PROVIDER=bedrock needs AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), or a Bedrock API key in "
                "AWS_BEARER_TOKEN_BEDROCK",
                code="embedding_not_configured",
            )
        return cls(region=region, bearer_token=token, credentials=credentials)

    @property
    def kind(self) -> str:
        """What authorises the requests, for findings (never the secret itself)."""
        return "Bedrock API key" if self.bearer_token else "AWS access key"


class BedrockEmbedder(HttpEmbedder):
    """One signed InvokeModel request per text."""

    provider = "bedrock"
    input_limit = TITAN_V2_LIMIT

    def __init__(
        self,
        config: EmbedderConfig,
        *,
        auth: BedrockAuth,
        client: httpx2.AsyncClient | None = None,
        limiter: AdaptiveLimiter | None = None,
    ) -> None:
        super().__init__(config, client=client, limiter=limiter)
        self.auth = auth
        base = config.endpoint_url.rstrip("/")
        self._url = f"{base}/model/{quote(config.model, safe='')}/invoke"
        self._host = urlsplit(base).netloc

    def _batches(self, texts: list[str]) -> list[list[str]]:
        return [[text] for text in texts]

    async def _send(self, texts: list[str]) -> Answer:
        (text,) = texts
        body = json.dumps(
            {"inputText": text, "dimensions": self.dimensions, "normalize": True}
        ).encode()
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.auth.bearer_token:
            headers["authorization"] = f"Bearer {self.auth.bearer_token}"
        else:
            assert self.auth.credentials is not None  # BedrockAuth.from_environ ensures one
            headers.update(
                sign_request(
                    method="POST",
                    url=self._url,
                    headers=headers,
                    body=body,
                    credentials=self.auth.credentials,
                    region=self.auth.region,
                )
            )
        response = await self._client.post(self._url, content=body, headers=headers)
        if response.status_code != 200:
            raise self._failure(response)
        try:
            payload = response.json()
            vector = list(payload["embedding"])
            tokens = int(payload.get("inputTextTokenCount") or 0)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise EmbeddingUnavailable(
                "The embedding service gave an unexpected answer.",
                operator_line=f"{self._host} answered InvokeModel without an embedding: check "
                "SOULWORKER_EMBED_MODEL (a Titan text embeddings model)",
                code="embedding_bad_answer",
            ) from None
        return Answer([vector], tokens)

    def _failure(self, response: httpx2.Response) -> EmbeddingError:
        status = response.status_code
        error_type, message = _error_fields(response)
        where = f"{self._host} (HTTP {status}{', ' + error_type if error_type else ''})"
        details: dict[str, Any] = {"status_code": status, "provider_error": error_type or None}
        if error_type in THROTTLING_ERRORS or (status == 429 and not error_type):
            return EmbeddingThrottled(
                "The embedding service is rate-limiting requests.",
                operator_line=f"{where}: throttled; soulworker slows down and carries on",
                **details,
            )
        if error_type in OUTAGE_ERRORS or status >= 500 or status == 429:
            return EmbeddingUnavailable(
                "The embedding service is unavailable.",
                operator_line=f"{where}: unavailable right now; try again in a minute",
                **details,
            )
        if error_type == "ServiceQuotaExceededException":
            return EmbeddingConfigError(
                "The embedding service account has no quota for this model.",
                operator_line=f"{where}: the account's quota for {self.model} is exhausted or "
                f"zero in {self.auth.region}; request a quota increase (Service Quotas, Amazon "
                "Bedrock) or use another region",
                code="embedding_quota",
                **details,
            )
        if error_type in CREDENTIAL_ERRORS or status == 401:
            return EmbeddingConfigError(
                "The embedding service refused the credentials.",
                operator_line=f"{where} refused the {self.auth.kind}: check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (or AWS_BEARER_TOKEN_BEDROCK)",
                code="embedding_auth",
                **details,
            )
        if error_type == "AccessDeniedException" or status == 403:
            return EmbeddingConfigError(
                "The embedding service does not allow access to the model.",
                operator_line=f"{where}: no access to {self.model} in {self.auth.region}; enable "
                "the model (Bedrock console, Model access) and allow bedrock:InvokeModel on it",
                code="embedding_access_denied",
                **details,
            )
        if error_type == "ResourceNotFoundException" or status == 404:
            return EmbeddingConfigError(
                "The embedding model was not found.",
                operator_line=f"{where} does not know {self.model} in {self.auth.region}: check "
                f"SOULWORKER_EMBED_MODEL (default {DEFAULT_MODEL}) and AWS_REGION",
                code="embedding_model_not_found",
                **details,
            )
        if status == 413 or is_too_long_complaint(message):
            return EmbeddingInputTooLong(
                "A text was too long for the embedding model.",
                operator_line=f"{where}: an input is over the token limit of {self.model} even "
                "when cut short; report this with the job id",
                **details,
            )
        if is_dimension_complaint(message):
            return self.refused_dimension(None, status_code=status, provider_error=error_type)
        return EmbeddingRequestRejected(
            "The embedding service rejected the request.",
            operator_line=f"{where} rejected the request for {self.model}: check "
            "SOULWORKER_EMBED_MODEL",
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
        name = "Titan V2" if self.model == DEFAULT_MODEL else self.model
        if produced is None:
            finding = f"{name} cannot produce {wanted} dimensions"
        else:
            finding = f"{name} returned {produced} dimensions when asked for {wanted}"
        if self.model == DEFAULT_MODEL:
            fix = (
                "set the embedding column to vector(1024) (or 512 or 256; the app's query side "
                "must match) or choose SOULWORKER_EMBED_PROVIDER=openai with a model that "
                f"produces {wanted}"
            )
        else:
            fix = (
                f"set the embedding column to a length {self.model} supports, or choose a "
                f"SOULWORKER_EMBED_MODEL that produces {wanted}"
            )
        return EmbeddingDimensionRefused(
            f"The embedding model cannot produce {wanted}-dimensional vectors.",
            operator_line=f"{finding}: {fix}",
            status_code=status_code,
            provider_error=provider_error,
        )


def _error_fields(response: httpx2.Response) -> tuple[str, str]:
    """``(exception name, message)`` of a Bedrock error; the message is used only to recognise
    a complaint about dimensions, never shown."""
    header = response.headers.get("x-amzn-errortype", "")
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    raw_type = header or str(payload.get("__type") or "")
    # "ThrottlingException:http://internal.amazon.com/…" or "com.amazon…#ThrottlingException"
    error_type = raw_type.split(":", 1)[0].rsplit("#", 1)[-1]
    message = str(payload.get("message") or payload.get("Message") or "")
    return error_type, message
