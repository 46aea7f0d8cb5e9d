"""The ways an embedding call can fail, as job errors (docs/embeddings.md, "Failures").

Every class is a ``JobError``: ``message`` may be shown to the person whose import it is and is
written to the job row, so it never holds the text being embedded, a key, a header or the
provider's own wording (which may quote the request). ``operator_line`` says, in one line, what
is wrong and what an operator should change, as ``<what is wrong>: <what to change>`` (doctor
splits it there into its finding and its fix). ``status_code`` and
``provider_error`` (Bedrock's ``x-amzn-ErrorType`` or OpenAI's ``error.code``/``type``) are safe
to log.

Transient (the retry policy tries again, then the queue does): ``EmbeddingThrottled`` (429,
ThrottlingException: slow down and carry on) and ``EmbeddingUnavailable`` (5xx, timeouts,
dropped connections). Permanent (retrying cannot help): ``EmbeddingConfigError`` (a refused or
missing key, access denied, a model that is not enabled, a quota of zero),
``EmbeddingDimensionRefused`` (the model cannot produce the vector length the database stores)
and ``EmbeddingRequestRejected`` (any other refused request: a bug or a setting), with its
subclass ``EmbeddingInputTooLong``, which the embedder handles by cutting the text further.
"""

from __future__ import annotations

from soulworker.errors import JobError, PermanentJobError, TransientJobError


class EmbeddingError(JobError):
    """Base of every embedding failure."""

    default_code = "embedding_error"

    def __init__(
        self,
        message: str,
        *,
        operator_line: str,
        code: str | None = None,
        status_code: int | None = None,
        provider_error: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.operator_line = operator_line
        self.status_code = status_code
        self.provider_error = provider_error


class EmbeddingThrottled(EmbeddingError, TransientJobError):
    """The provider asked us to slow down (HTTP 429, ThrottlingException). Retried with a
    smaller concurrency; raised to the caller only when the throttling budget ran out."""

    default_code = "embedding_throttled"


class EmbeddingUnavailable(EmbeddingError, TransientJobError):
    """The provider failed (5xx), timed out or could not be reached."""

    default_code = "embedding_unavailable"


class EmbeddingConfigError(EmbeddingError, PermanentJobError):
    """The provider refused the credentials, the model is not enabled for them, or their
    quota is zero: an operator must change a setting or the account."""

    default_code = "embedding_config"


class EmbeddingDimensionRefused(EmbeddingError, PermanentJobError):
    """The model cannot produce the vector length the ``embedding`` column stores."""

    default_code = "embedding_dimension_refused"


class EmbeddingRequestRejected(EmbeddingError, PermanentJobError):
    """The provider rejected the request for another reason (HTTP 400/404/422…)."""

    default_code = "embedding_request_rejected"


class EmbeddingInputTooLong(EmbeddingRequestRejected):
    """An input exceeds the model's token limit although it is within the character budget
    (dense text). The embedder cuts it further; raised only when cutting cannot help."""

    default_code = "embedding_input_too_long"
