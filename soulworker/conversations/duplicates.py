"""Which copy of a conversation wins when an export holds the same id more than once.

Re-exports and shards repeat conversations. The rule (docs/pipeline.md): the newest ``update_time``
wins; a tie goes to the larger mapping, then to the one read later. Decisions are made while
streaming, so each conversation is remembered by a small record (never its content).

Memory stays flat whatever the number of conversations (see docs/hostile-uploads.md):

* a conversation is known by a 16-byte digest of its id, never the id itself, so an id of any
  length costs the same (two ids collide with probability ~2^-128: never in practice);
* records are kept in a dict until they would take ``memory_bytes``; from then on they all
  move to a SQLite file on the job's private disk (``spill_path``), with a bounded page cache.
  New records are gathered in a bounded buffer and written in key order, and a fixed-size
  Bloom filter answers "never seen" (almost every lookup) without touching the disk. Real
  exports (a few thousand to tens of thousands of conversations) never spill; an export of a
  million tiny conversations costs a few µs a conversation more from that point.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

DEFAULT_MEMORY_BYTES = 8 * 1024 * 1024
"""Records held in memory before they move to disk: ~40,000 conversations, more than real
exports hold, for a few MB of the job's memory budget."""

RECORD_BYTES = 240
"""What one record costs in the dict (digest key, tuple, floats and ints), measured."""

PAIR_BYTES = 120
"""What each (content type, count) pair of a record costs besides its name."""

SQLITE_CACHE_KIB = 4096
"""The spilled registry's page cache: lookups of recent ids stay in memory, the rest is disk."""

WRITE_BUFFER_RECORDS = 16_384
"""Records gathered before they are written to disk together (~4 MB): sorted batches keep the
B-tree's pages hot."""

BLOOM_BITS_LOG2 = 25
"""The Bloom filter has 2^25 bits (4 MiB) and 4 probes: under 1 % false positives up to ~3M
conversations. Past that, lookups of new ids reach the disk more often: slower, never wrong."""

_BLOOM_MASK = (1 << BLOOM_BITS_LOG2) - 1

_DIGEST_BYTES = 16

_SCHEMA = """
create table seen (
    key blob primary key,
    update_time real not null,
    mapping_size integer not null,
    first_chunk integer not null,
    end_chunk integer not null,
    message_count integer not null,
    truncated_messages integer not null,
    unknown_content_types text
) without rowid
"""


@dataclass(slots=True)
class SeenConversation:
    """What is remembered of the copy currently kept: enough to undo it if a better one comes."""

    update_time: float
    mapping_size: int
    chunk_indexes: range
    message_count: int
    # What the copy added to the job's counts besides its messages, so a replacement can take
    # it back out. Almost always 0 and the shared empty tuple: no per-conversation cost.
    truncated_messages: int = 0
    unknown_content_types: tuple[tuple[str, int], ...] = ()


class Verdict(Enum):
    NEW = "new"  # first time this id is seen: keep it
    REPLACES = "replaces"  # a better copy of one already kept: keep it, undo the old one
    STALE = "stale"  # an older (or equal and smaller) copy: skip it


def _when(update_time: float | None) -> float:
    return update_time if update_time is not None and math.isfinite(update_time) else -math.inf


def conversation_key(conversation_id: str) -> bytes:
    """The fixed-size key a conversation id is remembered by."""
    data = conversation_id.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=_DIGEST_BYTES).digest()


_Record = tuple[float, int, int, int, int, int, tuple[tuple[str, int], ...]]


