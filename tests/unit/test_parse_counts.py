"""What the parse puts in the job result stays bounded: unknown content types are named for at
most ``MAX_CONTENT_TYPES`` plausible names, every other message is counted as omitted, and a
count taken back out leaves the bucket it went to. The parse's limits and their settings agree."""

from __future__ import annotations

import json

from soulworker.export.reader import DEFAULT_MAX_CONVERSATION_BYTES
from soulworker.export.zip_members import DEFAULT_MAX_ZIP_ENTRIES
from soulworker.pipeline.parse_counts import (
    MAX_CONTENT_TYPE_CHARS,
    MAX_CONTENT_TYPES,
    OMITTED,
    ContentTypeCounts,
    ParseCounts,
)
from soulworker.settings import Settings


def test_names_up_to_the_limit_are_counted_by_name() -> None:
    counts = ContentTypeCounts()
    for number in range(MAX_CONTENT_TYPES):
        assert counts.add(f"type_{number}", 2) == f"type_{number}"
    assert counts.add("type_0", 1) == "type_0"
    assert counts.named()["type_0"] == 3
    assert len(counts.named()) == MAX_CONTENT_TYPES
    assert counts.omitted == 0


def test_names_past_the_limit_and_odd_names_are_only_counted() -> None:
    counts = ContentTypeCounts(max_names=2)
    counts.add("a", 1)
    counts.add("b", 1)
    assert counts.add("c", 5) == OMITTED
    longest = "x" * MAX_CONTENT_TYPE_CHARS
    assert ContentTypeCounts().add(longest, 1) == longest  # the longest name allowed
    for odd in ("x" * (MAX_CONTENT_TYPE_CHARS + 1), "", "two words", "naïve", "a\nb", "<b>"):
        assert ContentTypeCounts().add(odd, 1) == OMITTED, odd
    assert counts.named() == {"a": 1, "b": 1}
    assert counts.omitted == 5


def test_a_count_taken_back_leaves_the_bucket_it_went_to() -> None:
    counts = ContentTypeCounts(max_names=1)
    first = counts.add("a", 2)
    counts.remove(first, 2)  # "a" is not named any more by count, but keeps its place
    assert counts.add("b", 1) == OMITTED
    assert counts.add("a", 1) == "a"
    assert counts.named() == {"a": 1}
    counts.remove(OMITTED, 1)
    assert counts.omitted == 0


def test_the_result_of_a_hostile_export_stays_small() -> None:
    counts = ParseCounts()
    for number in range(100_000):
        counts.unknown_content_types.add(f"t{number}" + "x" * (number % 200), 1)
    result = counts.to_result()
    assert len(result["unknown_content_types"]) == MAX_CONTENT_TYPES
    assert result["unknown_content_types_omitted"] == 100_000 - MAX_CONTENT_TYPES
    assert len(json.dumps(result)) < 4_000


def test_the_parse_limits_default_to_the_readers_constants() -> None:
    settings = Settings()
    assert settings.max_conversation_bytes == DEFAULT_MAX_CONVERSATION_BYTES
    assert settings.max_zip_entries == DEFAULT_MAX_ZIP_ENTRIES
    parsed = Settings.from_env(
        {"SOULWORKER_MAX_CONVERSATION_BYTES": "8MiB", "SOULWORKER_MAX_ZIP_ENTRIES": "10"}
    )
    assert (parsed.max_conversation_bytes, parsed.max_zip_entries) == (8 * 1024**2, 10)
