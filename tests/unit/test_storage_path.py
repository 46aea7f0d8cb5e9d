"""storage_path validation: what is accepted, what is refused and why, and URL confinement."""

from __future__ import annotations

import uuid
from urllib.parse import unquote

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from soulworker.storage.errors import InvalidStoragePath
from soulworker.storage.path import (
    MAX_OBJECT_CHARS,
    OBJECT_URL_PREFIX,
    StoragePath,
    parse_storage_path,
)

USER = uuid.UUID("0b7f2a4e-9c1d-4e57-8a3b-5f6d7e8f9a0b")
OTHER_USER = uuid.UUID("11111111-2222-4333-8444-555555555555")


@pytest.mark.parametrize(
    "name",
    [
        "1700000000000-conversations.zip",
        "nested/dir/export.json",
        ".hidden",
        "...",  # three dots is a name, not a dot segment
        "UPPER_lower-09.ZIP",
    ],
)
def test_accepts_paths_inside_the_users_folder(name: str) -> None:
    raw = f"imports/{USER}/{name}"
    path = parse_storage_path(raw, user_id=USER)
    assert path.bucket == "imports"
    assert path.object_name == f"{USER}/{name}"
    assert str(path) == raw


def test_user_id_is_compared_in_canonical_lowercase_form() -> None:
    raw = f"imports/{USER}/x.zip"
    assert parse_storage_path(raw, user_id=str(USER).upper()).object_name == f"{USER}/x.zip"
    assert parse_storage_path(raw, user_id=USER.hex).bucket == "imports"


def test_other_allowed_buckets_and_no_user_folder_when_disabled() -> None:
    path = parse_storage_path(
        "user-imports/anything_here.json",
        user_id=USER,
        allowed_buckets={"imports", "user-imports"},
        require_user_folder=False,
    )
    assert (path.bucket, path.object_name) == ("user-imports", "anything_here.json")


U = str(USER)
LONG_NAME = "a" * 5000


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "missing"),
        (42, "missing"),
        ("", "empty"),
        ("   ", "empty"),
        (f"/imports/{U}/x.zip", "must not start with '/'"),
        (f"imports//{U}/x.zip", "empty path segment"),
        (f"imports/{U}//x.zip", "empty path segment"),
        (f"imports/{U}/x.zip/", "empty path segment"),
        ("imports", "must be 'bucket/object'"),
        ("imports/", "must be 'bucket/object'"),
        (f"imports/{U}/../{OTHER_USER}/x.zip", "'.' or '..' segment"),
        (f"imports/{U}/./x.zip", "'.' or '..' segment"),
        (f"imports/{U}/..", "'.' or '..' segment"),
        (f"imports/{U}/%2e%2e/x.zip", "'%'"),
        (f"imports/{U}/x%2Fy.zip", "'%'"),
        (f"imports/{U}\\..\\x.zip", "backslash"),
        (f"imports/{U}/my export.zip", "whitespace"),
        (f"imports/{U}/x.zip\n", "whitespace"),
        (f"imports/{U}/a\tb", "whitespace"),
        (f"imports/{U}/a\x00b", "control character"),
        (f"imports/{U}/a\x1bb", "control character"),
        (f"imports/{U}/a\x7fb", "control character"),
        (f"imports/{U}/\u00e9t\u00e9.zip", "non-ASCII"),
        (f"imports/{U}/a\u2215b", "non-ASCII"),  # DIVISION SLASH looks like '/'
        (f"imports/{U}/a\uff0e\uff0e", "non-ASCII"),  # fullwidth dots
        (f"https://evil.example/imports/{U}/x.zip", "not a URL"),
        (f"HTTP:imports/{U}/x.zip", "not a URL"),
        (f"imports/{U}/x.zip?download=1", "'?'"),
        (f"imports/{U}/x.zip#frag", "'#'"),
        (f"imports/{U}/x:y", "':'"),
        (f"Imports/{U}/x.zip", "bucket name may contain only"),
        (f"imp.orts/{U}/x.zip", "bucket name may contain only"),
        (f"{'b' * 64}/{U}/x.zip", "bucket name is too long"),
        (f"user-exports/{U}/x.zip", "bucket 'user-exports' is not one this worker may read"),
        (f"imports/{OTHER_USER}/x.zip", "user's own"),
        (f"imports/{U}", "user's own"),
        (f"imports/{U.upper()}/x.zip", "user's own"),
        (f"imports/x/{U}/y.zip", "user's own"),
        (f"imports/{U}.zip", "user's own"),
        (f"imports/{U}/{'n' * MAX_OBJECT_CHARS}", "object name is too long"),
        (f"imports/{U}/{LONG_NAME}", "too long (5045 characters"),
    ],
)
def test_refuses_with_a_clear_permanent_error(raw: object, reason: str) -> None:
    with pytest.raises(InvalidStoragePath) as caught:
        parse_storage_path(raw, user_id=USER)
    error = caught.value
    assert error.code == "invalid_storage_path"
    assert error.permanent
    assert reason in error.message
    assert len(error.message) < 200
    # Never echo the input: not another user's folder, not a huge or hostile name.
    assert str(OTHER_USER) not in error.message
    assert "evil.example" not in error.message
    assert "nnnnnnnnnn" not in error.message


