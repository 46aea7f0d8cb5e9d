"""Numbers ijson's C parser cannot hold, rewritten as strings of their digits.

JSON puts no limit on numbers, but yajl (the C parser under ijson's fast backend) stores an
integer in 64 bits and a fraction in a double: an integer from 2^63 on, or a float beyond
~1.8e308, stops the whole parse with an "overflow" error. A valid export must not be refused
for one such number. Nothing the import uses can be such a number (times are ~10 digits, ids
are strings), so the reader, when the parser reports an overflow, reads that stream again
through ``NumberQuoter``, which turns exactly the numbers that would overflow into JSON strings
of the same characters: ``9223372036854775808`` is read as ``"9223372036854775808"``, which is
what ``str()`` of the integer would give. A time that is such a number was out of range anyway
and stays unusable; an id keeps its digits.

The quoter is an exact streaming tokenizer (strings and their escapes included, across any
buffer boundary) in Python: ~30 MB/s, paid only by the rare stream that needs it. A number
longer than ``MAX_NUMBER_CHARS`` is quoted whatever its value, so its digits are never held in
memory at once.
"""

from __future__ import annotations

import math
import re
from typing import Protocol

MAX_NUMBER_CHARS = 64 * 1024
"""A number token longer than this is quoted as it streams, without being held or converted."""

INT64_MAX = 2**63 - 1
INT64_DIGITS = 19
SAFE_INTEGER_CHARS = 18
"""Integers of up to 18 digits always fit in 64 bits: no need to look at their value."""

_OUTSIDE = re.compile(rb'["\-0-9]')  # what starts a string or a number between tokens
_NUMBER = re.compile(rb"[0-9+\-.eE]*")  # the rest of a number token, loosely
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*')  # up to an unescaped quote or a last "\"
_JSON_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+\-]?[0-9]+)?")
_QUOTE = b'"'


def overflows(token: bytes) -> bool:
    """Whether yajl would refuse the number ``token`` (a well-formed JSON number) as too big.

    Malformed tokens are never quoted: the parser reports them as the damage they are.
    """
    if len(token) > MAX_NUMBER_CHARS:
        return True
    is_float = b"." in token or b"e" in token or b"E" in token
    if not is_float and len(token) <= SAFE_INTEGER_CHARS:
        return False
    if _JSON_NUMBER.fullmatch(token) is None:
        return False
    if is_float:
        return math.isinf(float(token))  # the same correctly rounded conversion as strtod
    digits = len(token) - token.startswith(b"-")
    if digits > INT64_DIGITS:  # no leading zeros in JSON: certainly out of range (and int()
        return True  # of over 4,300 digits is refused by Python itself)
    return abs(int(token)) > INT64_MAX  # yajl negates the magnitude: -2^63 overflows too


class NumberQuoter:
    """Streams JSON text through, quoting the numbers that ``overflows``; see the module doc.

    ``feed`` returns what can be passed on so far (a number at the end of a buffer is held
    until its end is seen); ``finish`` returns what is still held. ``quoted`` counts the numbers
    rewritten.
    """

    def __init__(self) -> None:
        self.quoted = 0
        self._in_string = False
        self._escaped = False  # inside a string, the last byte seen was an unpaired backslash
        self._number = b""  # a number token whose end has not been seen yet
        self._streaming = False  # that token is past MAX_NUMBER_CHARS: already opened as a string

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        size = len(data)
        position = emitted = 0
        if self._number or self._streaming:
            end = _NUMBER.match(data).end()  # type: ignore[union-attr]
            if end == size:
                return self._continue_number(data)
            out.append(self._end_number(data[:end]))
            position = emitted = end
        elif self._escaped and size:
            self._escaped = False
            position = 1
        while position < size:
            if self._in_string:
                end = _STRING_BODY.match(data, position).end()  # type: ignore[union-attr]
                if end == size:
                    break
                if data[end] == 0x22:  # the closing quote
                    self._in_string = False
                    position = end + 1
                else:  # a backslash as the buffer's last byte: it escapes the next buffer's first
                    self._escaped = True
                    break
                continue
            found = _OUTSIDE.search(data, position)
            if found is None:
                break
            start = found.start()
            if data[start] == 0x22:
                self._in_string = True
                position = start + 1
                continue
            end = _NUMBER.match(data, start + 1).end()  # type: ignore[union-attr]
            if end == size:  # the number may go on in the next buffer
                out.append(data[emitted:start])
                out.append(self._continue_number(data[start:]))
                return b"".join(out)
            token = data[start:end]
            if overflows(token):
                out.append(data[emitted:start])
                out.append(_QUOTE + token + _QUOTE)
                self.quoted += 1
                emitted = end
            position = end
        out.append(data[emitted:])
        return b"".join(out)

    def finish(self) -> bytes:
        """What is still held at the end of the stream (a number that ended the text)."""
        if self._number or self._streaming:
            return self._end_number(b"")
        return b""

    def _continue_number(self, part: bytes) -> bytes:
        if self._streaming:
            return part
        self._number += part
        if len(self._number) <= MAX_NUMBER_CHARS:
            return b""
        held, self._number = self._number, b""
        self._streaming = True
        self.quoted += 1
        return _QUOTE + held

    def _end_number(self, last: bytes) -> bytes:
        if self._streaming:
            self._streaming = False
            return last + _QUOTE
        token, self._number = self._number + last, b""
        if overflows(token):
            self.quoted += 1
            return _QUOTE + token + _QUOTE
        return token


class Readable(Protocol):
    """What ``QuotingStream`` reads from."""

    def read(self, size: int = -1, /) -> bytes: ...


class QuotingStream:
    """A file-like view of ``stream`` (anything with ``read``) with ``NumberQuoter`` applied."""

    def __init__(self, stream: Readable) -> None:
        self.stream = stream
        self.quoter = NumberQuoter()
        self._done = False

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson asks for nothing first, to learn the stream's type
            return b""
        while not self._done:
            data = self.stream.read(size)
            if not data:
                self._done = True
                return self.quoter.finish()
            out = self.quoter.feed(data)
            if out:
                return out
        return b""
