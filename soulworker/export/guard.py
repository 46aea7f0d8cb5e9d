"""Refuses hostile JSON structure on the byte stream, before ijson parses it.

Why this exists (measured on ijson 3.6 / yajl2_c, see the reader's report): ijson's ``parse``
layer, under ``items``, keeps one path string per open level ("item.item.item…", or the keys
joined with dots), so its memory grows with the *square* of the nesting. 20 KB of ``[`` costs
969 MB of RSS, 20 KB of ``{"a":`` 446 MB; and because keys are part of the path, 60 levels under
100 KB keys cost 354 MB from a 6 MB file. yajl's own ``basic_parse`` stays linear, and yajl has
no depth limit, so nothing inside ijson can stop it. ijson also parses a whole read buffer in
one call, so the check has to happen on the bytes before they are handed over.

What is refused:

- nesting deeper than ``max_depth`` containers (the top-level array counts as level 1);
- an object key longer than ``max_key_bytes`` (its escape-processed length, an upper bound of
  its decoded length).

Together they bound the parser's path strings to about ``max_key_bytes * max_depth**2 / 2``
bytes (8 MB for the defaults; measured: a process peaks at 31 MB on that worst case against
22 MB on a normal 5 MB export) whatever the input, and the depth bound keeps every item safe for
recursive code downstream (far below Python's recursion limit).

How, per chunk, exactly and without a per-byte Python loop:

1. Escapes: ``\\\\`` and ``\\"`` are replaced by one filler byte (``re.sub``), so every ``"``
   left is a real string delimiter. An odd backslash at the end of a chunk escapes the next chunk's
   first byte (carried over).
2. Long keys: any key of ``max_key_bytes`` or more leaves a quote-free run at least that long;
   windows of half that size are probed with ``bytes.find`` (memchr), and a quote-free run is
   refused when the quote that ends it is followed by ``:`` (a key). Runs across chunk
   boundaries are carried over.
3. Structure: ``bytes.translate`` keeps only ``"[]{}``; adjacent ``""`` (a string without
   brackets, or a close and an open quote) and ``[]`` / ``{}`` pairs are removed repeatedly (each
   removal keeps every other character's in-string state and depth). What remains is short;
   walking it gives the exact depth and string state at the chunk's end, and the peak depth
   within the chunk to within ``2 * rounds`` (each round removes at most two levels of a
   removed group). Only a chunk whose bound exceeds the limit is scanned byte by byte, from the
   exact state, to find the first offending byte; the parser is given the bytes before it.

Nothing here trusts the input to be valid JSON: invalid input only makes yajl stop earlier,
and the bound stays an upper bound for every valid prefix, which is all the parser can build.
One approximation: a run of 1 KiB of whitespace or digits followed by a string that starts with
``:`` is taken for a long key (no real export has either).

Cost: ~1.5-2 ms per MB of JSON (escape pass, ``translate``, pair removal, key probes), about a
quarter of ijson's own time. Every sound alternative looks at every byte too (a cheaper test on
some buffers cannot bound what the others do, and in-string brackets make raw bracket counts
meaningless), and CPython has no faster per-byte primitive than ``translate`` except
``memchr``. So for large exports the reader runs this guard in a helper process ahead of the
parser (``scan``), which takes it off the parse thread.
"""

from __future__ import annotations

import re

DEFAULT_MAX_DEPTH = 128
"""Twice the deepest nesting real exports reach (docs/export-format.md: under 64); far below
Python's recursion limit for recursive consumers, and 128 levels of short path strings cost
~40 KB."""

DEFAULT_MAX_KEY_BYTES = 1024
"""Real export keys are names and node ids (under 100 bytes). With 1 KiB keys at every one of
128 levels, the worst a file within both limits can do, the parser's peak grows by ~15 MB."""

_ESCAPE_PAIRS = re.compile(rb'\\[\\"]')
"""An escaped backslash or quote: the only escapes that change where strings end."""

_NON_STRUCTURAL = bytes(b for b in range(256) if b not in b'"[]{}')
"""``translate`` deletes these: what is left decides depth and string state."""