def test_a_user_id_that_is_not_a_uuid_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="badly formed"):
        parse_storage_path(f"imports/{U}/x.zip", user_id="not-a-uuid")


@pytest.mark.parametrize(
    ("bucket", "object_name"),
    [
        ("imports", "../x"),
        ("imports", "a//b"),
        ("imports", "a/%2e%2e"),
        ("imports", ""),
        ("Imports", "a"),
        ("", "a"),
        ("imports", "a/b\\c"),
        ("imports", "a/\u00e9"),
    ],
)
def test_storage_path_cannot_be_built_from_unsafe_parts(bucket: str, object_name: str) -> None:
    with pytest.raises(InvalidStoragePath):
        StoragePath(bucket, object_name)


def test_url_path_is_built_from_the_validated_parts() -> None:
    path = parse_storage_path(f"imports/{U}/17-conversations.zip", user_id=USER)
    assert path.url_path() == f"/storage/v1/object/imports/{U}/17-conversations.zip"
    assert path.segments == (U, "17-conversations.zip")


def _assert_confined(path: StoragePath) -> None:
    """The URL stays under the bucket's prefix, also after an HTTP client normalises it."""
    prefix = f"{OBJECT_URL_PREFIX}{path.bucket}/"
    url_path = path.url_path()
    assert url_path.startswith(prefix)
    normalised = httpx2.URL("https://project.supabase.co" + url_path).raw_path.decode()
    assert normalised == url_path
    tail = url_path[len(prefix) :]
    assert all(segment not in ("", ".", "..") for segment in tail.split("/"))
    assert unquote(tail) == path.object_name


# Text drawn mostly from the characters that matter for escapes, plus anything at all.
_TRICKY = st.text(alphabet="ab09._-/%\\ :?#\x00\u2215\uff0e", max_size=40)


@given(raw=st.one_of(_TRICKY, st.text(max_size=60), _TRICKY.map(lambda t: "imports/" + t)))
def test_any_accepted_path_stays_under_its_bucket(raw: str) -> None:
    try:
        path = parse_storage_path(raw, user_id=USER, require_user_folder=False)
    except InvalidStoragePath:
        return
    _assert_confined(path)


_SEGMENT = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)


@given(segments=st.lists(_SEGMENT, min_size=1, max_size=6))
def test_every_well_formed_path_is_accepted_and_round_trips(segments: list[str]) -> None:
    raw = "/".join(["imports", U, *segments])
    path = parse_storage_path(raw, user_id=USER)
    assert str(path) == raw
    _assert_confined(path)
