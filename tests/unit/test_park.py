"""``ParkJob``: what a handler may ask for, and what it may not (docs/queue.md, "Parking a job")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from soulworker.jobs.errors import JobControl
from soulworker.jobs.park import MAX_WAITING_FOR_CHARS, ParkJob, one_short_line

SOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_a_park_carries_its_time_its_reason_and_its_checkpoint() -> None:
    park = ParkJob(SOON, "message batch msgbatch_01 (processing)", {"batch": "msgbatch_01"})
    assert isinstance(park, JobControl), "a control exception, not a failure"
    assert (park.resume_at, park.waiting_for, park.checkpoint) == (
        SOON,
        "message batch msgbatch_01 (processing)",
        {"batch": "msgbatch_01"},
    )
    assert ParkJob(SOON, "x").checkpoint == {}


def test_any_timezone_is_accepted() -> None:
    tokyo = SOON.astimezone(timezone(timedelta(hours=9)))
    assert ParkJob(tokyo, "x").resume_at == SOON


@pytest.mark.parametrize(
    ("resume_at", "error"),
    [
        (datetime(2026, 12, 7, 12, 0), ValueError),  # naive: whose noon?
        ("2026-12-07T12:00:00Z", TypeError),
        (1796000000, TypeError),
        (None, TypeError),
    ],
)
def test_a_resume_time_that_is_not_an_aware_datetime_is_refused(
    resume_at: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="resume_at"):
        ParkJob(resume_at, "x")


@pytest.mark.parametrize("waiting_for", ["", "   ", "\n\t\x00", None, b"batch", 42])
def test_a_park_must_say_what_it_waits_for_in_text(waiting_for: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="waiting_for"):
        ParkJob(SOON, waiting_for)


def test_a_checkpoint_must_be_an_object() -> None:
    with pytest.raises(TypeError, match="checkpoint"):
        ParkJob(SOON, "x", ["not", "a", "dict"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("batch b1 (processing)", "batch b1 (processing)"),
        ("  two\nlines\r\n and\ttabs  ", "two lines and tabs"),
        ("escape \x1b[2J\x07 bell \x7f\x85 del", "escape [2J bell del"),
        ("é ü 漢字 🙂", "é ü 漢字 🙂"),
    ],
)
def test_what_it_waits_for_becomes_one_clean_line(text: str, line: str) -> None:
    assert one_short_line(text) == line


def test_a_long_reason_is_cut_to_the_bound_with_an_ellipsis() -> None:
    line = ParkJob(SOON, "y" * 10_000).waiting_for
    assert len(line) == MAX_WAITING_FOR_CHARS and line.endswith("…")
    exact = "z" * MAX_WAITING_FOR_CHARS
    assert one_short_line(exact) == exact, "a reason at the bound is kept whole"
