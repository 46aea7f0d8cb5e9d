"""The Storage download against a real HTTP server that behaves like Supabase Storage."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx2
import pytest
import structlog
import tenacity

from soulworker import __version__
from soulworker.storage.download import (
    DEFAULT_MAX_EXPORT_BYTES,
    DISK_RESERVE_BYTES,
    DownloadResult,
    HandOver,
    ProgressCallback,
    ResumePoint,
    RetryPolicy,
    StorageConfig,
    StorageConfigError,
    download_export,
)
from soulworker.storage.errors import (
    ExportNotFound,
    ExportTooLarge,
    InvalidStoragePath,
    StorageAuthFailed,
    StorageBucketNotFound,
    StorageError,
    StorageUnavailable,
    WorkerDiskFull,
    WorkerDiskTooSmall,
)
from soulworker.storage.path import StoragePath, parse_storage_path
from soulworker.testing.storage_server import (
    FAKE_SECRET_KEY,
    FAKE_SERVICE_JWT,
    Chunked,
    DropConnection,
    IgnoreIfRange,
    IgnoreRange,
    Respond,
    Stall,
    StorageServer,
)

USER = uuid.UUID("6a0c5e7d-3b2f-4c1a-9e8d-7f6a5b4c3d2e")
OBJECT = f"{USER}/1700000000000-conversations.zip"
EXPORT_BYTES = 3 * 1024 * 1024 + 12345  # several write batches plus a partial one


class RecordingSleep:
    """Stands in for ``asyncio.sleep`` in the retry policy: records waits, never waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    async def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))


def _policy(sleep: RecordingSleep, **overrides: Any) -> RetryPolicy:
    """No backoff and no real sleeping, unless a test asks for something else."""
    return dataclasses.replace(RetryPolicy(wait=tenacity.wait_none(), sleep=sleep), **overrides)


@pytest.fixture
def export_file(tmp_path: Path) -> Path:
    path = tmp_path / "export.zip"
    path.write_bytes(os.urandom(EXPORT_BYTES))
    return path


@pytest.fixture
def other_file(tmp_path: Path) -> Path:
    path = tmp_path / "other.zip"
    path.write_bytes(os.urandom(EXPORT_BYTES))
    return path


@pytest.fixture
def server(export_file: Path) -> Iterator[StorageServer]:
    with StorageServer(service_key=FAKE_SERVICE_JWT) as running:
        running.put_file("imports", OBJECT, export_file)
        yield running


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    return tmp_path / "download" / "job.zip"


@pytest.fixture(autouse=True)
def _destination_dir(destination: Path) -> None:
    destination.parent.mkdir(mode=0o700)


def _path() -> StoragePath:
    return parse_storage_path(f"imports/{OBJECT}", user_id=USER)


async def _download(
    server: StorageServer,
    destination: Path,
    sleep: RecordingSleep,
    *,
    key: str = FAKE_SERVICE_JWT,
    timeout: httpx2.Timeout | None = None,
    path: StoragePath | None = None,
    retry: RetryPolicy | None = None,
    max_bytes: int = DEFAULT_MAX_EXPORT_BYTES,
    progress: ProgressCallback | None = None,
    disk_reserve_bytes: int = DISK_RESERVE_BYTES,
) -> DownloadResult:
    config = StorageConfig(
        base_url=server.url, service_key=key, timeout=timeout or httpx2.Timeout(5.0)
    )
    return await download_export(
        config,
        path or _path(),
        destination,
        retry=retry or _policy(sleep),
        max_bytes=max_bytes,
        progress=progress,
        disk_reserve_bytes=disk_reserve_bytes,
    )


