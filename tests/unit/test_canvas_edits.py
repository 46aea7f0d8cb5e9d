"""Canvas update calls: ``re``'s results where it is safe, bounded work where it is not."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soulworker.conversations.canvas_edits import (
    GENERAL_MAX_STEPS,
    EditResult,
    Outcome,
    WorkBudget,
    apply_update,
    apply_update_call,
)

BIG = 10**12
MAX_CHARS = 1_000_000


def update(
    text: str,
    pattern: str,
    replacement: str,
    *,
    multiple: bool = False,
    budget: WorkBudget | None = None,
    max_chars: int = MAX_CHARS,
) -> EditResult:
    return apply_update(
        text,
        pattern,
        replacement,
        multiple=multiple,
        max_chars=max_chars,
        budget=budget or WorkBudget(BIG),
    )


def reference(text: str, pattern: str, replacement: str, multiple: bool) -> str | None:
    """What the update should give, computed with ``re`` itself (for small inputs only)."""
    compiled = re.compile(pattern, re.DOTALL)
    matches = []
    previous_end = -1
    for match in compiled.finditer(text):
        if match.start() == match.end() == previous_end:
            continue
        matches.append(match)
        previous_end = match.end()
        if not multiple:
            break
    if not matches:
        return None
    pieces = []
    position = 0
    for match in matches:
        pieces.append(text[position : match.start()])
        pieces.append(match.expand(replacement))
        position = match.end()
    pieces.append(text[position:])
    return "".join(pieces)


# --- what real updates look like -------------------------------------------------------------

DOCUMENT = "# Plan\n\nStep one: buy flour.\nStep two: bake.\n\n**Techniques:** knead well.\n"


@pytest.mark.parametrize(
    ("pattern", "replacement", "multiple", "expected"),
    [
        (".*", "All new.", False, "All new."),  # the whole rewrite the model is told to use
        (".*", "All new.", True, "All new."),  # once, not again at the end
        ("(?s).*", "x", False, "x"),
        ("\\A[\\s\\S]*\\Z", "x", False, "x"),
        ("^.*$", "x", False, "x"),
        ("Step two: bake\\.", "Step two: bake at 200°C.", False, None),
        ("Step (one|two)", "Stage", True, None),  # an alternation: the general class
        ("\\*\\*Techniques:\\*\\*(.*?)\\n", "**Tips:**\\1\\n", False, None),
        ("Step.*?:", "S:", True, None),
        ("\\Z", "\n## Notes\n", False, None),  # an append
        ("^", "Draft\n", False, None),  # a prepend
        ("flour", "\\g<0> and sugar", False, None),
        ("(?P<what>flour)", "rye \\g<what>", False, None),
        ("o", "0", True, None),
    ],
)
def test_real_update_shapes_give_what_re_gives(
    pattern: str, replacement: str, multiple: bool, expected: str | None
) -> None:
    result = update(DOCUMENT, pattern, replacement, multiple=multiple)
    assert result.outcome is Outcome.APPLIED
    wanted = (
        expected if expected is not None else reference(DOCUMENT, pattern, replacement, multiple)
    )
    assert result.text == wanted


def test_a_call_applies_all_its_updates_in_order_or_none() -> None:
    budget = WorkBudget(BIG)
    call = {
        "updates": [
            {"pattern": "flour", "replacement": "rye", "multiple": False},
            {"pattern": "rye", "replacement": "spelt"},  # sees the first update's result
        ]
    }
    result = apply_update_call(DOCUMENT, call, max_chars=MAX_CHARS, budget=budget)
    assert result.outcome is Outcome.APPLIED
    assert "buy spelt." in result.text
    call["updates"].append({"pattern": "not in the document", "replacement": "x"})
    failed = apply_update_call(DOCUMENT, call, max_chars=MAX_CHARS, budget=budget)
    assert failed.outcome is Outcome.FAILED
    assert failed.text == DOCUMENT, "a failing update leaves the text as it was, all of it"


@pytest.mark.parametrize(
    "call",
    [
        None,
        [],
        {},
        {"updates": []},
        {"updates": "x"},
        {"updates": [None]},
        {"updates": [{"pattern": 3, "replacement": "x"}]},
        {"updates": [{"pattern": "x"}]},
        {"updates": [{"pattern": "(unclosed", "replacement": "x"}]},  # does not compile
        {"updates": [{"pattern": "\\q", "replacement": "x"}]},  # bad escape
        {"updates": [{"pattern": "flour", "replacement": "\\q"}]},  # bad template escape
        {"updates": [{"pattern": "flour", "replacement": "\\1"}]},  # no such group
        {"updates": [{"pattern": "flour", "replacement": "\\g<nope>"}]},
        {"updates": [{"pattern": "flour", "replacement": "trailing \\"}]},
        {"updates": [{"pattern": "absent", "replacement": "x"}]},  # does not match
    ],
    ids=repr,
)
def test_malformed_or_failing_calls_change_nothing(call: object) -> None:
    result = apply_update_call(DOCUMENT, call, max_chars=MAX_CHARS, budget=WorkBudget(BIG))
    assert result.outcome is Outcome.FAILED
    assert result.text == DOCUMENT


# --- equivalence with re -----------------------------------------------------------------------

LITERALS = st.sampled_from(["a", "b", "ab", "ba", "\\n", "x", "aa", "\\.", "}", "é", "\\x41"])
GAPS = st.sampled_from([".*", ".+", "(.*)", "(?:.+)", "[\\s\\S]*", "[\\w\\W]+"])
LAZY_GAPS = st.sampled_from([".*?", ".+?", "(.*?)", "(?:.+?)", "[\\s\\S]*?", "[\\d\\D]+?"])


@st.composite
def chain_patterns(draw: st.DrawFn) -> str:
    gaps = draw(st.sampled_from([GAPS, LAZY_GAPS]))
    pieces = [draw(st.sampled_from(["", "", "^", "\\A", "(?s)"]))]
    previous_gap = False
    for _ in range(draw(st.integers(0, 4))):
        if not previous_gap and draw(st.booleans()):
            pieces.append(draw(gaps))
            previous_gap = True
        else:
            pieces.append(draw(LITERALS))
            previous_gap = False
    pieces.append(draw(st.sampled_from(["", "", "$", "\\Z"])))
    return "".join(pieces)


TEXTS = st.text(alphabet=st.sampled_from(list("abAx.\n}é")), max_size=14)
TEMPLATES = st.sampled_from(["", "R", "<\\g<0>>", "[\\1]", "\\n", "\\\\", "\\.x", "\\101"])


@settings(max_examples=1500)
@given(pattern=chain_patterns(), text=TEXTS, replacement=TEMPLATES, multiple=st.booleans())
def test_chains_give_exactly_what_re_gives(
    pattern: str, text: str, replacement: str, multiple: bool
) -> None:
    try:
        expected: str | None = reference(text, pattern, replacement, multiple)
    except (re.error, IndexError):
        expected = None  # e.g. "\\1" in a pattern without groups: the update fails
    result = update(text, pattern, replacement, multiple=multiple)
    if expected is None:
        assert result.outcome is Outcome.FAILED
        assert result.text == text
    else:
        assert result.outcome is Outcome.APPLIED
        assert result.text == expected


ANY_TEXT = st.text(
    alphabet=st.sampled_from(list("ab \n\t.*+?()[]{}|^$\\#-_é東🎉\x00\r")), max_size=30
)


@settings(max_examples=800)
@given(text=ANY_TEXT, data=st.data())
def test_quoted_passages_as_re_escape_writes_them_give_what_re_gives(
    text: str, data: st.DataObject
) -> None:
    """The model quotes the passage to change with every special character escaped."""
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    pattern = re.escape(text[start:end])
    if data.draw(st.booleans()):
        pattern += data.draw(st.sampled_from(["(.*?)", ".*", "[\\s\\S]+?"])) + re.escape(text[-1:])
    replacement = data.draw(TEMPLATES)
    multiple = data.draw(st.booleans())
    try:
        expected = reference(text, pattern, replacement, multiple)
    except (re.error, IndexError):
        expected = None  # e.g. a group reference in a pattern without groups
    result = update(text, pattern, replacement, multiple=multiple)
    if expected is None:
        assert result.outcome is Outcome.FAILED
    else:
        assert (result.outcome, result.text) == (Outcome.APPLIED, expected)


GENERAL = st.sampled_from(
    ["a|b", "[ab]x", "\\bab", "a\\s*b", "(?i)AB", "x?a", "[^a]+", "a{2}", "(a)|(b)", "\\d"]
)


@settings(max_examples=500)
@given(pattern=GENERAL, text=TEXTS, replacement=TEMPLATES, multiple=st.booleans())
def test_other_small_patterns_give_what_re_gives(
    pattern: str, text: str, replacement: str, multiple: bool
) -> None:
    try:
        expected: str | None = reference(text, pattern, replacement, multiple)
    except (re.error, IndexError):
        expected = None
    result = update(text, pattern, replacement, multiple=multiple)
    if expected is None:
        assert result.outcome is Outcome.FAILED
    else:
        assert (result.outcome, result.text) == (Outcome.APPLIED, expected)


TEMPLATE_PIECES = ["\\", "\\", "g", "<", ">", "0", "1", "2", "7", "9", "n", "q", "é", "_", "name"]


@settings(max_examples=2000)
@given(template=st.lists(st.sampled_from(TEMPLATE_PIECES), max_size=8).map("".join))
def test_templates_expand_exactly_as_match_expand_does(template: str) -> None:
    """Escapes, octal, numbered and named groups, a group that did not take part, and every
    error ``re`` raises (bad escapes, unknown groups, a trailing backslash)."""
    match = re.compile("(?P<name>a)(b)|(z)").search("xab")
    assert match is not None
    try:
        expected: str | None = match.expand(template)
    except (re.error, IndexError):
        expected = None
    result = update("xab", "(?P<name>a)(b)|(z)", template)
    if expected is None:
        assert result.outcome is Outcome.FAILED
    else:
        assert (result.outcome, result.text) == (Outcome.APPLIED, "x" + expected)


# --- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "(a+)+$",  # exponential backtracking
        "(a|a)*b",
        "(?:a*)*b",
        "(?=a)a",  # look-around
        "(a)\\1",  # back-reference
        "(?(1)a|b)",
        "(?>a+)b",
        "(?x)(a+ ) + $",  # verbose mode could hide a repeated group
    ],
)
def test_patterns_that_can_backtrack_without_bound_are_refused(pattern: str) -> None:
    text = "a" * 5_000 + "!"
    result = update(text, pattern, "x")
    assert result.outcome is Outcome.REFUSED
    assert result.text == text


def test_a_quadratic_shape_on_a_big_document_is_matched_linearly_as_a_chain() -> None:
    """``a.*?X`` on a megabyte of ``a`` takes ``re`` about an hour; as a chain it is two finds."""
    text = "a" * 1_000_000
    budget = WorkBudget(BIG)
    result = update(text, "a.*?X", "y", budget=budget)
    assert result.outcome is Outcome.FAILED  # no X: not found, which was decided quickly
    assert BIG - budget.remaining < 5_000_000, "a few scans of the text, not a million"
    found = update(text + "X", "a(.*?)X", "[\\1]", max_chars=2_000_000)
    assert found.text == "[" + "a" * 999_999 + "]"


def test_a_general_pattern_whose_worst_case_is_too_big_is_refused_before_running() -> None:
    text = "a " * 200_000
    result = update(text, "a\\s+b", "x")  # one repeat: quadratic worst case on 400 KB
    assert result.outcome is Outcome.REFUSED
    small = update("a  b", "a\\s+b", "x")
    assert (small.outcome, small.text) == (Outcome.APPLIED, "x")
    assert GENERAL_MAX_STEPS < (400_001**2) * 6


def test_the_budget_stops_ten_thousand_updates_to_a_big_document() -> None:
    text = "word " * 200_000  # a megabyte
    budget = WorkBudget(200_000_000)
    outcomes = []
    for number in range(10_000):
        result = update(text, "word", f"w{number}", budget=budget)
        outcomes.append(result.outcome)
        if result.outcome is Outcome.APPLIED:
            text = result.text
    applied = outcomes.count(Outcome.APPLIED)
    assert 0 < applied < 200, "a bounded number of megabyte rewrites, then none"
    assert outcomes[-1] is Outcome.OVER_BUDGET
    assert budget.remaining >= 0


def test_many_matches_are_paid_for_one_by_one() -> None:
    budget = WorkBudget(1_000_000)
    result = update("a" * 500_000, "a", "b", multiple=True, budget=budget)
    assert result.outcome is Outcome.OVER_BUDGET  # 500,000 matches cost far more than that
    assert update("aaa", "a", "b", multiple=True).text == "bbb"


def test_expansion_never_builds_more_than_the_cap() -> None:
    text = "x" * 100_000
    replacement = "\\g<0>" * 10_000  # would be a gigabyte
    result = update(text, ".*", replacement, max_chars=200_001)
    assert result.outcome is Outcome.APPLIED
    assert result.truncated
    assert len(result.text) == 200_001
    every_position = update("abc", "", "-", multiple=True)
    assert every_position.text == "-a-b-c-"


def test_an_over_long_pattern_is_refused_without_compiling() -> None:
    result = update("text", "a" * 200_000, "x")
    assert result.outcome is Outcome.REFUSED