class DuplicateResolver:
    """See the module docstring. ``close`` removes the spill file (if one was made)."""

    def __init__(self, *, spill_path: Path | None = None, memory_bytes: int | None = None) -> None:
        self.duplicates = 0
        self.spill_path = spill_path
        self.memory_bytes = DEFAULT_MEMORY_BYTES if memory_bytes is None else memory_bytes
        self._memory: dict[bytes, _Record] = {}
        self._memory_cost = 0
        self._disk: sqlite3.Connection | None = None
        self._bloom = bytearray()
        self._count = 0
        # The last id judged, its key, and whether it was seen: keep() follows judge().
        self._judged: tuple[str, bytes, bool] | None = None

    @property
    def spilled(self) -> bool:
        """Whether the records live on disk now."""
        return self._disk is not None

    def judge(
        self, conversation_id: str, update_time: float | None, mapping_size: int
    ) -> tuple[Verdict, SeenConversation | None]:
        """Decide about a newly read copy; for REPLACES also return the copy it replaces."""
        key = conversation_key(conversation_id)
        previous = self._get(key)
        self._judged = (conversation_id, key, previous is not None)
        if previous is None:
            return Verdict.NEW, None
        self.duplicates += 1
        candidate = (_when(update_time), mapping_size)
        kept = (previous.update_time, previous.mapping_size)
        # ">=" gives ties to the copy read later, as the contract says.
        if candidate >= kept:
            return Verdict.REPLACES, previous
        return Verdict.STALE, None

    def keep(
        self,
        conversation_id: str,
        update_time: float | None,
        mapping_size: int,
        chunk_indexes: range,
        message_count: int,
        *,
        truncated_messages: int = 0,
        unknown_content_types: tuple[tuple[str, int], ...] = (),
    ) -> None:
        judged, self._judged = self._judged, None
        if judged is not None and judged[0] == conversation_id:
            _, key, seen = judged
        else:
            key = conversation_key(conversation_id)
            seen = self._get(key) is not None
        record: _Record = (
            _when(update_time),
            mapping_size,
            chunk_indexes.start,
            chunk_indexes.stop,
            message_count,
            truncated_messages,
            unknown_content_types,
        )
        self._count += not seen
        replaced = self._memory.get(key)
        if replaced is not None:
            self._memory_cost -= _cost(replaced)
        self._memory[key] = record
        self._memory_cost += _cost(record)
        if self._disk is not None:
            self._remember(key)
            if len(self._memory) >= WRITE_BUFFER_RECORDS:
                self._write_buffer()
        elif self._memory_cost > self.memory_bytes and self.spill_path is not None:
            self._spill()

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        """Forget everything; the spill file is removed."""
        self._memory.clear()
        if self._disk is not None:
            self._disk.close()
            self._disk = None
        if self.spill_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.spill_path.unlink()

    # -- storage ---------------------------------------------------------------------------------

    def _get(self, key: bytes) -> SeenConversation | None:
        record = self._memory.get(key)
        if record is None and self._disk is not None and self._may_know(key):
            row = self._disk.execute(
                "select update_time, mapping_size, first_chunk, end_chunk, message_count, "
                "truncated_messages, unknown_content_types from seen where key = ?",
                (key,),
            ).fetchone()
            record = None if row is None else (*row[:6], _decode_pairs(row[6]))
        if record is None:
            return None
        update_time, mapping_size, first, end, messages, truncated, unknown = record
        return SeenConversation(
            update_time, mapping_size, range(first, end), messages, truncated, unknown
        )

    def _spill(self) -> None:
        assert self.spill_path is not None
        # Created private before SQLite opens it: conversation ids are personal data.
        fd = os.open(self.spill_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        disk = sqlite3.connect(self.spill_path, isolation_level=None, check_same_thread=False)
        # A scratch file for one pass: no journal, no syncing, nothing to recover.
        disk.execute("pragma journal_mode = off")
        disk.execute("pragma synchronous = off")
        disk.execute("pragma locking_mode = exclusive")
        disk.execute(f"pragma cache_size = -{SQLITE_CACHE_KIB}")
        disk.execute(_SCHEMA)
        disk.execute("begin")
        self._disk = disk
        self._bloom = bytearray(1 << (BLOOM_BITS_LOG2 - 3))
        for key in self._memory:
            self._remember(key)
        self._write_buffer()

    def _write_buffer(self) -> None:
        """Write the records gathered in memory to disk, in key order, and forget them."""
        assert self._disk is not None
        self._disk.executemany(
            "insert or replace into seen values (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (key, *record[:6], _encode_pairs(record[6]))
                for key, record in sorted(self._memory.items())
            ),
        )
        self._memory.clear()
        self._memory_cost = 0

    def _remember(self, key: bytes) -> None:
        bloom = self._bloom
        bits = int.from_bytes(key, "little")  # the digest is uniformly random: four slices
        for _ in range(4):
            probe = bits & _BLOOM_MASK
            bloom[probe >> 3] |= 1 << (probe & 7)
            bits >>= BLOOM_BITS_LOG2

    def _may_know(self, key: bytes) -> bool:
        bloom = self._bloom
        bits = int.from_bytes(key, "little")
        for _ in range(4):
            probe = bits & _BLOOM_MASK
            if not bloom[probe >> 3] & (1 << (probe & 7)):
                return False
            bits >>= BLOOM_BITS_LOG2
        return True


def _cost(record: _Record) -> int:
    pairs = record[6]
    if not pairs:
        return RECORD_BYTES
    return RECORD_BYTES + sum(PAIR_BYTES + len(name) for name, _ in pairs)


def _encode_pairs(pairs: tuple[tuple[str, int], ...]) -> str | None:
    return json.dumps(pairs) if pairs else None


def _decode_pairs(text: str | None) -> tuple[tuple[str, int], ...]:
    if not text:
        return ()
    return tuple((str(name), int(count)) for name, count in json.loads(text))
