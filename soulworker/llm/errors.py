"""The ways a model call can fail, as job errors, and how SDK errors map onto them.

Every class here is a ``JobError``: its message may be shown to the person whose import it is
and is written to the job row, so it is short, says what to do, and never contains the API
key, a request header, the prompt or the model's answer. ``code`` is stable; operators group
failures by it. Diagnostics that are safe (HTTP status, the API's ``request-id``, its error
type and error code) are kept as attributes for logs.

Permanent (retrying the same request cannot help): ``ModelRefused``, ``ModelSpendLimit``,
``ModelAuthFailed``, ``ModelRequestRejected``. Transient (another attempt later may succeed):
``ModelUnavailable`` (raised only after the retry policy ran out), ``ModelBadOutput`` (after
the re-ask that told the model what was wrong), ``ModelTruncated`` and its subclass
``ModelContextExceeded``; the caller is expected to catch the last two and shrink its input or
raise ``max_tokens`` before letting them escape (docs/model-answers.md).

A transient failure's message says only what happened; the queue adds whether the import will
be tried again or has stopped, because only the queue knows.

``model_error_from_api_error`` is the one place that turns an SDK exception into one of these.
Its result is never chained to the SDK exception: that exception holds the HTTP request,
whose headers carry the key, and a traceback renderer that walks ``__cause__`` or shows
locals could print it.

``advice_for_operator`` is the one place that explains one of these to an operator rather
than to the person importing (``soulworker doctor`` shows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from soulworker.errors import JobError, PermanentJobError, TransientJobError

if TYPE_CHECKING:
    # Imported by the functions that read SDK errors instead: the SDK takes ~1.5 s to import,
    # and these classes are needed by every stage module, also with the model stages off.
    # Where an SDK error is read, the SDK is loaded already, so importing it there is free.
    import anthropic

# Error codes (``error.details.error_code``) that mean "no more money may be spent". The SDK
# maps them to their own classes too; matching the code keeps us right if a class moves.
SPEND_LIMIT_ERROR_CODES = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
    }
)

# Words in an error *type* or *code* that mean billing, not load. Matching on them is how a
# 400/429 spend error that a future API version names differently is still caught.
_BILLING_WORDS = ("spend", "billing", "credit")

# The API answers "Your credit balance is too low…" as a plain 400 invalid_request_error with
# no error code; its wording is the only signal. We match it case-insensitively and never
# show it.
_CREDIT_MESSAGE_MARKERS = ("credit balance",)

# A 400 whose message says the prompt does not fit the context window: the caller must shrink
# its input. Again only the wording identifies it.
_PROMPT_TOO_LONG_MARKERS = ("prompt is too long", "context window", "context length")


@dataclass(frozen=True)
class ApiDiagnostics:
    """What the API said about a failed request, safe to log: no body text, no headers."""

    status_code: int | None = None
    request_id: str | None = None
    api_error_type: str | None = None
    api_error_code: str | None = None

    @classmethod
    def of(cls, exc: anthropic.APIStatusError) -> ApiDiagnostics:
        """The diagnostics of an SDK status error."""
        return cls(
            status_code=exc.status_code,
            request_id=exc.request_id,
            api_error_type=exc.type,
            api_error_code=exc.error_code,
        )


_NO_DIAGNOSTICS = ApiDiagnostics()


class ModelError(JobError):
    """Base of every model failure (each concrete class is also a Permanent/Transient error).

    ``status_code``, ``request_id``, ``api_error_type`` and ``api_error_code`` come from the
    API's answer when there was one (``None`` otherwise) and are safe to log.
    """

    default_code = "model_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        diagnostics: ApiDiagnostics = _NO_DIAGNOSTICS,
    ) -> None:
        super().__init__(message, code=code)
        self.status_code = diagnostics.status_code
        self.request_id = diagnostics.request_id
        self.api_error_type = diagnostics.api_error_type
        self.api_error_code = diagnostics.api_error_code


class ModelRefused(ModelError, PermanentJobError):
    """The model answered with ``stop_reason: refusal``. Asking again gives the same answer.

    ``category`` is the API's refusal category (``cyber``, ``general_harms``…) or ``None``.
    """

    default_code = "model_refused"

    def __init__(self, *, category: str | None = None, request_id: str | None = None) -> None:
        super().__init__(
            "The model declined to analyse this export.",
            diagnostics=ApiDiagnostics(request_id=request_id),
        )
        self.category = category


class ModelSpendLimit(ModelError, PermanentJobError):
    """The account hit its spend limit or has no credit. Lasts until someone raises the limit."""

    default_code = "model_spend_limit"


class ModelAuthFailed(ModelError, PermanentJobError):
    """The API refused the key (401) or the key may not do this (403). The key is never echoed."""

    default_code = "model_auth_failed"


class ModelRequestRejected(ModelError, PermanentJobError):
    """The API rejected the request itself (400, 404, 422…): a configuration or program bug."""

    default_code = "model_request_rejected"


class ModelUnavailable(ModelError, TransientJobError):
    """The API kept failing (429, 529, 5xx, timeouts, dropped connections) until retries ran out.

    ``attempts`` is the number of requests made for the call.
    """

    default_code = "model_unavailable"

    def __init__(
        self,
        message: str,
        *,
        attempts: int = 0,
        code: str | None = None,
        diagnostics: ApiDiagnostics = _NO_DIAGNOSTICS,
    ) -> None:
        super().__init__(message, code=code, diagnostics=diagnostics)
        self.attempts = attempts


class ModelBadOutput(ModelError, TransientJobError):
    """The answer was not JSON, broke a hard rule of the schema, or a rule the schema can't say,
    and so did the answer to the re-ask that said what was wrong.

    ``problems`` lists what was wrong as JSON paths and rule names (``$.soul.formality_level:
    not one of the allowed values``); never values, because values are personal data.
    """

    default_code = "model_bad_output"

    def __init__(
        self,
        problems: Sequence[str],
        *,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            "The model's answers could not be used.",
            code=code,
            diagnostics=ApiDiagnostics(request_id=request_id),
        )
        self.problems = tuple(problems)


class ModelTruncated(ModelError, TransientJobError):
    """The answer was cut off at ``max_tokens`` (``stop_reason: max_tokens``).

    The caller decides what to do: retry with a larger limit, or with a smaller input
    (docs/model-answers.md). ``max_tokens`` is the limit that was hit; ``can_raise_limit`` is
    false when a larger limit cannot help (see ``ModelContextExceeded``).
    """

    default_code = "model_truncated"
    can_raise_limit = True

    def __init__(
        self,
        *,
        max_tokens: int | None = None,
        message: str = "The model's answer was cut off.",
        diagnostics: ApiDiagnostics = _NO_DIAGNOSTICS,
    ) -> None:
        super().__init__(message, diagnostics=diagnostics)
        self.max_tokens = max_tokens


class ModelContextExceeded(ModelTruncated):
    """The input does not fit the model's context window: only a smaller input helps.

    Raised for ``stop_reason: model_context_window_exceeded`` and for a 400/413 that says the
    prompt is too long.
    """

    default_code = "model_context_exceeded"
    can_raise_limit = False

    def __init__(
        self, *, max_tokens: int | None = None, diagnostics: ApiDiagnostics = _NO_DIAGNOSTICS
    ) -> None:
        super().__init__(
            max_tokens=max_tokens,
            message="The text sent to the model was too long for it.",
            diagnostics=diagnostics,
        )


def is_spend_limit_error(exc: BaseException) -> bool:
    """True when ``exc`` says the account may not spend more (never worth an automatic retry).

    Recognised by the SDK's classes (``EnforcedSpendLimitReachedError`` and friends, any 402),
    by ``error.details.error_code``, by an error type or code naming billing/spend/credit, and
    by the "credit balance is too low" 400 that carries no code.
    """
    import anthropic

    if isinstance(
        exc,
        anthropic.EnforcedSpendLimitReachedError
        | anthropic.ContractSpendLimitReachedError
        | anthropic.LinkedOrganizationSpendLimitReachedError
        | anthropic.LinkedOrganizationBillingUnavailableError
        | anthropic.PaymentRequiredError,
    ):
        return True
    if not isinstance(exc, anthropic.APIStatusError):
        return False
    if exc.error_code in SPEND_LIMIT_ERROR_CODES:
        return True
    markers = " ".join(str(part) for part in (exc.type, exc.error_code) if part).lower()
    if any(word in markers for word in _BILLING_WORDS):
        return True
    message = (exc.api_message or "").lower()
    return exc.status_code in (400, 429) and any(m in message for m in _CREDIT_MESSAGE_MARKERS)


def is_prompt_too_long_error(exc: BaseException) -> bool:
    """True for a 413, or a 400 whose message says the prompt exceeds the context window."""
    import anthropic

    if not isinstance(exc, anthropic.APIStatusError):
        return False
    if exc.status_code == 413:
        return True
    message = (exc.api_message or "").lower()
    return exc.status_code == 400 and any(m in message for m in _PROMPT_TOO_LONG_MARKERS)


def model_error_from_api_error(exc: anthropic.APIError, *, attempts: int) -> ModelError:
    """The job error for an SDK exception that was not (or no longer) worth retrying.

    ``attempts`` is how many requests the call made; it goes into ``ModelUnavailable``. The
    result carries safe diagnostics only; raise it outside the ``except`` block (or
    ``from None``) so the SDK exception is not attached to it.
    """
    import anthropic

    if is_spend_limit_error(exc):
        assert isinstance(exc, anthropic.APIStatusError)  # only status errors carry billing
        return ModelSpendLimit(
            "The model API account has reached its spend limit or is out of credit. "
            "Raise the limit or add credit in the Anthropic console, then retry the import.",
            diagnostics=ApiDiagnostics.of(exc),
        )
    if isinstance(exc, anthropic.APIStatusError):
        diagnostics = ApiDiagnostics.of(exc)
        status = exc.status_code
        if status == 401:
            return ModelAuthFailed(
                "The model API key was rejected. Check ANTHROPIC_API_KEY, then retry the import.",
                diagnostics=diagnostics,
            )
        if status == 403:
            return ModelAuthFailed(
                "The model API key is not allowed to make this request. Check the key's "
                "workspace and permissions, then retry the import.",
                code="model_permission_denied",
                diagnostics=diagnostics,
            )
        if is_prompt_too_long_error(exc):
            return ModelContextExceeded(diagnostics=diagnostics)
        if status == 404:
            return ModelRequestRejected(
                "The configured model was not found. Check the model name setting.",
                code="model_not_found",
                diagnostics=diagnostics,
            )
        if 400 <= status < 500 and status not in (408, 409, 429):
            return ModelRequestRejected(
                "The model API rejected the request. Retrying will not help; "
                "please report this to the operators.",
                diagnostics=diagnostics,
            )
        return ModelUnavailable(
            "The model API is unavailable or overloaded.",
            attempts=attempts,
            diagnostics=diagnostics,
        )
    if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
        reason = "timeout" if isinstance(exc, anthropic.APITimeoutError) else "connection"
        return ModelUnavailable(
            "The model API could not be reached.",
            attempts=attempts,
            code=f"model_{reason}",
        )
    # Anything else the SDK raises (an answer it could not parse, say) is unexpected but may
    # well not happen again.
    return ModelUnavailable(
        "The model API gave an unexpected answer.",
        attempts=attempts,
        code="model_api_error",
    )


DEFAULT_API_HOST = "api.anthropic.com"
"""Where the SDK sends requests when no base URL is set (``ANTHROPIC_BASE_URL`` unset)."""


def api_host(base_url: str | None) -> str:
    """The host a client with ``base_url`` talks to, for findings and logs."""
    return urlsplit(base_url).netloc if base_url else DEFAULT_API_HOST


@dataclass(frozen=True)
class OperatorAdvice:
    """A failed model call explained to an operator (not to the person importing): what
    happened, what to do, and whether the API is only busy right now (``only_busy``: the key
    and the model are fine and the daemon waits and retries, so there is nothing to fix)."""

    finding: str
    hint: str
    only_busy: bool = False


def advice_for_operator(
    exc: ModelError,
    *,
    model: str,
    model_setting: str,
    host: str,
    request: str = "request",
    default_model: str | None = None,
) -> OperatorAdvice:
    """What ``exc`` means for whoever runs the deployment, by what the API said.

    ``model`` is the model id the call used and ``model_setting`` the variable that set it;
    ``host`` where the call went (:func:`api_host`); ``request`` names what was asked, as in
    "rejected the token-count request"; ``default_model`` is suggested when the model id is
    unknown. The key is never echoed.
    """
    shown = f" (HTTP {exc.status_code})" if exc.status_code else ""
    if isinstance(exc, ModelAuthFailed) and exc.code == "model_permission_denied":
        return OperatorAdvice(
            f"the key may not use model {model!r} (HTTP 403)",
            "check the key's workspace and its model access in the Anthropic console",
        )
    if isinstance(exc, ModelAuthFailed):
        return OperatorAdvice(
            f"{host} refused ANTHROPIC_API_KEY (HTTP {exc.status_code})",
            "create or copy a key in the Anthropic console (API keys) and set ANTHROPIC_API_KEY",
        )
    if isinstance(exc, ModelRequestRejected) and exc.code == "model_not_found":
        default = f" (default: {default_model})" if default_model else ""
        return OperatorAdvice(
            f"{host} does not know model {model!r}",
            f"set {model_setting} to a current model id{default}",
        )
    if isinstance(exc, ModelSpendLimit):
        return OperatorAdvice(
            "the model API account has reached its spend limit or is out of credit",
            "raise the limit or add credit in the Anthropic console",
        )
    if isinstance(exc, ModelUnavailable) and exc.code in ("model_connection", "model_timeout"):
        return OperatorAdvice(
            f"cannot reach the model API at {host}",
            "check outbound network access and ANTHROPIC_BASE_URL (unset means "
            f"{DEFAULT_API_HOST})",
        )
    if isinstance(exc, ModelUnavailable) and exc.status_code == 429:
        return OperatorAdvice(
            f"{host} accepted the key but is rate-limiting it right now (HTTP 429)",
            "nothing to fix if this passes; the daemon waits and retries",
            only_busy=True,
        )
    if isinstance(exc, ModelUnavailable):
        return OperatorAdvice(
            f"the model API at {host} is unavailable right now{shown}",
            "try again in a minute (status.anthropic.com)",
        )
    return OperatorAdvice(
        f"{host} rejected the {request} for {model!r}{shown}",
        f"check {model_setting} and ANTHROPIC_BASE_URL",
    )