# -- the happy path and authentication ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected_auth", "expected_authorization"),
    [
        (FAKE_SERVICE_JWT, "jwt", "Bearer <redacted:jwt>"),
        (FAKE_SECRET_KEY, "secret", None),
        ("opaque-self-hosted-token", "jwt", "Bearer <redacted:jwt>"),
    ],
)
async def test_downloads_with_each_kind_of_key(
    export_file: Path,
    destination: Path,
    sleep: RecordingSleep,
    key: str,
    expected_auth: str,
    expected_authorization: str | None,
) -> None:
    with StorageServer(service_key=key) as server:
        etag = server.put_file("imports", OBJECT, export_file)
        progress = Progress()
        result = await _download(server, destination, sleep, key=key, progress=progress)
        [request] = server.requests

    assert destination.read_bytes() == export_file.read_bytes()
    assert stat.S_IMODE(destination.stat().st_mode) == 0o600
    assert result.bytes_written == EXPORT_BYTES
    assert (result.attempts, result.resumes, result.restarts) == (1, 0, 0)
    assert result.etag == etag
    assert result.content_type == "application/zip"
    assert request.auth == expected_auth
    assert request.headers.get("authorization") == expected_authorization
    assert request.headers["apikey"].startswith("<redacted:")
    assert request.headers["user-agent"] == f"soulworker/{__version__}"
    assert request.path == f"/storage/v1/object/imports/{OBJECT}"
    assert request.range is None
    # Progress: starts at zero, never exceeds the total, ends exactly at the total.
    assert progress.calls[0] == (0, EXPORT_BYTES)
    assert progress.calls[-1] == (EXPORT_BYTES, EXPORT_BYTES)
    done = [d for d, _ in progress.calls]
    assert done == sorted(done) and 3 <= len(done) <= 3 + EXPORT_BYTES // (1024 * 1024)


@pytest.mark.parametrize(
    ("server_key", "client_key", "style"),
    [
        (FAKE_SERVICE_JWT, FAKE_SERVICE_JWT[:-3] + "xyz", "invalid_jwt"),
        (FAKE_SERVICE_JWT, FAKE_SERVICE_JWT[:-3] + "xyz", "legacy403"),
        (FAKE_SECRET_KEY, "sb_secret_someOtherProjectsKey123", "invalid_jwt"),
    ],
)
async def test_a_refused_key_is_permanent_and_never_echoed(
    export_file: Path,
    destination: Path,
    sleep: RecordingSleep,
    caplog: pytest.LogCaptureFixture,
    server_key: str,
    client_key: str,
    style: Literal["invalid_jwt", "legacy403"],
) -> None:
    caplog.set_level(logging.DEBUG)
    with (
        StorageServer(service_key=server_key, invalid_jwt_style=style) as server,
        structlog.testing.capture_logs() as logs,
    ):
        server.put_file("imports", OBJECT, export_file)
        with pytest.raises(StorageAuthFailed) as caught:
            await _download(server, destination, sleep, key=client_key)
        assert len(server.requests) == 1  # not retried

    error = caught.value
    assert error.code == "storage_auth_failed"
    assert error.permanent
    assert "SUPABASE_SERVICE_KEY" in error.message
    everything = " ".join(
        [str(error), repr(error), repr(error.__cause__), repr(error.__context__)]
        + [repr(event) for event in logs]
        + [caplog.text]
    )
    for secret in (client_key, server_key, client_key[:20]):
        assert secret not in everything


async def test_config_repr_never_shows_the_key() -> None:
    config = StorageConfig(base_url="https://project.supabase.co", service_key=FAKE_SECRET_KEY)
    assert FAKE_SECRET_KEY not in repr(config)
    assert config.auth_headers() == {
        "apikey": FAKE_SECRET_KEY,
        "User-Agent": f"soulworker/{__version__}",
    }
    jwt_config = StorageConfig(base_url="https://p.supabase.co/", service_key=FAKE_SERVICE_JWT)
    assert jwt_config.auth_headers()["Authorization"] == f"Bearer {FAKE_SERVICE_JWT}"
    assert (
        jwt_config.object_url(_path())
        == f"https://p.supabase.co/storage/v1/object/imports/{OBJECT}"
    )


