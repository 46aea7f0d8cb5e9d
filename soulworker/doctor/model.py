"""The model check: one free ``count_tokens`` call per configured model proves the key and the
model ids without generating anything. What a failure means is the model client's own
explanation (``llm.errors.advice_for_operator``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from soulworker.doctor.core import (
    HTTP_CONNECT_TIMEOUT_SECONDS,
    HTTP_READ_TIMEOUT_SECONDS,
    Check,
    DoctorContext,
    Outcome,
    fail,
    ok,
    skip,
    warn,
)
from soulworker.settings import Settings, iter_knobs

if TYPE_CHECKING:
    from soulworker.llm.errors import ModelError

PROBE_MODEL_SYSTEM = "soulworker doctor"
PROBE_MODEL_TEXT = "Hello."
"""What ``count_tokens`` is asked to count: tiny, fixed and free of anyone's data."""


async def check_model(context: DoctorContext) -> Outcome:
    """One free ``count_tokens`` call per configured model: proves the key and the model ids
    without generating anything."""
    settings = context.settings
    if settings is None:
        return skip("skipped: the settings could not be read (see configuration)")
    if not settings.model_stages:
        return skip("skipped: SOULWORKER_MODEL_STAGES=off (no model calls are made)")
    if not settings.anthropic_api_key:
        return skip("skipped: ANTHROPIC_API_KEY is not set (see configuration)")
    # The SDK takes a second to import: only this check pays for it, never other commands.
    from soulworker.llm.client import ModelClient, ModelClientConfig
    from soulworker.llm.errors import ModelError, api_host
    from soulworker.llm.retry import RetryPolicy

    host = api_host(settings.anthropic_base_url)
    config = ModelClientConfig(
        api_key=settings.anthropic_api_key,
        base_url=settings.anthropic_base_url,
        request_timeout_seconds=HTTP_READ_TIMEOUT_SECONDS,
        connect_timeout_seconds=HTTP_CONNECT_TIMEOUT_SECONDS,
        max_concurrent_calls=1,
        # One request: doctor reports what the API says now instead of waiting out backoff.
        retry=RetryPolicy(max_attempts=1),
    )
    models = _models_to_check(settings)
    counted: dict[str, int] = {}
    async with ModelClient(config) as client:
        for model, variable in models.items():
            try:
                counted[model] = await client.count_tokens(
                    model=model, system=PROBE_MODEL_SYSTEM, content=PROBE_MODEL_TEXT
                )
            except ModelError as exc:
                return model_failure(exc, model=model, variable=variable, host=host)
    names = ", ".join(models)
    return ok(f"key accepted by {host}; model {names} known", host=host, input_tokens=counted)


def _models_to_check(settings: Settings) -> dict[str, str]:
    """Each distinct model id with the variable that sets it."""
    models = {settings.quick_pass_model: "SOULWORKER_QUICK_PASS_MODEL"}
    models.setdefault(settings.full_pass_model, "SOULWORKER_FULL_PASS_MODEL")
    return models


def model_failure(exc: ModelError, *, model: str, variable: str, host: str) -> Outcome:
    """The outcome for a failed probe: the model client's advice; a warning when the API is
    only busy (the daemon waits that out), else a failure."""
    from soulworker.llm.errors import advice_for_operator

    advice = advice_for_operator(
        exc,
        model=model,
        model_setting=variable,
        host=host,
        request="token-count request",
        default_model=_default_of(variable),
    )
    details = {"host": host, "model": model, "status_code": exc.status_code, "code": exc.code}
    if advice.only_busy:
        return warn(advice.finding, advice.hint, **details)
    return fail(advice.finding, advice.hint, **details)


def _default_of(variable: str) -> str | None:
    """The documented default of a setting (the settings declare it once)."""
    for _, knob in iter_knobs():
        if knob.env == variable:
            return knob.default_text or None
    return None


MODEL = Check(
    "model",
    check_model,
    timeout_hint="check that this machine can reach the model API (ANTHROPIC_BASE_URL)",
)
