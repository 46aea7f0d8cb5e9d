"""Applies one Canvas ``update_textdoc`` call to a document's text, in bounded time and memory.

The call (docs/export-format.md, "Canvas") is JSON ``{"updates": [{"pattern", "replacement",
"multiple"}, …]}``. ChatGPT documents ``pattern`` as a Python regular expression used with
``re.finditer`` and ``replacement`` as a template used with ``Match.expand``; ``multiple`` false
(or absent) replaces the first match only. The tool refuses the whole call when any update fails
(a pattern that does not compile or does not match, a template that does not expand), so the
updates are applied in order to a copy and kept only if all of them succeed.

Patterns are matched with "dot matches newline" on: the model is told to rewrite a whole
document with the pattern ``.*``, which only means "everything" that way.

The export is hostile input: Python's ``re`` backtracks, and a pattern such as ``a.*?X`` takes
quadratic time on a document full of ``a`` (7 s for 40,000 characters, about an hour for a
megabyte); nested repeats take exponential time. Nothing here uses a timeout. Instead each
pattern is put in one of three classes before any matching, and the work is charged to a
``WorkBudget`` that the caller shares across a whole conversation:

1. Chains: literal text, optionally separated by "any text" gaps (``.*``, ``.*?``, ``.+``,
   ``[\\s\\S]*?``, possibly in a group), optionally anchored at the start (``^``, ``\\A``) or
   the end (``$``, ``\\Z``). This covers what the model writes in practice: whole rewrites
   (``.*``), escaped quotes of the passage to change, such quotes with ``(.*?)`` between
   them, and appends (``\\Z``). They are matched here with ``str.find``/``str.rfind``, in
   linear time, with exactly the result ``re`` would give (a test compares the two).
2. Other patterns that compile are run by ``re`` only when they cannot backtrack badly and the
   document is small enough: no look-around, back-reference, conditional or quantified group
   (those are refused: the update is counted as not applied), and an estimated worst case of
   ``(n + 1) ** (repeats + 1) * (pattern length + 1) * 2 ** alternatives`` steps within
   ``GENERAL_MAX_STEPS`` for an ``n``-character document. A pattern over the limit is not run.
3. Patterns that do not compile: the update fails, as it did in ChatGPT.

Documents are capped at ``max_chars`` characters (the caller passes one more than the
single-message byte limit, so the final text is cut there with a visible marker), and every
template expansion checks the size before building the text, so a replacement that repeats the
whole match thousands of times costs no more than the cap.

With ``multiple`` the matches are the non-overlapping ones from left to right, except that an
empty match right after the previous match is skipped (so ``.*`` replaces a document once, not
once and again at its end).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

MAX_PATTERN_CHARS = 100_000
"""Longer patterns are not compiled: a real one quotes at most a passage of the document."""

GENERAL_MAX_STEPS = 20_000_000
"""Worst-case regex steps allowed for one pattern outside the chain class (about 0.1 s of
``re`` on the reference VM, which does ~2.4e8 simple steps a second)."""

_COMPILE_UNITS_PER_CHAR = 200
"""Budget units charged per pattern character compiled by ``re`` (its parser is Python code,
~100 times slower per character than a ``str`` scan)."""

_STEP_UNITS = 5
"""Budget units charged per estimated ``re`` step (~5 times a ``str`` scan per character)."""

_MATCH_UNITS = 2_000
"""Budget units charged per match found (Python-level work for each, about a microsecond),
plus ``_PIECE_UNITS`` per piece of the template expanded for it."""

_PIECE_UNITS = 100


class WorkBudget:
    """Work allowed for every Canvas update of one conversation, in units of about one
    character scanned or copied (about a nanosecond on the reference VM); once spent, further
    updates are not applied."""

    def __init__(self, units: int) -> None:
        self.remaining = units

    def grant(self, units: int) -> None:
        """Add ``units`` (the caller grants more for work the input itself pays for)."""
        self.remaining += units

    def charge(self, units: int) -> bool:
        """Take ``units`` if they are left; ``False`` (and nothing taken) otherwise."""
        if units > self.remaining:
            return False
        self.remaining -= units
        return True


class Outcome(enum.Enum):
    APPLIED = "applied"
    FAILED = "failed"  # malformed call, pattern that does not compile or match, bad template
    REFUSED = "refused"  # a pattern this module will not run (see the module docstring)
    OVER_BUDGET = "over_budget"  # the conversation's work budget is spent


@dataclass(frozen=True, slots=True)
class EditResult:
    outcome: Outcome
    text: str  # the new text when applied, else the text unchanged
    truncated: bool = False  # the new text was cut at ``max_chars``


def apply_update_call(
    text: str, arguments: object, *, max_chars: int, budget: WorkBudget
) -> EditResult:
    """Applies the ``updates`` of a decoded ``update_textdoc`` call to ``text``; all or nothing."""
    updates = arguments.get("updates") if isinstance(arguments, dict) else None
    if not isinstance(updates, list) or not updates:
        return EditResult(Outcome.FAILED, text)
    current = text
    truncated = False
    for update in updates:
        if not isinstance(update, dict):
            return EditResult(Outcome.FAILED, text)
        pattern = update.get("pattern")
        replacement = update.get("replacement")
        if not isinstance(pattern, str) or not isinstance(replacement, str):
            return EditResult(Outcome.FAILED, text)
        result = apply_update(
            current,
            pattern,
            replacement,
            multiple=update.get("multiple") is True,
            max_chars=max_chars,
            budget=budget,
        )
        if result.outcome is not Outcome.APPLIED:
            return EditResult(result.outcome, text)
        current = result.text
        truncated = truncated or result.truncated
    return EditResult(Outcome.APPLIED, current, truncated)


def apply_update(
    text: str,
    pattern: str,
    replacement: str,
    *,
    multiple: bool,
    max_chars: int,
    budget: WorkBudget,
) -> EditResult:
    """Applies one ``{pattern, replacement, multiple}`` update to ``text``."""
    if not budget.charge(len(pattern) + len(replacement) + 1):
        return EditResult(Outcome.OVER_BUDGET, text)
    if len(pattern) > MAX_PATTERN_CHARS:
        return EditResult(Outcome.REFUSED, text)
    template = _parse_template(replacement)
    if template is None:
        return EditResult(Outcome.FAILED, text)
    chain = _parse_chain(pattern)
    found: list[_Found] | Outcome
    names: Mapping[str, int]
    if chain is not None:
        if not budget.charge((len(text) + 1) * (len(chain.pairs) + 1)):
            return EditResult(Outcome.OVER_BUDGET, text)
        groups, names = chain.groups, _NO_NAMES
        found = _collect(_chain_iter(chain, text), multiple, len(template), budget)
    else:
        general = _general_plan(pattern, len(text), budget)
        if isinstance(general, Outcome):
            return EditResult(general, text)
        groups, names = general.groups, general.groupindex
        found = _collect(_regex_iter(general, text), multiple, len(template), budget)
    if isinstance(found, Outcome):
        return EditResult(found, text)
    if not found:
        return EditResult(Outcome.FAILED, text)  # "pattern not found in the document"
    resolved = _resolve_template(template, groups, names)
    if resolved is None:
        return EditResult(Outcome.FAILED, text)  # a reference to a group the pattern lacks
    new_text, truncated = _substitute(text, found, resolved, max_chars)
    if not budget.charge(len(new_text)):
        return EditResult(Outcome.OVER_BUDGET, text)
    return EditResult(Outcome.APPLIED, new_text, truncated)


# -- matches ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Found:
    """One match: its span, and the span of each capturing group (``None``: did not take part)."""

    start: int
    end: int
    groups: tuple[tuple[int, int] | None, ...]


_NO_NAMES: Mapping[str, int] = {}


def _collect(
    matches: Iterator[_Found], multiple: bool, template_pieces: int, budget: WorkBudget
) -> list[_Found] | Outcome:
    """The matches an update replaces: the first, or with ``multiple`` all of them except an
    empty match right after the previous one; each is paid for before the next is sought."""
    found: list[_Found] = []
    previous_end = -1
    cost = _MATCH_UNITS + _PIECE_UNITS * template_pieces
    for match in matches:
        if match.start == match.end == previous_end:
            continue
        if not budget.charge(cost):
            return Outcome.OVER_BUDGET
        found.append(match)
        previous_end = match.end
        if not multiple:
            break
    return found


def _substitute(
    text: str, found: Sequence[_Found], template: list[str | int], max_chars: int
) -> tuple[str, bool]:
    """``text`` with each match replaced by the expanded template, at most ``max_chars``
    characters; sizes are added up before any text is built."""
    pieces: list[str] = []
    size = 0
    position = 0
    for match in found:
        if size >= max_chars:
            break
        pieces.append(text[position : match.start])
        size += match.start - position
        for piece in template:
            if size >= max_chars:
                break
            if isinstance(piece, str):
                pieces.append(piece)
                size += len(piece)
            elif piece == 0:
                pieces.append(text[match.start : match.end])
                size += match.end - match.start
            else:
                span = match.groups[piece - 1]
                if span is not None:
                    pieces.append(text[span[0] : span[1]])
                    size += span[1] - span[0]
        position = match.end
    if size < max_chars:
        pieces.append(text[position:])
        size += len(text) - position
    if size <= max_chars:
        return "".join(pieces), False
    # Cut without joining more than the cap: drop whole pieces past it, then slice the last.
    kept: list[str] = []
    room = max_chars
    for piece in pieces:
        if len(piece) >= room:
            kept.append(piece[:room])
            break
        kept.append(piece)
        room -= len(piece)
    return "".join(kept), True


# -- templates (Match.expand) -----------------------------------------------------------------

_TEMPLATE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OCTAL = frozenset("01234567")
_MAX_GROUP_REFERENCE = 1_000_000


def _parse_template(template: str) -> list[str | int | tuple[str]] | None:
    """The pieces of a replacement template as ``Match.expand`` reads it: literal text, group
    numbers, and ``(name,)`` for named groups; ``None`` where ``re`` would raise."""
    if "\\" not in template:
        return [template]
    pieces: list[str | int | tuple[str]] = []
    literal: list[str] = []
    index = 0
    length = len(template)
    while index < length:
        backslash = template.find("\\", index)
        if backslash < 0:
            literal.append(template[index:])
            break
        if backslash > index:  # the text up to the next escape, in one piece
            literal.append(template[index:backslash])
        index = backslash
        if index + 1 >= length:
            return None  # a trailing backslash
        escaped = template[index + 1]
        index += 2
        reference: int | tuple[str] | None = None
        if escaped == "g":
            close = template.find(">", index)
            if index >= length or template[index] != "<" or close < 0:
                return None
            name = template[index + 1 : close]
            index = close + 1
            if name.isidentifier():
                reference = (name,)
            elif name.isdecimal() and name.isascii() and len(name) <= 7:
                reference = int(name)
            else:
                return None
        elif escaped == "0":
            digits = escaped
            while len(digits) < 3 and index < length and template[index] in _OCTAL:
                digits += template[index]
                index += 1
            literal.append(chr(int(digits, 8) & 0xFF))
        elif escaped.isdecimal() and escaped.isascii():
            digits = escaped
            if index < length and template[index].isdecimal() and template[index].isascii():
                digits += template[index]
                index += 1
                if (
                    digits[0] in _OCTAL
                    and digits[1] in _OCTAL
                    and index < length
                    and template[index] in _OCTAL
                ):
                    digits += template[index]
                    index += 1
                    value = int(digits, 8)
                    if value > 0o377:
                        return None
                    literal.append(chr(value))
                    continue
            reference = int(digits)
        elif escaped in _TEMPLATE_ESCAPES:
            literal.append(_TEMPLATE_ESCAPES[escaped])
        elif escaped == "\\":
            literal.append("\\")
        elif escaped in _ASCII_LETTERS:
            return None  # "bad escape": re reserves unknown letter escapes
        else:
            literal.append("\\" + escaped)  # other unknown escapes stay as they are
        if reference is not None:
            if literal:
                pieces.append("".join(literal))
                literal = []
            pieces.append(reference)
    if literal:
        pieces.append("".join(literal))
    return pieces


def _resolve_template(
    template: list[str | int | tuple[str]], groups: int, names: Mapping[str, int]
) -> list[str | int] | None:
    """Group names replaced by numbers; ``None`` for a group the pattern does not have."""
    resolved: list[str | int] = []
    for piece in template:
        if isinstance(piece, tuple):
            number = names.get(piece[0])
            if number is None:
                return None
            resolved.append(number)
        elif isinstance(piece, int):
            if piece > groups or piece > _MAX_GROUP_REFERENCE:
                return None
            resolved.append(piece)
        else:
            resolved.append(piece)
    return resolved


# -- chains -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Gap:
    """Any text of at least ``minimum`` characters; ``group`` is its capture number or 0."""

    minimum: int
    group: int


@dataclass(frozen=True, slots=True)
class _Chain:
    """``head`` literal, then (gap, literal) pairs, then an optional trailing gap."""

    head: str
    pairs: tuple[tuple[_Gap, str], ...]
    tail: _Gap | None
    lazy: bool
    at_start: bool
    at_end: str | None  # "$" or "\\Z"
    groups: int


_ANY_ATOMS = ("[\\s\\S]", "[\\S\\s]", "[\\w\\W]", "[\\W\\w]", "[\\d\\D]", "[\\D\\d]", ".")
_SPECIAL = frozenset(".^$*+?{}[]|()\\")
_PLAIN_RUN = re.compile(r"[^.^$*+?{}\[\]|()\\]+")
"""Characters that stand for themselves (a quantifier after the run ends the chain anyway)."""
_ESCAPED_RUN = re.compile(r"(?:\\[^0-9A-Za-z])+")
"""Backslashes each followed by a character that is not an ASCII letter or digit: literals."""
_QUANTIFIER_BRACE = re.compile(r"\{(?:\d+(?:,\d*)?|,\d*)\}")
"""A ``{m}``, ``{m,}``, ``{,n}`` or ``{m,n}`` repeat; any other ``{`` is an ordinary character."""
_HEX = {"x": 2, "u": 4, "U": 8}


def _parse_chain(pattern: str) -> _Chain | None:
    """The chain a pattern is (see the module docstring), or ``None`` for any other pattern."""
    index = 0
    length = len(pattern)
    if pattern.startswith("(?s)"):
        index = 4
    at_start = False
    if pattern.startswith("^", index):
        at_start, index = True, index + 1
    elif pattern.startswith("\\A", index):
        at_start, index = True, index + 2
    items: list[str | _Gap] = []
    literal: list[str] = []
    laziness: set[bool] = set()
    groups = 0
    at_end: str | None = None
    while index < length:
        # Runs of ordinary characters and of escaped punctuation (what re.escape writes) are
        # taken whole: a quoted passage of a few KB is a handful of steps, not one per character.
        run = _PLAIN_RUN.match(pattern, index)
        if run is not None:
            literal.append(run.group())
            index = run.end()
            continue
        run = _ESCAPED_RUN.match(pattern, index)
        if run is not None:
            literal.append(run.group()[1::2])
            index = run.end()
            continue
        char = pattern[index]
        if char == "$" and index == length - 1:
            at_end, index = "$", length
            break
        if pattern.startswith("\\Z", index) and index == length - 2:
            at_end, index = "\\Z", length
            break
        gap = _parse_gap(pattern, index)
        if gap is not None:
            end, minimum, lazy, captured = gap
            if not literal and items and isinstance(items[-1], _Gap):
                return None  # two gaps in a row
            if literal:
                items.append("".join(literal))
                literal = []
            if captured:
                groups += 1
            items.append(_Gap(minimum, groups if captured else 0))
            laziness.add(lazy)
            index = end
            continue
        if char == "\\":
            decoded = _literal_escape(pattern, index)
            if decoded is None:
                return None
            text, index = decoded
            literal.append(text)
            continue
        if char in "}]":  # a closing bracket with no opening is an ordinary character
            literal.append(char)
            index += 1
            continue
        if char == "{" and _QUANTIFIER_BRACE.match(pattern, index) is None:
            literal.append(char)
            index += 1
            continue
        if char in _SPECIAL:
            return None
        literal.append(char)
        index += 1
    if len(laziness) > 1:
        return None  # lazy and greedy gaps mixed: left to the general class
    if literal:
        items.append("".join(literal))
    head = ""
    first = items[0] if items else None
    if isinstance(first, str):
        head = first
        items.pop(0)
    pairs: list[tuple[_Gap, str]] = []
    tail: _Gap | None = None
    position = 0
    while position < len(items):
        gap_item = items[position]
        assert isinstance(gap_item, _Gap)
        if position + 1 < len(items):
            following = items[position + 1]
            assert isinstance(following, str)
            pairs.append((gap_item, following))
            position += 2
        else:
            tail = gap_item
            position += 1
    return _Chain(
        head=head,
        pairs=tuple(pairs),
        tail=tail,
        lazy=laziness == {True},
        at_start=at_start,
        at_end=at_end,
        groups=groups,
    )


def _parse_gap(pattern: str, index: int) -> tuple[int, int, bool, bool] | None:
    """An "any text" gap at ``index``: (end index, minimum length, lazy, captured), or ``None``."""
    captured = False
    close = ""
    if pattern.startswith("(?:", index):
        index, close = index + 3, ")"
    elif pattern.startswith("(", index) and not pattern.startswith("(?", index):
        index, close, captured = index + 1, ")", True
    for atom in _ANY_ATOMS:
        if pattern.startswith(atom, index):
            index += len(atom)
            break
    else:
        return None
    if index >= len(pattern) or pattern[index] not in "*+":
        return None
    minimum = 1 if pattern[index] == "+" else 0
    index += 1
    lazy = index < len(pattern) and pattern[index] == "?"
    if lazy:
        index += 1
    elif index < len(pattern) and pattern[index] in "+*{":
        return None  # possessive or a repeated repeat: not a plain gap
    if close:
        if not pattern.startswith(close, index):
            return None
        index += 1
    if index < len(pattern) and pattern[index] in "*+?{":
        return None  # the gap (or its group) is itself repeated
    return index, minimum, lazy, captured


def _literal_escape(pattern: str, index: int) -> tuple[str, int] | None:
    """The character an escape at ``index`` stands for, if it is a literal one, and the index
    after it; ``None`` for anything else (classes, anchors, back-references, errors)."""
    if index + 1 >= len(pattern):
        return None
    char = pattern[index + 1]
    if char in _TEMPLATE_ESCAPES and char != "b":  # \b is a word boundary in a pattern
        return _TEMPLATE_ESCAPES[char], index + 2
    if char in _HEX:
        digits = pattern[index + 2 : index + 2 + _HEX[char]]
        if len(digits) != _HEX[char] or not all(c in "0123456789abcdefABCDEF" for c in digits):
            return None
        value = int(digits, 16)
        if value > 0x10FFFF:
            return None
        return chr(value), index + 2 + _HEX[char]
    if char.isascii() and char.isalnum():
        return None
    return char, index + 2


def _valid_ends(text: str, anchor: str) -> tuple[int, ...]:
    """Where an end anchor matches, in increasing order: ``\\Z`` only at the end, ``$`` also
    before a final newline."""
    length = len(text)
    if anchor == "$" and text.endswith("\n"):
        return (length - 1, length)
    return (length,)


def _chain_iter(chain: _Chain, text: str) -> Iterator[_Found]:
    """Every match from left to right, as ``re.finditer`` gives them: after a match the search
    goes on at its end; after an empty match, a non-empty match may start at the same place
    (the caller then drops empty matches adjacent to the previous one)."""
    position = 0
    length = len(text)
    while position <= length:
        match = _chain_find(chain, text, position)
        if match is None:
            return
        yield match
        if match.start != match.end:
            position = match.end
            continue
        longer = _chain_nonempty_at(chain, text, match.start)
        if longer is not None:
            yield longer
            position = longer.end
        else:
            position = match.start + 1


def _chain_nonempty_at(chain: _Chain, text: str, start: int) -> _Found | None:
    """The non-empty match at ``start`` that ``re`` tries after an empty one there.

    Only a chain of anchors and at most one gap can match empty (any literal is non-empty), so
    this is that gap taking at least one character.
    """
    tail = chain.tail
    if tail is None or chain.head or chain.pairs:
        return None
    lowest_end = start + max(1, tail.minimum)
    if chain.at_end is not None:
        candidates = [end for end in _valid_ends(text, chain.at_end) if end >= lowest_end]
    else:
        candidates = [lowest_end, len(text)] if lowest_end <= len(text) else []
    if not candidates:
        return None
    end = candidates[0] if chain.lazy else candidates[-1]
    spans: list[tuple[int, int] | None] = [None] * chain.groups
    if tail.group:
        spans[tail.group - 1] = (start, end)
    return _Found(start, end, tuple(spans))


def _chain_find(chain: _Chain, text: str, position: int) -> _Found | None:
    """The leftmost match starting at or after ``position``, as ``re`` would find it.

    The gaps match any text, so the leftmost start is the first place the head literal occurs
    from which the rest can follow, and that is simply its first occurrence: if the rest cannot
    follow from there, it cannot follow from anywhere later (every search would only start
    later). Lazy gaps then take the first occurrence of each next literal; greedy gaps the last
    one that still leaves room for the rest, found from the right.
    """
    if chain.at_start and position > 0:
        return None
    head, pairs, tail = chain.head, chain.pairs, chain.tail
    length = len(text)
    ends = _valid_ends(text, chain.at_end) if chain.at_end is not None else None
    if not pairs and tail is None and ends is not None:
        # Only a literal (possibly empty), which must end where the anchor matches.
        for end in ends:
            start = end - len(head)
            anchored_ok = start == 0 or not chain.at_start
            if start >= position and anchored_ok and text.startswith(head, start):
                return _Found(start, end, ())
        return None
    if chain.at_start:
        if not text.startswith(head):
            return None
        start = 0
    else:
        start = text.find(head, position)
        if start < 0:
            return None
    # The earliest position of each literal: where lazy gaps end, and a lower bound for greedy.
    earliest: list[int] = []
    cursor = start + len(head)
    for gap, literal in pairs:
        at = text.find(literal, cursor + gap.minimum)
        if at < 0:
            return None
        earliest.append(at)
        cursor = at + len(literal)
    if tail is not None and cursor + tail.minimum > length:
        return None
    positions = list(earliest)
    last_fixed = False
    if pairs and tail is None and ends is not None:
        # The last literal must end exactly where the anchor matches.
        gap, literal = pairs[-1]
        lowest = start + len(head) if len(pairs) == 1 else earliest[-2] + len(pairs[-2][1])
        options = [
            end - len(literal)
            for end in ends
            if end - len(literal) >= lowest + gap.minimum
            and text.startswith(literal, end - len(literal))
        ]
        if not options:
            return None
        positions[-1] = options[0] if chain.lazy else options[-1]
        last_fixed = True
    if not chain.lazy and pairs:
        upper = length - (tail.minimum if tail is not None else 0)
        for index in range(len(pairs) - 1, -1, -1):
            gap, literal = pairs[index]
            if not (last_fixed and index == len(pairs) - 1):
                # The earliest position is feasible and within bounds, so this finds one.
                positions[index] = text.rfind(literal, earliest[index], upper)
            upper = positions[index] - gap.minimum
    spans: list[tuple[int, int] | None] = [None] * chain.groups
    cursor = start + len(head)
    for (gap, literal), at in zip(pairs, positions, strict=True):
        if gap.group:
            spans[gap.group - 1] = (cursor, at)
        cursor = at + len(literal)
    end = cursor
    if tail is not None:
        lowest_end = cursor + tail.minimum
        if ends is not None:
            candidates = [candidate for candidate in ends if candidate >= lowest_end]
            if not candidates:
                return None
            end = candidates[0] if chain.lazy else candidates[-1]
        else:
            end = lowest_end if chain.lazy else length
        if tail.group:
            spans[tail.group - 1] = (cursor, end)
    return _Found(start, end, tuple(spans))


# -- everything else --------------------------------------------------------------------------


def _general_plan(pattern: str, text_chars: int, budget: WorkBudget) -> re.Pattern[str] | Outcome:
    """A compiled pattern ``re`` may run on a document of ``text_chars`` characters, or why not."""
    shape = _shape(pattern)
    if shape is None:
        return Outcome.REFUSED
    repeats, choices = shape
    if choices > 30:
        return Outcome.REFUSED
    steps = (text_chars + 1) ** (repeats + 1) * (len(pattern) + 1) * 2**choices
    if steps > GENERAL_MAX_STEPS:
        return Outcome.REFUSED
    if not budget.charge(len(pattern) * _COMPILE_UNITS_PER_CHAR + steps * _STEP_UNITS):
        return Outcome.OVER_BUDGET
    try:
        return re.compile(pattern, re.DOTALL)
    except (re.error, OverflowError, RecursionError, ValueError, IndexError):
        return Outcome.FAILED


def _regex_iter(compiled: re.Pattern[str], text: str) -> Iterator[_Found]:
    for match in compiled.finditer(text):
        groups = tuple(
            None if match.start(number) < 0 else match.span(number)
            for number in range(1, compiled.groups + 1)
        )
        yield _Found(match.start(), match.end(), groups)


_GROUP_OPENERS_REFUSED = ("(?=", "(?!", "(?<=", "(?<!", "(?(", "(?P=", "(?>")
_VERBOSE_FLAG = re.compile(r"\(\?[aiLmsu-]*x")
"""Verbose mode lets whitespace and comments sit between a group and its repeat, which the
textual reading below would miss: such patterns are refused."""


def _shape(pattern: str) -> tuple[int, int] | None:
    """(repeats that can take many lengths, two-way choices) of a pattern, read textually; or
    ``None`` when it has a construct that can backtrack without bound (look-around,
    back-reference, conditional, atomic group, or a repeated group).

    Conservative: a pattern it cannot read is refused, never guessed at.
    """
    if _VERBOSE_FLAG.search(pattern):
        return None
    repeats = choices = 0
    index = 0
    length = len(pattern)
    previous_closed_group = False
    while index < length:
        char = pattern[index]
        if char == "\\":
            if index + 1 < length and pattern[index + 1].isdecimal():
                return None  # a back-reference (or an octal escape: refused alike)
            index += 2
            previous_closed_group = False
            continue
        if char == "[":
            close = _class_end(pattern, index)
            if close < 0:
                return None
            index = close + 1
            previous_closed_group = False
            continue
        if char == "(":
            if pattern.startswith(_GROUP_OPENERS_REFUSED, index):
                return None
            index += 1
            previous_closed_group = False
            continue
        if char == ")":
            index += 1
            previous_closed_group = True
            continue
        if char == "|":
            choices += 1
        elif char in "*+?" or (char == "{" and _QUANTIFIER_BRACE.match(pattern, index)):
            if previous_closed_group:
                return None
            if char == "{":
                quantifier = _QUANTIFIER_BRACE.match(pattern, index)
                assert quantifier is not None
                low, comma, high = quantifier.group()[1:-1].partition(",")
                # Digits are compared only when short: int() refuses 4,300-digit strings.
                bounded = not comma or (
                    0 < len(high) <= 9 and len(low) <= 9 and int(high) - int(low or 0) <= 1
                )
                if bounded:
                    choices += 1
                else:
                    repeats += 1
                index = quantifier.end()
            elif char == "?":
                choices += 1
                index += 1
            else:
                repeats += 1
                index += 1
            if index < length and pattern[index] in "?+":
                index += 1  # lazy or possessive: the same repeat
            previous_closed_group = False
            continue
        previous_closed_group = False
        index += 1
    return repeats, choices


def _class_end(pattern: str, start: int) -> int:
    """The index of the ``]`` closing a character class opened at ``start``, or -1."""
    index = start + 1
    if index < len(pattern) and pattern[index] == "^":
        index += 1
    if index < len(pattern) and pattern[index] == "]":
        index += 1  # a leading "]" is a member
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if char == "]":
            return index
        index += 1
    return -1
