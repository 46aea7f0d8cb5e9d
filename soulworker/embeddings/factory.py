"""The embedder the settings ask for (docs/embeddings.md, "Settings").

Bedrock's credentials and region, and OpenAI's fallback key ``OPENAI_API_KEY``, come from the
environment the standard way rather than from ``SOULWORKER_*`` settings, so they are read here
from the same mapping the settings were read from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal

import httpx2

from soulworker.embeddings import bedrock, openai
from soulworker.embeddings.embedder import EmbedderConfig, HttpEmbedder
from soulworker.embeddings.pacing import AdaptiveLimiter
from soulworker.embeddings.retry import EmbedRetryPolicy
from soulworker.settings import Settings

DEFAULT_MODELS = {"bedrock": bedrock.DEFAULT_MODEL, "openai": openai.DEFAULT_MODEL}


def embedding_enabled(settings: Settings) -> bool:
    """Whether chunks are to be embedded at all (``SOULWORKER_EMBED_PROVIDER`` is not off)."""
    return settings.embed_provider != "off"


def embed_model(settings: Settings) -> str:
    """The model id: the setting, else the provider's default."""
    return settings.embed_model or DEFAULT_MODELS[settings.embed_provider]


def embedder_from_settings(
    settings: Settings,
    *,
    dimensions: int,
    environ: Mapping[str, str] | None = None,
    retry: EmbedRetryPolicy | None = None,
    client: httpx2.AsyncClient | None = None,
    limiter: AdaptiveLimiter | None = None,
) -> HttpEmbedder:
    """An embedder for ``dimensions``-long vectors as configured; close it with ``aclose``.

    Raises ``EmbeddingConfigError`` when the provider's credentials or region are missing and
    ``ValueError`` when the provider is ``off``. ``limiter``: shared with other embedders
    (``shared_limiter``), so ``SOULWORKER_EMBED_CONCURRENCY`` bounds the process.
    """
    env = os.environ if environ is None else environ
    provider = settings.embed_provider
    if provider == "off":
        raise ValueError("SOULWORKER_EMBED_PROVIDER is off: there is no embedder")
    model = embed_model(settings)
    price = settings.embed_price_per_mtok

    def config(endpoint_url: str) -> EmbedderConfig:
        return EmbedderConfig(
            model=model,
            dimensions=dimensions,
            endpoint_url=settings.embed_endpoint_url or endpoint_url,
            concurrency=settings.embed_concurrency,
            price_per_mtok=None if price is None else Decimal(str(price)),
            # Throttling alone never ends an attempt before its time limit does (the limit
            # then fails it as transient, and the queue retries later): docs/embeddings.md.
            retry=retry or EmbedRetryPolicy(throttle_budget_seconds=settings.job_timeout_seconds),
        )

    if provider == "bedrock":
        auth = bedrock.BedrockAuth.from_environ(env)
        return bedrock.BedrockEmbedder(
            config(bedrock.default_endpoint_url(auth.region)),
            auth=auth,
            client=client,
            limiter=limiter,
        )
    api_key = settings.embed_api_key or env.get("OPENAI_API_KEY", "").strip() or None
    return openai.OpenAIEmbedder(
        config(openai.DEFAULT_ENDPOINT_URL), api_key=api_key, client=client, limiter=limiter
    )


def shared_limiter(settings: Settings) -> AdaptiveLimiter:
    """One limiter for every embedder of the process: ``SOULWORKER_EMBED_CONCURRENCY`` requests
    in flight at most, whatever the number of jobs, and a throttle seen by one job slows all."""
    retry = EmbedRetryPolicy()
    return AdaptiveLimiter(
        settings.embed_concurrency,
        min_pause_seconds=retry.throttle_pause_initial_seconds,
        max_pause_seconds=retry.throttle_pause_max_seconds,
    )
