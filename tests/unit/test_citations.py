"""Citation, highlight and entity markers: removed, or resolved to the words the UI shows, in
every message (docs/export-format.md, "Markers")."""

from __future__ import annotations

import pytest

from soulworker.conversations.citations import MARKER_CHARACTERS, has_markers, strip_citations
from soulworker.conversations.message_text import finalize_text

LIMIT = 1024 * 1024


def clean(text: str) -> str:
    return finalize_text(text, LIMIT)[0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Highlights without any citation in the message: the words stay, the markers go.
        ("\ue203Paris is the capital.\ue204\ue206 It is big.", "Paris is the capital. It is big."),
        ("Only a trailing mark.\ue206", "Only a trailing mark."),
        # Entity markers without citations: the name the UI shows.
        (
            'Ask \ue200entity\ue202["people","Ada Lovelace","mathematician"]\ue201 today.',
            "Ask Ada Lovelace today.",
        ),
        ("Meet \ue200entity\ue202Grace Hopper\ue201.", "Meet Grace Hopper."),
        ("See \ue200url\ue202the docs\ue202https://example.org\ue201.", "See the docs."),
        # Citations, complete, bare, and cut off at the end of an answer.
        (
            "Fell in May. \ue200cite\ue202turn0search3\ue202turn0news1\ue201 Then rose.",
            "Fell in May. Then rose.",
        ),
        ("Statement.\ue202turn0search0\ue202turn1news12 Next.", "Statement. Next."),
        ("It ends here \ue200cite\ue202turn0search3", "It ends here"),
        ("Old style【12†source】 and 【4:0†notes.pdf】.", "Old style and."),
        # An ordinary CJK bracket without the dagger is text.
        ("【注意】 keep", "【注意】 keep"),
    ],
)
def test_markers_are_removed_or_resolved(raw: str, expected: str) -> None:
    assert clean(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "\ue203open highlight never closed",
        "close without open\ue204",
        "\ue204\ue203reversed\ue204\ue203",
        "\ue200\ue200\ue200cite\ue202turn0search1\ue201\ue201\ue201",  # nested openings
        "\ue200cite\ue202\ue200cite\ue202turn0\ue201\ue201",
        "\ue200entity\ue202[[[[[[[[[[[[[[[[[[[[\ue201 deep",
        "\ue202\ue202\ue202 separators only \ue205\ue206",
        "\ue200" * 50 + "words" + "\ue201" * 50,
    ],
)
def test_unbalanced_and_nested_markers_leave_no_marker_character(raw: str) -> None:
    text = clean(raw)
    assert not any(char in text for char in MARKER_CHARACTERS)
    assert not has_markers(text)


def test_the_words_of_unbalanced_markers_survive() -> None:
    assert clean("\ue203open highlight never closed") == "open highlight never closed"
    assert clean("\ue200\ue200\ue200cite\ue202turn0search1\ue201\ue201\ue201 x") == "x"
    assert clean("\ue200cite\ue202\ue200cite\ue202turn0\ue201\ue201 y") == "y"


def test_a_megabyte_of_hostile_markers_is_cleaned_in_one_pass() -> None:
    """Openings that never close, each followed by text: every match attempt stops at the next
    opening, so the work stays linear (a quadratic pass would not finish here)."""
    unit = "\ue200cite\ue202" + "x" * 20 + " "
    text = unit * (LIMIT // len(unit.encode("utf-8")))
    result = strip_citations(text)
    assert not any(char in result for char in MARKER_CHARACTERS)
    highlights = ("\ue203" + "y" * 30) * 20_000 + "\ue204"
    assert strip_citations(highlights) == "y" * 30 * 20_000


def test_text_without_markers_is_returned_unchanged() -> None:
    for text in ("plain ascii", "é and 東京", "emoji 🎉 only"):
        assert strip_citations(text) is text
        assert not has_markers(text)
