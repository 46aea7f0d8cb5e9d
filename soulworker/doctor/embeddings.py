"""The embeddings check: the ``embedding`` column's length from the database, and one live call
proving the configured provider and model produce exactly that many values. What a failure means
is the embedder's own explanation (``EmbeddingError.operator_line``, docs/embeddings.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from soulworker.doctor.core import Check, DoctorContext, Outcome, fail, ok, skip, warn
from soulworker.doctor.database import database_settings, open_connection

if TYPE_CHECKING:
    from soulworker.embeddings.errors import EmbeddingError

NO_COLUMN_HINT = (
    "create extension vector, then run soulworker migrate (it adds the column); or set "
    "SOULWORKER_EMBED_PROVIDER=off"
)
DEFAULT_HINT = "check the SOULWORKER_EMBED_* settings (soulworker settings)"


async def check_embeddings(context: DoctorContext) -> Outcome:
    """Skip when embedding is off; else read the column and make one live call."""
    settings = database_settings(context)
    if isinstance(settings, Outcome):
        return settings
    if settings.embed_provider == "off":
        return skip("skipped: SOULWORKER_EMBED_PROVIDER=off (chunks are not embedded)")
    # Imported here: only this check pays for the embedding code.
    from soulworker.embeddings.dimensions import (
        embedding_column,
        prove_dimensions,
        wanted_dimensions,
    )
    from soulworker.embeddings.errors import EmbeddingError, EmbeddingThrottled
    from soulworker.embeddings.factory import embed_model, embedder_from_settings
    from soulworker.embeddings.retry import EmbedRetryPolicy

    provider, model = settings.embed_provider, embed_model(settings)
    details: dict[str, object] = {"provider": provider, "model": model}
    conn = await open_connection(settings)
    try:
        column = await embedding_column(conn)
    finally:
        await conn.close()
    if column is None:
        return warn(
            "the database has no conversation_chunks.embedding column (pgvector is not "
            "installed): imports will not embed chunks",
            NO_COLUMN_HINT,
            **details,
        )
    details["column"] = column.type_name
    try:
        dimensions = wanted_dimensions(column, settings.embed_dimensions)
        # One request: doctor reports what the provider says now instead of waiting out backoff.
        embedder = embedder_from_settings(
            settings, dimensions=dimensions, environ=context.environ,
            retry=EmbedRetryPolicy(max_attempts=1, throttle_budget_seconds=0),
        )  # fmt: skip
    except EmbeddingError as exc:
        return _failure(exc, details)
    try:
        proof = await prove_dimensions(embedder)
    except EmbeddingThrottled as exc:
        finding, hint = _split(exc.operator_line)
        return warn(finding, hint, **details, status_code=exc.status_code)
    except EmbeddingError as exc:
        return _failure(exc, details)
    finally:
        await embedder.aclose()
    return ok(
        f"{provider} model {model} produces {proof.dimensions}-dimensional vectors for "
        f"the embedding column ({column.type_name})",
        **details,
        dimensions=proof.dimensions,
    )


def _failure(exc: EmbeddingError, details: dict[str, object]) -> Outcome:
    finding, hint = _split(exc.operator_line)
    return fail(finding, hint, **details, code=exc.code, status_code=exc.status_code)


def _split(line: str) -> tuple[str, str]:
    """An operator line is ``what is wrong: what to change`` (``embeddings.errors``)."""
    finding, sep, hint = line.partition(": ")
    return (finding, hint) if sep and hint else (line, DEFAULT_HINT)


EMBEDDINGS = Check(
    "embeddings",
    check_embeddings,
    needs=("database",),
    timeout_hint="check that this machine can reach the embedding endpoint "
    "(SOULWORKER_EMBED_ENDPOINT_URL, or the provider's own)",
)
