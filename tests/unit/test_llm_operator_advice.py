"""The model client explains its own failures to an operator (llm.errors.advice_for_operator):
what happened, what to do, and when there is nothing to fix."""

from __future__ import annotations

import pytest

from soulworker.llm.errors import (
    DEFAULT_API_HOST,
    ApiDiagnostics,
    ModelAuthFailed,
    ModelBadOutput,
    ModelError,
    ModelRequestRejected,
    ModelSpendLimit,
    ModelUnavailable,
    advice_for_operator,
    api_host,
)

HOST = "api.example.test"


def advise(exc: ModelError) -> tuple[str, str, bool]:
    advice = advice_for_operator(
        exc,
        model="claude-x-1",
        model_setting="SOULWORKER_FULL_PASS_MODEL",
        host=HOST,
        request="token-count request",
        default_model="claude-default-2",
    )
    return advice.finding, advice.hint, advice.only_busy


def status(code: int) -> ApiDiagnostics:
    return ApiDiagnostics(status_code=code)


@pytest.mark.parametrize(
    ("exc", "finding", "hint"),
    [
        (
            ModelAuthFailed("x", diagnostics=status(401)),
            f"{HOST} refused ANTHROPIC_API_KEY (HTTP 401)",
            "set ANTHROPIC_API_KEY",
        ),
        (
            ModelAuthFailed("x", code="model_permission_denied", diagnostics=status(403)),
            "the key may not use model 'claude-x-1' (HTTP 403)",
            "model access",
        ),
        (
            ModelRequestRejected("x", code="model_not_found", diagnostics=status(404)),
            f"{HOST} does not know model 'claude-x-1'",
            "set SOULWORKER_FULL_PASS_MODEL to a current model id (default: claude-default-2)",
        ),
        (
            ModelSpendLimit("x", diagnostics=status(429)),
            "spend limit or is out of credit",
            "add credit",
        ),
        (
            ModelUnavailable("x", code="model_connection"),
            f"cannot reach the model API at {HOST}",
            f"ANTHROPIC_BASE_URL (unset means {DEFAULT_API_HOST})",
        ),
        (
            ModelUnavailable("x", code="model_timeout"),
            f"cannot reach the model API at {HOST}",
            "outbound network access",
        ),
        (
            ModelUnavailable("x", diagnostics=status(529)),
            f"the model API at {HOST} is unavailable right now (HTTP 529)",
            "try again in a minute",
        ),
        (
            ModelRequestRejected("x", diagnostics=status(400)),
            f"{HOST} rejected the token-count request for 'claude-x-1' (HTTP 400)",
            "check SOULWORKER_FULL_PASS_MODEL and ANTHROPIC_BASE_URL",
        ),
        (
            ModelBadOutput(["$.a: not a string"]),
            f"{HOST} rejected the token-count request for 'claude-x-1'",
            "check SOULWORKER_FULL_PASS_MODEL",
        ),
    ],
)
def test_each_failure_is_explained_with_what_to_do(
    exc: ModelError, finding: str, hint: str
) -> None:
    said, fix, only_busy = advise(exc)
    assert finding in said
    assert hint in fix
    assert not only_busy


def test_a_rate_limit_is_the_only_failure_with_nothing_to_fix() -> None:
    said, fix, only_busy = advise(ModelUnavailable("x", diagnostics=status(429)))
    assert only_busy
    assert "accepted the key" in said
    assert "nothing to fix" in fix


def test_an_unknown_model_without_a_default_suggests_none() -> None:
    advice = advice_for_operator(
        ModelRequestRejected("x", code="model_not_found"),
        model="m",
        model_setting="SOULWORKER_QUICK_PASS_MODEL",
        host=HOST,
    )
    assert advice.hint == "set SOULWORKER_QUICK_PASS_MODEL to a current model id"


@pytest.mark.parametrize(
    ("base_url", "host"),
    [
        (None, DEFAULT_API_HOST),
        ("", DEFAULT_API_HOST),
        ("http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("https://proxy.example.com/anthropic", "proxy.example.com"),
    ],
)
def test_the_host_a_client_talks_to(base_url: str | None, host: str) -> None:
    assert api_host(base_url) == host
