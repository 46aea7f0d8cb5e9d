"""Vectors written in pgvector's binary form (soulworker/embeddings/vector_wire.py) read back as
the float4 values pgvector would have stored from the text form, at any length it takes."""

from __future__ import annotations

import random
import struct
from typing import Any

import psycopg
import pytest

from soulworker.embeddings.vector_wire import WireVector, binary_vectors

pytestmark = pytest.mark.db


def as_float4(values: list[float]) -> list[float]:
    return list(struct.unpack(f"{len(values)}f", struct.pack(f"{len(values)}f", *values)))


@pytest.mark.parametrize("length", [1, 3, 768, 16_000])
async def test_binary_vectors_read_back_as_their_float4_values(
    vector_database_url: str, length: int
) -> None:
    rng = random.Random(length)
    edge = [1.0, -0.0, 1e-45, -3.4e38, 0.1]  # one, minus zero, a subnormal, near the range, 0.1
    values = (edge + [rng.gauss(0.0, 1.0) for _ in range(length)])[:length]
    conn = await psycopg.AsyncConnection.connect(vector_database_url, autocommit=True)
    try:
        info = await binary_vectors(conn)
        again = await binary_vectors(conn, info)  # a second connection's path: no lookup
        assert again is info
        cur = await conn.execute(
            "select v::text from unnest(%b::vector[]) as v",
            ([WireVector(values), WireVector(values[::-1])],),
        )
        rows: list[Any] = await cur.fetchall()
        text_form = await conn.execute(
            "select %s::vector::text", ("[" + ",".join(map(repr, values)) + "]",)
        )
        from_text = await text_form.fetchone()
    finally:
        await conn.close()
    # pgvector prints each float4 in its shortest form, so compare as float4 again.
    read = as_float4([float(v) for v in rows[0][0].strip("[]").split(",")])
    assert read == as_float4(values)
    backwards = as_float4([float(v) for v in rows[1][0].strip("[]").split(",")])
    assert backwards == as_float4(values[::-1])
    assert from_text is not None and rows[0][0] == from_text[0], "same as the text form"


async def test_a_database_without_pgvector_is_named(database_url: str) -> None:
    conn = await psycopg.AsyncConnection.connect(database_url)
    try:
        with pytest.raises(LookupError, match="pgvector"):
            await binary_vectors(conn)
    finally:
        await conn.close()