@pytest.mark.parametrize(
    ("base_url", "key", "fragment"),
    [
        ("http://project.supabase.co", FAKE_SECRET_KEY, "must use https"),
        ("http://10.0.0.5:8000", FAKE_SECRET_KEY, "must use https"),
        ("ftp://project.supabase.co", FAKE_SECRET_KEY, "SUPABASE_URL"),
        ("https://user:pw@project.supabase.co", FAKE_SECRET_KEY, "user name or password"),
        ("https://project.supabase.co/?x=1", FAKE_SECRET_KEY, "query"),
        ("https://project.supabase.co:99999", FAKE_SECRET_KEY, "SUPABASE_URL"),
        ("", FAKE_SECRET_KEY, "empty"),
        ("https://project.supabase.co", "", "SUPABASE_SERVICE_KEY is empty"),
        ("https://project.supabase.co", "sb_publishable_abc", "publishable"),
        ("https://project.supabase.co", "sb_secret_abc def", "spaces"),
        (
            "https://project.supabase.co",
            "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.sig",  # {"role":"anon"}
            "anon key",
        ),
    ],
)
def test_unusable_configuration_is_refused_at_start(base_url: str, key: str, fragment: str) -> None:
    with pytest.raises(StorageConfigError, match=fragment) as caught:
        StorageConfig(base_url=base_url, service_key=key)
    if key:
        assert key not in str(caught.value)
    assert "pw@" not in str(caught.value)


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:54321", "http://localhost:8000", "http://[::1]:9000"]
)
def test_plain_http_is_allowed_on_loopback(base_url: str) -> None:
    assert StorageConfig(base_url=base_url, service_key=FAKE_SECRET_KEY).base_url == base_url


# -- resuming and restarting --------------------------------------------------------------------


async def test_resumes_after_a_dropped_connection(
    server: StorageServer, export_file: Path, destination: Path, sleep: RecordingSleep
) -> None:
    server.add_fault(DropConnection(after_bytes=1_500_000))
    progress = Progress()
    result = await _download(server, destination, sleep, progress=progress)

    assert destination.read_bytes() == export_file.read_bytes()
    first, second = server.requests
    assert first.range is None and first.fault == "DropConnection"
    assert second.range == "bytes=1500000-"
    assert second.if_range == server.etag("imports", OBJECT)
    assert second.status == 206
    assert (result.attempts, result.resumes, result.restarts) == (2, 1, 0)
    assert progress.calls[-1] == (EXPORT_BYTES, EXPORT_BYTES)


async def test_resumes_after_a_read_timeout(
    server: StorageServer, export_file: Path, destination: Path, sleep: RecordingSleep
) -> None:
    server.add_fault(Stall(after_bytes=500_000, seconds=10))
    timeout = httpx2.Timeout(5.0, read=0.3)
    result = await _download(server, destination, sleep, timeout=timeout)

    assert destination.read_bytes() == export_file.read_bytes()
    assert [r.range for r in server.requests] == [None, "bytes=500000-"]
    assert result.resumes == 1


async def test_every_failure_that_brings_bytes_resets_the_attempt_budget(
    server: StorageServer, export_file: Path, destination: Path, sleep: RecordingSleep
) -> None:
    server.add_fault(DropConnection(after_bytes=400_000), times=5)
    policy = _policy(sleep, max_attempts_without_progress=2)
    result = await _download(server, destination, sleep, retry=policy)

    assert destination.read_bytes() == export_file.read_bytes()
    assert result.attempts == 6
    assert [r.range for r in server.requests][1:] == [f"bytes={400_000 * n}-" for n in range(1, 6)]


async def test_a_changed_object_restarts_from_zero(
    server: StorageServer, other_file: Path, destination: Path, sleep: RecordingSleep
) -> None:
    old_etag = server.etag("imports", OBJECT)
    server.add_fault(DropConnection(after_bytes=1_000_000, replace_with=other_file))
    result = await _download(server, destination, sleep)

    assert destination.read_bytes() == other_file.read_bytes()
    second = server.requests[1]
    assert second.range == "bytes=1000000-" and second.if_range == old_etag
    assert second.status == 200  # If-Range did not match: the whole new object
    assert result.restarts == 1
    assert result.etag == server.etag("imports", OBJECT) != old_etag


async def test_a_server_that_ignores_range_makes_the_download_start_over(
    server: StorageServer, export_file: Path, destination: Path, sleep: RecordingSleep
) -> None:
    server.add_fault(DropConnection(after_bytes=1_000_000))
    server.add_fault(IgnoreRange())
    result = await _download(server, destination, sleep)

    assert destination.read_bytes() == export_file.read_bytes()
    assert server.requests[1].status == 200
    assert (result.attempts, result.restarts) == (2, 1)


