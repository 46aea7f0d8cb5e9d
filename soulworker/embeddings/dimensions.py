"""The dimension follows the database: read the ``embedding`` column's length, and prove with one
live call that the provider and model produce exactly that (docs/embeddings.md, "Dimensions").

``soulworker doctor`` runs this check (``doctor.embeddings``); the daemon will run it at start
before it embeds anything, so a model that cannot fill the column is refused with one line
saying what to change, never discovered chunk by chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg

from soulworker.embeddings.embedder import Embedder
from soulworker.embeddings.errors import EmbeddingConfigError
from soulworker.sql_files import query

PROBE_TEXT = "soulworker checks the embedding dimension."
"""What the live call embeds: fixed, tiny and free of anyone's data."""

_VECTOR_TYPE = re.compile(r"^(?:vector|halfvec)(?:\((\d+)\))?$")


@dataclass(frozen=True)
class EmbeddingColumn:
    """``conversation_chunks.embedding`` as the database declares it: ``type_name`` as in DDL
    (``vector(768)``) and its length, ``None`` when the type carries none."""

    type_name: str
    dimensions: int | None


async def embedding_column(conn: psycopg.AsyncConnection[Any]) -> EmbeddingColumn | None:
    """The column, or ``None`` when the table or the column is absent (no pgvector)."""
    cur = await conn.execute(query("embedding_column_type"))
    row = await cur.fetchone()
    if row is None:
        return None
    type_name = str(row["column_type"] if isinstance(row, dict) else row[0])
    match = _VECTOR_TYPE.match(type_name)
    length = int(match.group(1)) if match and match.group(1) else None
    return EmbeddingColumn(type_name=type_name, dimensions=length)


def wanted_dimensions(column: EmbeddingColumn, configured: int | None) -> int:
    """The length to request: the column's own, which ``SOULWORKER_EMBED_DIMENSIONS`` may state
    but not contradict. Raises ``EmbeddingConfigError`` saying what to change."""
    if not _VECTOR_TYPE.match(column.type_name):
        raise EmbeddingConfigError(
            "The database's embedding column cannot hold embeddings.",
            operator_line=f"conversation_chunks.embedding is {column.type_name}, not a pgvector "
            "vector: change it to vector(N) or set SOULWORKER_EMBED_PROVIDER=off",
            code="embedding_column",
        )
    if column.dimensions is None:
        if configured is None:
            raise EmbeddingConfigError(
                "The database's embedding column has no fixed length.",
                operator_line=f"conversation_chunks.embedding is {column.type_name} without a "
                "length: set SOULWORKER_EMBED_DIMENSIONS to the length the app queries with",
                code="embedding_column",
            )
        return configured
    if configured is not None and configured != column.dimensions:
        raise EmbeddingConfigError(
            "The embedding length setting does not match the database.",
            operator_line=f"SOULWORKER_EMBED_DIMENSIONS={configured} but the embedding column "
            f"is {column.type_name}: unset SOULWORKER_EMBED_DIMENSIONS (it follows the column) "
            f"or change the column to vector({configured})",
            code="embedding_column",
        )
    return column.dimensions


@dataclass(frozen=True)
class DimensionProof:
    """What the live call showed: the model produced ``dimensions`` values."""

    provider: str
    model: str
    dimensions: int
    input_tokens: int


async def prove_dimensions(embedder: Embedder) -> DimensionProof:
    """One live call; raises ``EmbeddingDimensionRefused`` (or another ``EmbeddingError``) when
    the provider cannot give exactly ``embedder.dimensions`` values."""
    before = embedder.usage.input_tokens
    (vector,) = await embedder.embed([PROBE_TEXT])
    return DimensionProof(
        provider=embedder.provider,
        model=embedder.model,
        dimensions=len(vector),
        input_tokens=embedder.usage.input_tokens - before,
    )
