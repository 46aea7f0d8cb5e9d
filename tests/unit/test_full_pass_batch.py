"""The pure parts of the batch full pass: custom ids, the checkpoint marker read back from a row
an operator may have edited, and the polling schedule (docs/full-pass-batches.md)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from soulworker.llm.batches import CUSTOM_ID
from soulworker.pipeline.full_pass_batch import (
    NONCE_BYTES,
    BatchMarker,
    batch_mode,
    custom_id,
    number_of,
    poll_delay,
)
from soulworker.settings import Settings

NONCE = "0123456789abcdef"
assert len(NONCE) == 2 * NONCE_BYTES


def settings(**env: str) -> Settings:
    return Settings.from_env({"DATABASE_URL": "postgresql://x@localhost/db", **env})


def test_custom_ids_are_valid_for_the_api_and_read_back() -> None:
    for number in (0, 7, 99_999):
        identifier = custom_id(NONCE, number)
        assert CUSTOM_ID.match(identifier)
        assert number_of(NONCE, identifier) == number


@pytest.mark.parametrize(
    "identifier",
    [
        "fedcba9876543210-3",
        f"{NONCE}3",
        f"{NONCE}-",
        f"{NONCE}--3",
        f"{NONCE}-3a",
        "3",
        "",
        f"{NONCE}-²",  # a digit to str.isdigit, not to int()
        f"{NONCE}-" + "9" * 5000,  # past int()'s 4,300-digit limit
    ],
)
def test_another_jobs_custom_id_is_not_ours(identifier: str) -> None:
    assert number_of(NONCE, identifier) is None


def test_the_marker_round_trips() -> None:
    marker = BatchMarker(NONCE, datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC), (0, 1, 5))
    assert BatchMarker.from_json(marker.to_json()) == marker
    adopted = BatchMarker(NONCE, marker.marked_at, marker.numbers, "msgbatch_01")
    assert BatchMarker.from_json(adopted.to_json()) == adopted


@pytest.mark.parametrize(
    "entry",
    [
        None,
        "msgbatch_01",
        [],
        {},
        {"nonce": NONCE, "numbers": [1]},
        {"nonce": NONCE, "marked_at": "yesterday", "numbers": [1]},
        {"nonce": NONCE, "marked_at": "2026-12-07T00:00:00", "numbers": [1]},
        {"nonce": NONCE, "marked_at": "2026-12-07T00:00:00+00:00", "numbers": "1,2"},
        {"nonce": NONCE, "marked_at": "2026-12-07T00:00:00+00:00", "numbers": [{"n": 1}]},
        {"nonce": 7, "marked_at": "2026-12-07T00:00:00+00:00", "numbers": [1]},
        {
            "nonce": NONCE,
            "marked_at": "2026-12-07T00:00:00+00:00",
            "numbers": [1],
            "batch_id": ["x"],
        },
    ],
)
def test_an_entry_that_is_not_a_marker_reads_as_none(entry: Any) -> None:
    assert BatchMarker.from_json(entry) is None


def test_the_poll_wait_grows_with_the_batch_age_within_bounds() -> None:
    s = settings()
    waits = [
        poll_delay(s, datetime.timedelta(minutes=minutes)).total_seconds()
        for minutes in (0, 5, 10, 30, 60, 600, 24 * 60)
    ]
    assert waits == sorted(waits)
    assert waits[0] == waits[1] == 30
    assert waits[2] == 60
    assert waits[-1] == waits[-2] == 300
    # Bounds set the wrong way round never make a wait below the minimum.
    odd = settings(SOULWORKER_BATCH_POLL_MIN_SECONDS="60", SOULWORKER_BATCH_POLL_MAX_SECONDS="1")
    assert poll_delay(odd, datetime.timedelta(hours=5)).total_seconds() == 60


def test_modes() -> None:
    assert batch_mode(settings())
    assert batch_mode(settings(SOULWORKER_FULL_PASS_MODE="batch"))
    assert not batch_mode(settings(SOULWORKER_FULL_PASS_MODE="direct"))