async def test_a_206_for_a_different_etag_is_never_spliced_in(
    server: StorageServer, other_file: Path, destination: Path, sleep: RecordingSleep
) -> None:
    server.add_fault(DropConnection(after_bytes=1_000_000, replace_with=other_file))
    server.add_fault(IgnoreIfRange())
    result = await _download(server, destination, sleep)

    assert destination.read_bytes() == other_file.read_bytes()
    assert [r.status for r in server.requests] == [200, 206, 200]
    assert server.requests[2].range is None
    assert result.restarts == 1


async def test_all_bytes_then_a_lost_end_is_done_when_a_416_confirms_the_size(
    export_file: Path, destination: Path, sleep: RecordingSleep
) -> None:
    with StorageServer(range_not_satisfiable="http416") as server:
        server.put_file("imports", OBJECT, export_file)
        server.add_fault(Chunked(hang_up_after=EXPORT_BYTES))  # no length, no final chunk
        result = await _download(server, destination, sleep)
        requests = server.requests

    assert destination.read_bytes() == export_file.read_bytes()
    assert [(r.status, r.range) for r in requests] == [
        (200, None),
        (416, f"bytes={EXPORT_BYTES}-"),
    ]
    assert (result.attempts, result.restarts) == (2, 0)


async def test_a_416_without_a_size_to_compare_restarts_from_zero(
    server: StorageServer, export_file: Path, destination: Path, sleep: RecordingSleep
) -> None:
    # Storage's own 400 InvalidRange carries no size: the file cannot be proven complete.
    server.add_fault(Chunked(hang_up_after=EXPORT_BYTES))
    result = await _download(server, destination, sleep)

    assert destination.read_bytes() == export_file.read_bytes()
    assert [r.status for r in server.requests] == [200, 400, 200]
    assert result.restarts == 1


# -- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "cap", "expected_wait"),
    [("3", 60.0, 3.0), ("120", 5.0, 5.0), (None, 60.0, 0.25)],
)
async def test_slow_down_is_retried_honouring_retry_after_within_a_cap(
    server: StorageServer,
    export_file: Path,
    destination: Path,
    sleep: RecordingSleep,
    retry_after: str | None,
    cap: float,
    expected_wait: float,
) -> None:
    server.add_fault(Respond.slow_down(retry_after=retry_after))
    policy = _policy(sleep, retry_after_cap_seconds=cap, wait=tenacity.wait_fixed(0.25))
    result = await _download(server, destination, sleep, retry=policy)

    assert destination.read_bytes() == export_file.read_bytes()
    assert [r.status for r in server.requests] == [429, 200]
    assert sleep.waits == [expected_wait]
    assert result.attempts == 2


@pytest.mark.parametrize(
    "fault",
    [
        Respond.server_error(500),
        Respond.server_error(502),
        Respond.server_error(503),
        # Storage renders a database outage as HTTP 400 with the real status in the body.
        Respond(400, {"statusCode": "503", "code": "DatabaseConnectionLimit", "error": "x"}),
        Respond(400, {"statusCode": "544", "code": "DatabaseTimeout", "error": "x"}),
    ],
)
async def test_server_errors_that_outlast_the_retries_are_transient(
    server: StorageServer, destination: Path, sleep: RecordingSleep, fault: Respond
) -> None:
    server.add_fault(fault, times=10)
    policy = _policy(sleep, max_attempts_without_progress=4)
    with structlog.testing.capture_logs() as logs, pytest.raises(StorageUnavailable) as caught:
        await _download(server, destination, sleep, retry=policy)

    error = caught.value
    assert error.code == "storage_unavailable"
    assert not error.permanent
    assert error.attempts == 4
    assert len(server.requests) == 4
    assert len(sleep.waits) == 3
    assert "retried" not in error.message, "whether it is retried is the queue's to say"
    retries = [e for e in logs if e["event"] == "storage_download_retry"]
    assert [e["attempt"] for e in retries] == [1, 2, 3]
    assert all(e["reason"].startswith("http_5") for e in retries)
    assert FAKE_SERVICE_JWT not in repr(logs) + repr(error)