_EXACT_TOKENS = re.compile(rb'[\[\]{}"\\]')
"""The bytes the exact (slow) scan has to look at."""

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPENS = frozenset(b"[{")
_CLOSES = frozenset(b"]}")
_COLON = ord(":")
_NON_WHITESPACE = re.compile(rb"[^ \t\r\n]")
"""JSON whitespace is these four bytes; anything else after a string decides what it was."""


class Refusal:
    """Where and why the stream must stop: bytes before ``index`` of the chunk may be parsed.

    ``kind`` is ``"depth"`` or ``"key"``; ``reason`` completes "its JSON is …" for the user.
    (A plain class: the helper process imports this module and starts faster without
    ``dataclasses``.)
    """

    __slots__ = ("index", "kind", "reason")

    def __init__(self, index: int, kind: str, reason: str) -> None:
        self.index = index
        self.kind = kind
        self.reason = reason

    def __repr__(self) -> str:
        return f"Refusal(index={self.index}, kind={self.kind!r})"


def depth_refusal(index: int, max_depth: int) -> Refusal:
    """The refusal for nesting deeper than ``max_depth``."""
    return Refusal(index, "depth", f"nested more than {max_depth} levels deep")


def key_refusal(index: int, max_key_bytes: int) -> Refusal:
    """The refusal for an object key longer than ``max_key_bytes``."""
    return Refusal(index, "key", f"using an object key longer than {max_key_bytes:,} bytes")


