"""Removes the citation markers ChatGPT embeds in assistant text.

Two families occur in exports:

- Private-use sequences ``\\ue200{kind}\\ue202{payload}\\ue201`` (2024+ web answers), such as
  ``\\ue200cite\\ue202turn0search3\\ue201``. Most kinds (``cite``, ``filecite``, ``navlist``,
  ``image_group`` …) render as a link or a widget, so they are removed together with the spaces
  before them. Two kinds render as words in the UI and keep those words, so the sentence stays
  whole: ``entity`` (payload ``["people","Ada Lovelace",…]`` or a bare name) keeps the name, and
  ``url`` (payload ``name\\ue202https://…``) keeps the name. The wrapper characters
  ``\\ue203``…``\\ue206`` that mark highlighted spans are dropped, the span's text stays.
- Bracketed references such as ``【12†source】`` or ``【4:0†notes.pdf】`` (2023-2024 browsing and
  file search), removed with the spaces before them.

ASCII text (the common case) costs nothing; other text one ``in`` scan per marker family.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

_PUA_START = "\ue200"
_BRACKET_START = "\u3010"

CITATION_START_BYTES = (_PUA_START.encode("utf-8"), _BRACKET_START.encode("utf-8"))
"""The UTF-8 bytes that start a marker, for callers that already hold the encoded text."""

_PUA_SEQUENCE = re.compile("\ue200([^\ue200-\ue206]{0,40})\ue202([^\ue200\ue201]*)\ue201")
"""A complete private-use marker, matched at a known start: kind, then payload."""

_PUA_CHARACTERS = tuple(chr(code) for code in range(0xE200, 0xE207))
"""Marker characters that can be left over (highlight wrappers, unterminated markers); removed
with ``in``/``replace``, which is several times faster than a regex character class here."""

_BRACKETED = re.compile("\u3010[^\u3010\u3011\n]{0,80}\u2020[^\u3010\u3011\n]{0,80}\u3011")
"""``【…†…】``: the dagger tells a citation from ordinary CJK brackets."""

_KINDS_THAT_KEEP_WORDS = frozenset({"entity", "url"})

_MAX_ENTITY_PAYLOAD_CHARS = 1000
"""Real entity payloads are a category, a name and a short note; longer ones are not decoded."""

_SPACES = " \t"


def strip_citations(text: str) -> str:
    """``text`` without citation markers; text without markers is returned unchanged.

    Markers are located with ``str.find`` and only then matched, so text pays one scan per
    marker family (none at all when it is ASCII, which cannot hold a marker).
    """
    if text.isascii():
        return text
    if _PUA_START in text:
        text = _replace_at(text, _PUA_START, _PUA_SEQUENCE, _pua_words)
        for stray in _PUA_CHARACTERS:
            if stray in text:
                text = text.replace(stray, "")
    if _BRACKET_START in text:
        text = _replace_at(text, _BRACKET_START, _BRACKETED, lambda _: "")
    return text


def _replace_at(
    text: str, start_char: str, pattern: re.Pattern[str], words: Callable[[re.Match[str]], str]
) -> str:
    """Replace each ``pattern`` match beginning at an occurrence of ``start_char`` by
    ``words(match)``; a marker replaced by nothing also takes the spaces before it."""
    pieces: list[str] = []
    position = 0
    while (start := text.find(start_char, position)) >= 0:
        match = pattern.match(text, start)
        if match is None:
            pieces.append(text[position : start + 1])
            position = start + 1
            continue
        before = text[position:start]
        replacement = words(match)
        pieces.append(before + replacement if replacement else before.rstrip(_SPACES))
        position = match.end()
    if not pieces:
        return text
    pieces.append(text[position:])
    return "".join(pieces)


def _pua_words(match: re.Match[str]) -> str:
    kind = match.group(1)
    if kind not in _KINDS_THAT_KEEP_WORDS:
        return ""
    return _visible_words(kind, match.group(2))


def _visible_words(kind: str, payload: str) -> str:
    """The words the UI shows for an ``entity`` or ``url`` marker, or ``""`` if unreadable."""
    if kind == "url":
        return payload.split("\ue202", 1)[0].strip()
    if not payload.startswith("["):
        return payload.strip()
    if len(payload) > _MAX_ENTITY_PAYLOAD_CHARS:
        return ""
    try:
        decoded = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON, or absurdly nested brackets
        return ""
    if isinstance(decoded, list):
        # ["category", "Display name", …]: the name is the second element.
        for candidate in decoded[1:2] + decoded[:1]:
            if isinstance(candidate, str) and candidate.strip():
                return candidate.strip()
    return ""