async def test_a_server_that_is_gone_is_transient(destination: Path, sleep: RecordingSleep) -> None:
    with StorageServer() as server:
        url = server.url
    config = StorageConfig(base_url=url, service_key=FAKE_SERVICE_JWT)
    with pytest.raises(StorageUnavailable) as caught:
        await download_export(
            config, _path(), destination, retry=_policy(sleep, max_attempts_without_progress=3)
        )
    assert caught.value.reason == "ConnectError"
    assert caught.value.attempts == 3


async def test_the_hard_attempt_cap_holds_even_with_progress(
    server: StorageServer, destination: Path, sleep: RecordingSleep
) -> None:
    server.add_fault(DropConnection(after_bytes=100_000), times=50)
    policy = _policy(sleep, max_attempts=5)
    with pytest.raises(StorageUnavailable):
        await _download(server, destination, sleep, retry=policy)
    assert len(server.requests) == 5


async def test_an_error_from_the_progress_callback_stops_at_once(
    server: StorageServer, destination: Path, sleep: RecordingSleep
) -> None:
    class LeaseGone(Exception):
        pass

    async def progress(done: int, total: int | None) -> None:
        if done > 0:
            raise LeaseGone

    with pytest.raises(LeaseGone):
        await _download(server, destination, sleep, progress=progress)
    assert len(server.requests) == 1


# -- permanent failures -------------------------------------------------------------------------


async def test_a_missing_object_is_export_not_found(
    destination: Path, sleep: RecordingSleep
) -> None:
    with StorageServer() as server:
        server.create_bucket("imports")
        with pytest.raises(ExportNotFound) as caught:
            await _download(server, destination, sleep)
        assert len(server.requests) == 1

    error = caught.value
    assert error.code == "export_not_found"
    assert error.permanent
    assert (error.http_status, error.storage_status, error.storage_code) == (400, 404, "NoSuchKey")
    assert "upload" in error.message


async def test_a_missing_bucket_is_a_configuration_error(
    destination: Path, sleep: RecordingSleep
) -> None:
    with StorageServer() as server, pytest.raises(StorageBucketNotFound) as caught:
        await _download(server, destination, sleep)
    assert caught.value.code == "storage_bucket_not_found"
    assert caught.value.permanent


@pytest.mark.parametrize(
    ("fault", "error_type", "code"),
    [
        (Respond(404, b"<html>Not Found</html>"), ExportNotFound, "export_not_found"),
        (
            Respond(400, {"statusCode": "403", "code": "AccessDenied", "error": "Unauthorized"}),
            StorageAuthFailed,
            "storage_auth_failed",
        ),
        (
            Respond(400, {"statusCode": "413", "code": "EntityTooLarge", "error": "x"}),
            ExportTooLarge,
            "export_too_large",
        ),
        (
            Respond(400, {"statusCode": "400", "code": "InvalidRequest", "error": "x"}),
            StorageError,
            "storage_request_failed",
        ),
        (Respond(409, None), StorageError, "storage_request_failed"),
        (
            Respond(302, None, {"Location": "https://elsewhere.example/steal"}),
            StorageError,
            "storage_request_failed",
        ),
    ],
)
async def test_other_refusals_are_permanent(
    server: StorageServer,
    destination: Path,
    sleep: RecordingSleep,
    fault: Respond,
    error_type: type[StorageError],
    code: str,
) -> None:
    server.add_fault(fault)
    with pytest.raises(error_type) as caught:
        await _download(server, destination, sleep)
    assert caught.value.code == code
    assert caught.value.permanent
    assert len(server.requests) == 1  # never retried, redirects never followed


@pytest.mark.parametrize("hostile_status", ["²", "9" * 5000])
async def test_a_status_in_the_body_that_is_no_number_is_read_past(
    server: StorageServer, destination: Path, sleep: RecordingSleep, hostile_status: str
) -> None:
    # "²" passes str.isdigit() and 5000 digits pass it too; int() refuses both, which once
    # crashed the download instead of failing the job with what Storage's code says.
    server.add_fault(Respond(400, {"statusCode": hostile_status, "code": "NoSuchKey"}))
    with pytest.raises(ExportNotFound) as caught:
        await _download(server, destination, sleep)
    assert caught.value.storage_status is None
    assert caught.value.storage_code == "NoSuchKey"
    assert len(server.requests) == 1


