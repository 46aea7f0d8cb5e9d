"""The structure guard against a byte-by-byte reference, under arbitrary chunking."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soulworker.export.guard import StructureGuard

_ALPHABET = ["a", '"', "\\", "[", "]", "{", "}", ":", ",", " ", "é", "\n", "😀", "\u2028"]


def reference_refusal(data: bytes, max_depth: int) -> int | None:
    """Index of the first byte that opens level ``max_depth + 1``, by a plain state machine."""
    depth = 0
    in_string = escaped = False
    for index, byte in enumerate(data):
        char = chr(byte)
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return index
        elif char in "]}":
            depth -= 1
    return None


def feed(guard: StructureGuard, data: bytes, sizes: list[int]) -> int | None:
    """Feeds ``data`` in chunks of the given sizes (cycled); returns the refusal's offset."""
    position = 0
    turn = 0
    while position < len(data):
        size = sizes[turn % len(sizes)]
        turn += 1
        chunk = data[position : position + size]
        refusal = guard.check(chunk)
        if refusal is not None:
            return position + refusal.index
        position += len(chunk)
    return None


def random_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth > 0 and roll < 0.35:
        return [random_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    if depth > 0 and roll < 0.7:
        return {random_text(rng): random_value(rng, depth - 1) for _ in range(rng.randint(0, 3))}
    return rng.choice([random_text(rng), 1, None, True, -2.5e3])


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 10)))


@pytest.mark.parametrize("seed", range(6))
def test_refuses_exactly_where_the_reference_does_under_any_chunking(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        value = [random_value(rng, rng.randint(1, 10))]
        data = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        limit = rng.randint(1, 9)
        sizes = [rng.randint(1, 48) for _ in range(5)]
        guard = StructureGuard(max_depth=limit, max_key_bytes=10**9)
        assert feed(guard, data, sizes) == reference_refusal(data, limit), (data, limit, sizes)


@settings(max_examples=150, deadline=None)
@given(
    value=st.recursive(
        st.none() | st.integers() | st.text(alphabet='ab"\\[]{}:,é'),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(alphabet='ab"\\[]{}', max_size=5), children, max_size=3)
        ),
        max_leaves=30,
    ),
    limit=st.integers(1, 8),
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=4),
)
def test_hypothesis_agrees_with_the_reference(value: Any, limit: int, sizes: list[int]) -> None:
    data = json.dumps([value]).encode()
    guard = StructureGuard(max_depth=limit, max_key_bytes=10**9)
    assert feed(guard, data, sizes) == reference_refusal(data, limit)


def test_tracks_depth_back_to_zero_after_a_valid_document() -> None:
    guard = StructureGuard(max_depth=5)
    data = json.dumps([{"a": [1, {"b": "x]]]}}}"}]}, 'q\\"[[[']).encode()
    assert feed(guard, data, [3]) is None
    assert guard.depth == 0


def test_an_escaped_quote_split_across_chunks_keeps_the_string_open() -> None:
    # '"\' | '"[[[[' : the quote after the split backslash is escaped, the brackets are text.
    guard = StructureGuard(max_depth=2)
    assert guard.check(b'["a\\') is None
    assert guard.check(b'"[[[[[[[[[[[[[[[[", 1]') is None
    assert guard.depth == 0


def test_an_escaped_backslash_before_a_quote_ends_the_string() -> None:
    guard = StructureGuard(max_depth=2)
    refusal = feed(guard, b'["a\\\\", [[[1]]]]', [1])
    assert refusal == b'["a\\\\", [[[1]]]]'.index(b"[[[") + 1


def test_once_refused_every_later_chunk_is_refused_from_its_start() -> None:
    guard = StructureGuard(max_depth=1)
    first = guard.check(b"[[")
    assert first is not None
    assert first.index == 1
    assert first.kind == "depth"
    later = guard.check(b"]]")
    assert later is not None
    assert later.index == 0


def test_unbalanced_or_mismatched_input_never_raises() -> None:
    guard = StructureGuard(max_depth=3)
    for chunk in (b"]]]}}}", b"[}{]", b'"\\', b"\\\\\\", b'}"]]"{'):
        guard.check(chunk)
    assert guard.depth >= 0


def test_rejects_nonsensical_limits() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        StructureGuard(max_depth=0)


# -- long keys ------------------------------------------------------------------------------


def test_a_key_longer_than_the_limit_is_refused_before_its_closing_quote() -> None:
    key = "k" * 100
    data = json.dumps([{"ok": 1, key: {"x": 1}}]).encode()
    closing = data.index(key.encode()) + len(key)  # index of the key's closing quote
    for sizes in ([7], [64], [len(data)], [1, 500]):
        refusal_at = feed(StructureGuard(max_depth=10, max_key_bytes=50), data, sizes)
        assert refusal_at is not None
        assert refusal_at <= closing, sizes
        assert refusal_at >= data.index(key.encode()) - 1 or sizes == [1, 500]


def test_a_long_string_value_is_not_a_key() -> None:
    data = json.dumps([{"text": "v" * 5000, "list": ["w" * 3000]}]).encode()
    for sizes in ([13], [4096], [len(data)]):
        assert feed(StructureGuard(max_depth=10, max_key_bytes=50), data, sizes) is None


def test_escaped_quotes_inside_a_long_key_do_not_hide_it() -> None:
    key = 'a\\"b' * 40  # 160 characters with escaped quotes every 4
    data = b'[{"' + key.encode() + b'": 1}]'
    assert feed(StructureGuard(max_depth=10, max_key_bytes=100), data, [9]) is not None


def test_a_key_whose_colon_arrives_in_the_next_chunk_is_refused_there() -> None:
    guard = StructureGuard(max_depth=10, max_key_bytes=50)
    assert guard.check(b'[{"' + b"k" * 80 + b'"' + b" " * 100) is None
    refusal = guard.check(b"  : 1}]")
    assert refusal is not None
    assert refusal.index == 0
    assert refusal.kind == "key"


def test_a_depth_violation_before_a_long_key_in_the_same_chunk_is_reported_first() -> None:
    data = b"[[[[" + b'{"' + b"k" * 80 + b'": 1}]]]]'
    refusal = StructureGuard(max_depth=2, max_key_bytes=50).check(data)
    assert refusal is not None
    assert refusal.kind == "depth"
    assert refusal.index == 2
