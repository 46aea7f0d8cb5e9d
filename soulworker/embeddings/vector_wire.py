"""Vectors to PostgreSQL in pgvector's binary form.

pgvector's text form (``[0.1,-0.2,...]``) costs a Python process ~0.4 ms per 768-value vector to
write, and the server as much again to parse: at hundreds of chunks a second that is most of the
embed stage's CPU (docs/embeddings.md, "Throughput and cost"). The binary form is the vector's
length, a reserved zero and the values as big-endian float4, which is how pgvector stores them
anyway, so nothing is lost that the text form would keep. ``struct`` packs one in microseconds.

The ``vector`` type is an extension's, so its oid differs between databases: it is looked up on
the connection (``binary_vectors``) and the dumper registered there, along with the array type,
so a list of :class:`WireVector` travels as one binary ``vector[]`` parameter.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types import TypeInfo


class WireVector:
    """One vector, already in pgvector's binary form."""

    __slots__ = ("data",)

    def __init__(self, values: Sequence[float]) -> None:
        count = len(values)
        self.data = struct.pack(f">HH{count}f", count, 0, *values)


class VectorTypeMissing(LookupError):
    """The database has no ``vector`` type on the search path."""


class _VectorBinaryDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> Buffer:
        data: bytes = obj.data
        return data


async def binary_vectors(
    conn: psycopg.AsyncConnection[Any], info: TypeInfo | None = None
) -> TypeInfo:
    """Make ``conn`` send :class:`WireVector` (and lists of them) as binary ``vector``; returns
    the type's info so callers can pass it again for the next connection without a lookup."""
    if info is None:
        info = await TypeInfo.fetch(conn, "vector")
        if info is None:
            raise VectorTypeMissing("the database has no vector type (is pgvector installed?)")
    info.register(conn)
    dumper = type("VectorBinaryDumper", (_VectorBinaryDumper,), {"oid": info.oid})
    conn.adapters.register_dumper(WireVector, dumper)
    return info