async def test_an_announced_size_over_the_limit_is_refused_before_reading(
    server: StorageServer, destination: Path, sleep: RecordingSleep
) -> None:
    with pytest.raises(ExportTooLarge) as caught:
        await _download(server, destination, sleep, max_bytes=1024 * 1024)
    assert caught.value.code == "export_too_large"
    assert "1.0 MiB" in caught.value.message
    assert destination.stat().st_size == 0
    assert len(server.requests) == 1


async def test_counted_bytes_over_the_limit_stop_the_download_early(
    tmp_path: Path, destination: Path, sleep: RecordingSleep
) -> None:
    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(32 * 1024 * 1024))
    limit = 1024 * 1024
    with StorageServer() as server:
        server.put_file("imports", OBJECT, big)
        server.add_fault(Chunked())  # no Content-Length: only counting can catch it
        with pytest.raises(ExportTooLarge):
            await _download(server, destination, sleep, max_bytes=limit)
        assert server.wait_idle()
        [request] = server.requests

    assert destination.stat().st_size <= limit
    # The client hung up long before the server could push the whole object.
    assert request.bytes_sent < 24 * 1024 * 1024


async def test_an_invalid_storage_path_makes_no_request(
    server: StorageServer, destination: Path, sleep: RecordingSleep
) -> None:
    for raw in (f"imports/{USER}/../{uuid.uuid4()}/x.zip", f"/imports/{OBJECT}", "imports/%2e"):
        with pytest.raises(InvalidStoragePath):
            await _download(server, destination, sleep, path=parse_storage_path(raw, user_id=USER))
    with pytest.raises(InvalidStoragePath):
        StoragePath("imports", f"{USER}/../x")
    assert server.requests == []


# -- the fake itself ----------------------------------------------------------------------------


async def test_fake_serves_the_authenticated_route_head_and_refuses_browsers(
    export_file: Path,
) -> None:
    with StorageServer(service_key=FAKE_SECRET_KEY) as server:
        server.put_file("imports", OBJECT, export_file)
        async with httpx2.AsyncClient(base_url=server.url) as client:
            authed = await client.get(
                f"/storage/v1/object/authenticated/imports/{OBJECT}",
                headers={"apikey": FAKE_SECRET_KEY, "Range": "bytes=-10"},
            )
            head = await client.head(
                f"/storage/v1/object/imports/{OBJECT}", headers={"apikey": FAKE_SECRET_KEY}
            )
            browser = await client.get(
                f"/storage/v1/object/imports/{OBJECT}",
                headers={"apikey": FAKE_SECRET_KEY, "User-Agent": "Mozilla/5.0 (X11)"},
            )
            bearer = await client.get(
                f"/storage/v1/object/imports/{OBJECT}",
                headers={"apikey": FAKE_SECRET_KEY, "Authorization": "Bearer something-else"},
            )
    assert authed.status_code == 206
    assert authed.content == export_file.read_bytes()[-10:]
    assert (
        authed.headers["content-range"]
        == f"bytes {EXPORT_BYTES - 10}-{EXPORT_BYTES - 1}/{EXPORT_BYTES}"
    )
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(EXPORT_BYTES)
    assert head.headers["accept-ranges"] == "bytes"
    assert browser.status_code == 401
    assert bearer.status_code == 400 and bearer.json()["code"] == "InvalidJWT"


# -- free disk, checked before the body is read -------------------------------------------------


async def test_an_export_that_fits_with_the_reserve_to_spare_is_downloaded(
    server: StorageServer, export_file: Path, destination: Path, sleep: RecordingSleep
) -> None:
    # The worst legal case on this disk: a reserve that leaves only a little slack (other
    # processes write meanwhile, so not to the byte).
    free = shutil.disk_usage(destination.parent).free
    reserve = free - EXPORT_BYTES - 64 * 1024 * 1024
    await _download(server, destination, sleep, disk_reserve_bytes=reserve)
    assert destination.read_bytes() == export_file.read_bytes()