class StructureGuard:
    """Tracks the JSON structure of one stream fed in consecutive chunks; see module docstring.

    ``check(chunk)`` returns ``None`` when the whole chunk may be parsed, else a ``Refusal``.
    After a refusal the guard refuses everything (the stream is dead).
    """

    __slots__ = (
        "_await_colon",
        "_depth",
        "_escape_pending",
        "_in_string",
        "_refused",
        "_tail_run",
        "max_depth",
        "max_key_bytes",
    )

    def __init__(
        self, max_depth: int = DEFAULT_MAX_DEPTH, max_key_bytes: int = DEFAULT_MAX_KEY_BYTES
    ) -> None:
        if max_depth < 1 or max_key_bytes < 2:
            raise ValueError("max_depth must be >= 1 and max_key_bytes >= 2")
        self.max_depth = max_depth
        self.max_key_bytes = max_key_bytes
        self._depth = 0
        self._in_string = False
        self._escape_pending = False
        self._tail_run = 0  # length of the quote-free run the previous chunk ended with
        self._await_colon = False  # a long string ended in whitespace at the end of a chunk
        self._refused: Refusal | None = None

    @property
    def depth(self) -> int:
        """Nesting depth after the bytes checked so far (0 outside the top-level value)."""
        return self._depth

    def check(self, chunk: bytes) -> Refusal | None:
        """Checks the next chunk of the stream; see the class docstring."""
        if self._refused is not None:
            return Refusal(0, self._refused.kind, self._refused.reason)
        if not chunk:
            return None
        shift = 1 if self._escape_pending else 0
        data = chunk[shift:]
        pending = False
        if b"\\" in data:
            data = _ESCAPE_PAIRS.sub(b"_", data)
            pending = data.endswith(b"\\")
        key_end = self._long_key(data)
        if key_end >= 0:
            # Escape processing only shortens, so this is at or before the key's closing
            # quote in the raw chunk: the parser never completes the key. A depth violation
            # before it is reported first.
            cut = key_end + shift
            return self._exact(chunk[:cut]) or self._refuse(key_refusal(cut, self.max_key_bytes))

        reduced = data.translate(None, _NON_STRUCTURAL)
        if self._in_string:
            reduced = b'"' + reduced
        reduced = reduced.replace(b'""', b"")
        rounds = 0
        while reduced:
            size = len(reduced)
            reduced = reduced.replace(b"[]", b"").replace(b"{}", b"").replace(b'""', b"")
            if len(reduced) == size:
                break
            rounds += 1
        end, peak, in_string = _profile(reduced)
        if self._depth + peak + 2 * rounds > self.max_depth:
            return self._exact(chunk)
        self._depth = max(self._depth + end, 0)
        self._in_string = in_string
        self._escape_pending = pending
        return None

    def _refuse(self, refusal: Refusal) -> Refusal:
        self._refused = refusal
        return refusal

    def _exact(self, chunk: bytes) -> Refusal | None:
        """Byte-exact scan of ``chunk`` from the current state (only for suspicious chunks)."""
        depth = self._depth
        in_string = self._in_string
        skip = 0 if self._escape_pending else -1
        limit = self.max_depth
        for match in _EXACT_TOKENS.finditer(chunk):
            index = match.start()
            if index == skip:
                continue
            byte = chunk[index]
            if in_string:
                if byte == _BACKSLASH:
                    skip = index + 1
                elif byte == _QUOTE:
                    in_string = False
            elif byte == _QUOTE:
                in_string = True
            elif byte in _OPENS:
                depth += 1
                if depth > limit:
                    return self._refuse(depth_refusal(index, limit))
            elif byte in _CLOSES:
                depth = max(depth - 1, 0)
        self._depth = depth
        self._in_string = in_string
        self._escape_pending = skip == len(chunk)
        return None

    def _long_key(self, data: bytes) -> int:
        """Where in ``data`` (escape-processed: every quote is real) a key longer than the
        limit ends (its closing quote, or 0 when that quote was in an earlier chunk), or -1."""
        limit = self.max_key_bytes
        size = len(data)
        if self._await_colon:
            significant = _NON_WHITESPACE.search(data)
            if significant is not None:
                self._await_colon = False
                if data[significant.start()] == _COLON:
                    return 0
        first = data.find(b'"')
        if first < 0:
            self._tail_run += size
            return -1
        if self._tail_run + first >= limit and self._colon_follows(data, first + 1):
            return first
        window = limit // 2
        probe = first + 1
        while probe + window <= size:
            if data.find(b'"', probe, probe + window) >= 0:
                probe += window
                continue
            start = data.rfind(b'"', 0, probe) + 1
            end = data.find(b'"', probe + window)
            if end < 0:
                break
            if end - start >= limit and self._colon_follows(data, end + 1):
                return end
            probe = end + 1
        self._tail_run = size - (data.rfind(b'"') + 1)
        return -1

    def _colon_follows(self, data: bytes, index: int) -> bool:
        """Whether the first significant byte from ``index`` on is ``:`` (a key); when only
        whitespace is left in ``data``, the next chunk decides."""
        significant = _NON_WHITESPACE.search(data, index)
        if significant is None:
            self._await_colon = True
            return False
        return data[significant.start()] == _COLON


def _profile(reduced: bytes) -> tuple[int, int, bool]:
    """Depth change, peak depth (relative, >= 0) and final string state of a reduced chunk.

    ``reduced`` holds only ``"[]{}``, starts outside a string, and has no adjacent removable
    pairs left, so it is short for real data.
    """
    if b'"' not in reduced:
        rest = reduced.lstrip(b"]}")
        closes = len(reduced) - len(rest)
        if not rest.strip(b"[{"):
            opens = len(rest)
            return opens - closes, max(0, opens - closes), False
        depth, peak = _walk_brackets(reduced, 0, 0)
        return depth, peak, False
    depth = peak = 0
    parts = reduced.split(b'"')
    for index in range(0, len(parts), 2):  # even parts are outside strings
        depth, peak = _walk_brackets(parts[index], depth, peak)
    return depth, peak, len(parts) % 2 == 0


def _walk_brackets(brackets: bytes, depth: int, peak: int) -> tuple[int, int]:
    """Runs ``depth`` through a string of brackets; returns the new depth and peak."""
    rest = brackets.lstrip(b"]}")
    if not rest.strip(b"[{"):  # the usual shape: closes, then opens
        depth += len(rest) - (len(brackets) - len(rest))
        return depth, max(peak, depth)
    for byte in brackets:
        depth += 1 if byte in _OPENS else -1
        peak = max(peak, depth)
    return depth, peak
