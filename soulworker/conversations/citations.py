"""Removes the citation, highlight and entity markers ChatGPT embeds in message text.

Exports carry these (docs/export-format.md, "Markers"):

- Private-use sequences ``\\ue200{kind}\\ue202{payload}\\ue201`` (2024+ web answers), such as
  ``\\ue200cite\\ue202turn0search3\\ue201``. Most kinds (``cite``, ``filecite``, ``navlist``,
  ``image_group`` …) render as a link or a widget, so they are removed together with the spaces
  before them. Two kinds render as words in the UI and keep those words, so the sentence stays
  whole: ``entity`` (payload ``["people","Ada Lovelace",…]`` or a bare name) keeps the name, and
  ``url`` (payload ``name\\ue202https://…``) keeps the name.
- The same opened but never closed (an answer cut off mid-marker): the opening, the kind and
  the payload up to the next space (``turn0search3``, or a reference cut short) are removed.
- Highlight spans ``\\ue203…\\ue204`` (the words a citation covers) and the ``\\ue206`` after
  them: the characters go, the words stay. They occur whether or not the same message has a
  citation, so every message is cleaned, not only those with one.
- Bare references ``\\ue202turn0search3`` outside any sequence: removed with the spaces before.
- Bracketed references such as ``【12†source】`` or ``【4:0†notes.pdf】`` (2023-2024 browsing and
  file search), removed with the spaces before them.

Any marker character left after that (U+E200 to U+E206: unbalanced, nested, or unknown use) is
removed on its own, so none ever reaches stored text. Every pattern here is matched at a known
start and cannot backtrack over more than its own bounded span: the cost is linear in the text.

ASCII text (the common case) costs nothing; other text one ``in`` scan per marker family.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

_PUA_START = "\ue200"
_SEPARATOR = "\ue202"
_BRACKET_START = "\u3010"

MARKER_CHARACTERS = tuple(chr(code) for code in range(0xE200, 0xE207))
"""Every private-use character ChatGPT uses as markup (U+E200 to U+E206)."""

MARKER_PREFIX_BYTES = "\ue200".encode()[:2]
"""The UTF-8 lead bytes shared by every marker character (U+E200 to U+E23F), so callers that
already hold the encoded text can tell in one scan whether any marker may be present."""

BRACKET_START_BYTES = _BRACKET_START.encode("utf-8")
"""The UTF-8 bytes of ``【``, which starts a bracketed reference."""

_REFERENCE = r"turn\d{1,6}[a-z_]{1,40}\d{1,6}"
"""A reference token such as ``turn0search3`` or ``turn2news12``."""

_PUA_SEQUENCE = re.compile("\ue200([^\ue200-\ue206]{0,40})\ue202([^\ue200\ue201]*)\ue201")
"""A complete private-use marker, matched at a known start: kind, then payload."""

_PUA_UNCLOSED = re.compile("\ue200[^\ue200-\ue206\\s]{0,40}\ue202[^\ue200\ue201\\s]*")
"""An opening that is never closed (an answer cut off mid-marker): the kind and the payload up
to the next space, as far as the payload of a reference marker can reach."""

_BARE_REFERENCE = re.compile(f"\ue202{_REFERENCE}")
"""A reference token after a lone separator, outside any sequence."""

_BRACKETED = re.compile("\u3010[^\u3010\u3011\n]{0,80}\u2020[^\u3010\u3011\n]{0,80}\u3011")
"""``【…†…】``: the dagger tells a citation from ordinary CJK brackets."""

_KINDS_THAT_KEEP_WORDS = frozenset({"entity", "url"})

_MAX_ENTITY_PAYLOAD_CHARS = 1000
"""Real entity payloads are a category, a name and a short note; longer ones are not decoded."""

_SPACES = " \t"


def has_markers(text: str) -> bool:
    """Whether ``text`` holds anything ``strip_citations`` would change."""
    if text.isascii():
        return False
    return _BRACKET_START in text or any(char in text for char in MARKER_CHARACTERS)


def strip_citations(text: str) -> str:
    """``text`` without markers (see the module docstring); text without any is returned as is.

    Markers are located with ``str.find`` and only then matched, so text pays one scan per
    marker family (none at all when it is ASCII, which cannot hold a marker).
    """
    if text.isascii():
        return text
    if _PUA_START in text:
        text = _replace_at(text, _PUA_START, _pua_marker)
    if _SEPARATOR in text:
        text = _replace_at(text, _SEPARATOR, _bare_reference)
    for stray in MARKER_CHARACTERS:
        if stray in text:
            text = text.replace(stray, "")
    if _BRACKET_START in text:
        text = _replace_at(text, _BRACKET_START, _bracketed)
    return text


_Replacer = Callable[[str, int], "tuple[int, str] | None"]
"""Given the text and a marker's start, ``(end, words)`` for a recognised marker, or ``None``."""


def _replace_at(text: str, start_char: str, replacer: _Replacer) -> str:
    """Replace each marker that ``replacer`` recognises at an occurrence of ``start_char``; a
    marker replaced by nothing also takes the spaces before it."""
    pieces: list[str] = []
    position = 0
    while (start := text.find(start_char, position)) >= 0:
        found = replacer(text, start)
        if found is None:
            pieces.append(text[position : start + 1])
            position = start + 1
            continue
        end, replacement = found
        before = text[position:start]
        pieces.append(before + replacement if replacement else before.rstrip(_SPACES))
        position = end
    if not pieces:
        return text
    pieces.append(text[position:])
    return "".join(pieces)


def _pua_marker(text: str, start: int) -> tuple[int, str] | None:
    match = _PUA_SEQUENCE.match(text, start)
    if match is not None:
        kind = match.group(1)
        words = _visible_words(kind, match.group(2)) if kind in _KINDS_THAT_KEEP_WORDS else ""
        return match.end(), words
    unclosed = _PUA_UNCLOSED.match(text, start)
    if unclosed is not None:
        return unclosed.end(), ""
    return None  # a lone opening character: removed with the other strays


def _bare_reference(text: str, start: int) -> tuple[int, str] | None:
    match = _BARE_REFERENCE.match(text, start)
    return None if match is None else (match.end(), "")


def _bracketed(text: str, start: int) -> tuple[int, str] | None:
    match = _BRACKETED.match(text, start)
    return None if match is None else (match.end(), "")


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