async def test_an_export_without_room_on_the_disk_now_is_transient_and_not_downloaded(
    server: StorageServer, destination: Path, sleep: RecordingSleep
) -> None:
    free = shutil.disk_usage(destination.parent).free
    with pytest.raises(WorkerDiskFull) as caught:
        await _download(server, destination, sleep, disk_reserve_bytes=free)
    assert not caught.value.permanent
    assert caught.value.code == "worker_disk_full"
    assert "not have enough free disk space" in caught.value.message
    assert len(server.requests) == 1  # refused on the headers, not retried
    assert destination.stat().st_size == 0, "not a byte of the body was written"


async def test_an_export_larger_than_the_whole_disk_is_permanent(
    server: StorageServer, destination: Path, sleep: RecordingSleep
) -> None:
    disk = shutil.disk_usage(destination.parent).total
    with pytest.raises(WorkerDiskTooSmall) as caught:
        await _download(server, destination, sleep, disk_reserve_bytes=disk)
    assert caught.value.permanent
    assert caught.value.code == "worker_disk_too_small"
    assert destination.stat().st_size == 0


# -- stopping to hand over, and going on from a hand-over ------------------------------------


async def test_a_hand_over_writes_out_what_arrived_and_says_where_it_stands(
    server: StorageServer, export_file: Path, destination: Path, sleep: RecordingSleep
) -> None:
    async def progress(done: int, total: int | None) -> None:
        if done >= 2 * 1024 * 1024:
            raise HandOver()

    with pytest.raises(HandOver) as caught:
        await _download(server, destination, sleep, progress=progress)
    point = caught.value.resume
    assert point is not None
    data = export_file.read_bytes()
    assert point.offset >= 2 * 1024 * 1024
    assert destination.read_bytes() == data[: point.offset]  # every byte received, written
    assert (point.total, point.etag) == (EXPORT_BYTES, server.etag("imports", OBJECT))
    assert (point.attempts, point.resumes, point.restarts) == (1, 0, 0)


async def test_going_on_from_a_resume_point_asks_only_for_the_rest(
    server: StorageServer, export_file: Path, destination: Path, sleep: RecordingSleep
) -> None:
    data = export_file.read_bytes()
    offset = 1024 * 1024 + 3
    # Bytes past the offset (a batch that was in flight) are cut before the rest is written.
    destination.write_bytes(data[:offset] + b"junk past the resume point")
    etag = server.etag("imports", OBJECT)
    point = ResumePoint(offset, EXPORT_BYTES, etag, None, "application/zip", 1, 0, 0)

    result = await download_export(
        StorageConfig(base_url=server.url, service_key=FAKE_SERVICE_JWT),
        _path(),
        destination,
        retry=_policy(sleep),
        resume_from=point,
    )

    assert destination.read_bytes() == data
    assert (result.attempts, result.resumes, result.restarts) == (2, 1, 0)
    [request] = server.requests
    assert (request.range, request.if_range) == (f"bytes={offset}-", etag)


async def test_going_on_from_a_point_of_an_older_object_starts_over(
    server: StorageServer, other_file: Path, destination: Path, sleep: RecordingSleep
) -> None:
    stale = b"x" * 4096
    destination.write_bytes(stale)
    point = ResumePoint(len(stale), EXPORT_BYTES, '"an-older-etag"', None, None, 1, 0, 0)
    server.put_file("imports", OBJECT, other_file)

    result = await download_export(
        StorageConfig(base_url=server.url, service_key=FAKE_SERVICE_JWT),
        _path(),
        destination,
        retry=_policy(sleep),
        resume_from=point,
    )

    assert destination.read_bytes() == other_file.read_bytes()  # never stitched
    assert result.restarts == 1


async def test_going_on_from_a_point_past_the_file_s_end_is_refused(
    server: StorageServer, destination: Path, sleep: RecordingSleep
) -> None:
    destination.write_bytes(b"short")
    point = ResumePoint(1024, EXPORT_BYTES, '"e"', None, None, 1, 0, 0)
    with pytest.raises(ValueError, match="shorter"):
        await download_export(
            StorageConfig(base_url=server.url, service_key=FAKE_SERVICE_JWT),
            _path(),
            destination,
            retry=_policy(sleep),
            resume_from=point,
        )
    assert server.requests == []
