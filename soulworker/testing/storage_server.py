"""A real HTTP server on 127.0.0.1 that behaves like Supabase Storage's download API.

It serves objects from files on disk with ``sendfile`` (constant memory, GB/s on loopback),
so the same server backs unit-sized tests and multi-GB benchmarks::

    with StorageServer(service_key=FAKE_SERVICE_JWT) as server:
        server.put_file("imports", f"{user_id}/export.zip", path)
        config = StorageConfig(base_url=server.url, service_key=FAKE_SERVICE_JWT)

What it imitates (docs/platform.md; supabase/storage error rendering):

- ``GET``/``HEAD`` ``/storage/v1/object/{bucket}/{name}`` and ``…/object/authenticated/…``.
- ``GET /storage/v1/bucket/{id}``: the bucket's details (``id``, ``name``, ``public``, …) with
  the same authentication, or HTTP 400 with ``{"statusCode": "404", "code": "NoSuchBucket",
  "error": "Bucket not found", …}`` (supabase/storage ``getBucket`` route, ``ERRORS.NoSuchBucket``).
  Faults for it are queued apart, with ``add_bucket_fault`` (only ``Respond``), so object
  faults never leak into bucket requests or the other way round.
- Auth: a legacy JWT must come as ``apikey`` *and* ``Authorization: Bearer`` (same value);
  an ``sb_secret_`` key as ``apikey``, with a Bearer accepted only if identical; a secret
  key from a browser-like User-Agent gets 401. A wrong JWT gets HTTP 400 with
  ``{"statusCode": "400", "code": "InvalidJWT", …}`` (or the older ``"403"``/``Unauthorized``
  body with ``invalid_jwt_style="legacy403"``); an unknown ``sb_`` key the gateway's 401.
- Errors are HTTP 400 with the real status as a string in the body: a missing object is
  ``{"statusCode": "404", "error": "not_found", "code": "NoSuchKey", …}``, a missing bucket
  ``NoSuchBucket``; a range past the end is 400 ``InvalidRange`` (or a plain 416 with
  ``range_not_satisfiable="http416"``).
- ``Range: bytes=N-`` (and ``N-M``, ``-K``) → 206 with ``Content-Range``; ``If-Range`` with a
  stale ETag (or date) → 200 and the full body. Every response carries ``ETag``,
  ``Last-Modified`` and ``Accept-Ranges: bytes``.

Faults are queued with ``add_fault`` and consumed, in order, by the next GET requests
(optionally only those for one object): ``Respond`` (any status and body: 429 ``SlowDown``,
500/502/503…), ``DropConnection`` (after N body bytes, optionally replacing the object
so the next request sees a new ETag), ``Stall`` (N bytes, then silence), ``SlowBody``,
``IgnoreRange`` (answer 200 to a range request), ``IgnoreIfRange`` (serve the range even
for a stale validator) and ``Chunked`` (no Content-Length, optionally cut short).

``throttle(bytes_per_second)`` paces every object body (each response on its own) to that rate,
as a real link from Storage to a worker does (tens of MB/s, not loopback's GB/s); faults apply
on top of it.

Every request is recorded (``requests``) with its headers; key material is replaced by
``<redacted:…>`` so a failing assertion never prints a key.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import json
import re
import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal
from urllib.parse import unquote, urlsplit

from soulworker.testing.loopback import LoopbackServer


def _b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


FAKE_SERVICE_JWT = (
    _b64url({"alg": "HS256", "typ": "JWT"})
    + "."
    + _b64url({"iss": "supabase", "ref": "fakeproject", "role": "service_role"})
    + ".fake-signature-not-checked"
)
"""A legacy ``service_role`` key shaped like the real ones (``eyJ…``, three parts)."""

FAKE_SECRET_KEY = "sb_secret_fakeFakeFakeFakeFake0123456789"  # noqa: S105 - a fake, for loopback
"""A new-style secret key."""

OBJECT_PREFIX = "/storage/v1/object/"
BUCKET_PREFIX = "/storage/v1/bucket/"
SENDFILE_PIECE_BYTES = 64 * 1024
"""Bytes per write when a fault paces the body (stalls, slow bodies, chunked encoding)."""

THROTTLE_PIECE_BYTES = 256 * 1024
"""Bytes per write of a throttled body: small enough that the pace is smooth at tens of MB/s."""

_BROWSER_UA = re.compile(r"Mozilla/|Chrome/|Safari/|Firefox/")


# Storage's answers for a missing bucket or object: HTTP 400, the real status in the body.
NO_SUCH_BUCKET = {
    "statusCode": "404",
    "code": "NoSuchBucket",
    "error": "Bucket not found",
    "message": "Bucket not found",
}
NO_SUCH_KEY = {
    "statusCode": "404",
    "code": "NoSuchKey",
    "error": "not_found",
    "message": "Object not found",
}


# -- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Respond:
    """Answer with ``status`` and ``body`` (a dict is sent as JSON) instead of the object."""

    status: int
    body: Mapping[str, Any] | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def slow_down(cls, retry_after: str | None = None) -> Respond:
        """Storage's overload answer: HTTP 429 with ``code: SlowDown``."""
        body = {
            "statusCode": "429",
            "code": "SlowDown",
            "error": "SlowDown",
            "message": "Please reduce your request rate.",
        }
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls(429, body, headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Respond:
        """A 5xx with an ``InternalError`` body (a gateway answers 502/503 the same way)."""
        body = {
            "statusCode": str(status),
            "code": "InternalError",
            "error": "internal",
            "message": "Internal Server Error",
        }
        return cls(status, body)


@dataclass(frozen=True)
class DropConnection:
    """Send ``after_bytes`` of the body, then close the connection (a premature end).

    With ``replace_with``, the object is replaced by that file right after the drop, so the
    next request sees a new ETag: "the object changed while the download was resuming".
    """

    after_bytes: int
    replace_with: Path | None = None


@dataclass(frozen=True)
class Stall:
    """Send ``after_bytes``, fall silent for ``seconds`` (a read timeout), then close."""

    after_bytes: int
    seconds: float


@dataclass(frozen=True)
class SlowBody:
    """Send the body in ``piece_bytes`` pieces with ``delay_seconds`` between them."""

    piece_bytes: int
    delay_seconds: float


@dataclass(frozen=True)
class IgnoreRange:
    """Answer a range request with 200 and the whole object, as a server without ranges does."""


@dataclass(frozen=True)
class IgnoreIfRange:
    """Honour ``Range`` but not ``If-Range``: a broken proxy that would splice two versions
    of a changed object together unless the client checks the ETag itself."""


@dataclass(frozen=True)
class Chunked:
    """Send the body with chunked transfer encoding: no Content-Length to trust.

    With ``hang_up_after``, stop after that many body bytes and close the connection without
    the terminating chunk (the client cannot know whether the body was complete).
    """

    hang_up_after: int | None = None


Fault = Respond | DropConnection | Stall | SlowBody | IgnoreRange | IgnoreIfRange | Chunked


# -- records --------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the server saw it. Key material in ``headers`` is redacted.

    ``auth`` is ``jwt``/``secret`` when the request was authenticated with that kind of key,
    else why not (``missing``, ``wrong_key``, ``browser``, ``bad_bearer``). ``bytes_sent``
    grows while the body is sent; it is final once ``StorageServer.wait_idle`` returned.
    """

    method: str
    path: str
    headers: dict[str, str]
    range: str | None
    if_range: str | None
    status: int = 0
    auth: str = "missing"
    fault: str | None = None
    bytes_sent: int = 0


@dataclass
class _Object:
    path: Path
    size: int
    etag: str
    last_modified: str
    content_type: str


@dataclass
class _QueuedFault:
    fault: Fault
    object_key: str | None


@dataclass
class _QueuedBucketFault:
    fault: Respond
    bucket: str | None


# -- the server -----------------------------------------------------------------------------


class StorageServer:
    """A fake Supabase Storage on ``127.0.0.1:<random port>``; use as a context manager."""

    def __init__(
        self,
        *,
        service_key: str | Sequence[str] = FAKE_SERVICE_JWT,
        invalid_jwt_style: Literal["invalid_jwt", "legacy403"] = "invalid_jwt",
        range_not_satisfiable: Literal["storage400", "http416"] = "storage400",
    ) -> None:
        keys = [service_key] if isinstance(service_key, str) else list(service_key)
        self._jwt_keys = {k for k in keys if not k.startswith("sb_")}
        self._secret_keys = {k for k in keys if k.startswith("sb_secret_")}
        self._all_keys = tuple(keys)
        self.invalid_jwt_style = invalid_jwt_style
        self.range_not_satisfiable = range_not_satisfiable
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0
        self._buckets: dict[str, dict[str, _Object]] = {}
        self._public_buckets: set[str] = set()
        self._faults: deque[_QueuedFault] = deque()
        self._bucket_faults: deque[_QueuedBucketFault] = deque()
        self._requests: list[RecordedRequest] = []
        self._generation = 0
        self._stopping = threading.Event()
        self._bytes_per_second: float | None = None
        self._scratch = Path(tempfile.mkdtemp(prefix="fake-storage-"))
        self._http: LoopbackServer | None = None

    # lifecycle

    def start(self) -> StorageServer:
        handler = type("_BoundHandler", (_Handler,), {"storage": self})
        # Wait for the handlers on close: they read the files close removes.
        self._http = LoopbackServer(handler, name="fake-storage", wait_for_handlers=True)
        return self

    def close(self) -> None:
        """Stop serving, release stalled responses, remove objects made by ``put_bytes``."""
        self._stopping.set()
        if self._http is not None:
            self._http.stop()
            self._http = None
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> StorageServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The base URL to use as ``SUPABASE_URL``: ``http://127.0.0.1:<port>``."""
        assert self._http is not None, "start the server first"
        return self._http.base_url

    # objects

    def create_bucket(self, bucket: str, *, public: bool = False) -> None:
        """Make ``bucket`` exist (``put_file`` does too); ``public`` is what the bucket
        endpoint reports, nothing else changes (objects always need the key here)."""
        with self._lock:
            self._buckets.setdefault(bucket, {})
            if public:
                self._public_buckets.add(bucket)
            else:
                self._public_buckets.discard(bucket)

    def put_file(
        self, bucket: str, name: str, path: Path, *, content_type: str = "application/zip"
    ) -> str:
        """Serve ``path`` (read at request time, never copied) as ``bucket/name``.

        Registering a name again replaces the object and gives it a new ETag. Returns the ETag.
        """
        stat = path.stat()
        with self._lock:
            self._generation += 1
            digest = hashlib.sha256(
                f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{self._generation}".encode()
            ).hexdigest()[:32]
            obj = _Object(
                path=path,
                size=stat.st_size,
                etag=f'"{digest}"',
                last_modified=email.utils.formatdate(stat.st_mtime + self._generation, usegmt=True),
                content_type=content_type,
            )
            self._buckets.setdefault(bucket, {})[name] = obj
            return obj.etag

    def put_bytes(
        self, bucket: str, name: str, data: bytes, *, content_type: str = "application/json"
    ) -> str:
        """Write ``data`` to the server's scratch directory and serve it as ``bucket/name``."""
        with self._lock:
            self._generation += 1
            target = self._scratch / f"object-{self._generation}"
        target.write_bytes(data)
        return self.put_file(bucket, name, target, content_type=content_type)

    def delete(self, bucket: str, name: str) -> None:
        with self._lock:
            self._buckets.get(bucket, {}).pop(name, None)

    def etag(self, bucket: str, name: str) -> str:
        with self._lock:
            return self._buckets[bucket][name].etag

    def throttle(self, bytes_per_second: float | None) -> None:
        """Pace each object body to ``bytes_per_second`` (``None``: as fast as loopback goes)."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        with self._lock:
            self._bytes_per_second = bytes_per_second

    # faults and records

    def add_fault(self, fault: Fault, *, times: int = 1, object_key: str | None = None) -> None:
        """Queue ``fault`` for the next ``times`` GET requests (for ``bucket/name`` only, if
        given). Faults are consumed in the order they were added."""
        with self._lock:
            for _ in range(times):
                self._faults.append(_QueuedFault(fault, object_key))

    def add_bucket_fault(
        self, fault: Respond, *, times: int = 1, bucket: str | None = None
    ) -> None:
        """Answer the next ``times`` bucket requests (for ``bucket`` only, if given) with
        ``fault`` instead of the bucket's details; consumed in the order they were added."""
        with self._lock:
            for _ in range(times):
                self._bucket_faults.append(_QueuedBucketFault(fault, bucket))

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests recorded so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being served (so ``bytes_sent`` is final)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout=timeout)

    def redact(self, value: str) -> str:
        """Replace any configured key inside ``value`` by a marker naming its kind."""
        for key in self._all_keys:
            if key and key in value:
                kind = "secret" if key.startswith("sb_") else "jwt"
                value = value.replace(key, f"<redacted:{kind}>")
        if value.startswith("eyJ") or value.startswith("sb_"):
            return "<redacted:unknown>"
        if value.startswith("Bearer ") and not value.startswith("Bearer <redacted"):
            return "Bearer <redacted:unknown>"
        return value

    # used by the handler

    def _begin(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)
            self._active += 1

    def _end(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def _next_fault(self, object_key: str) -> Fault | None:
        with self._lock:
            for queued in self._faults:
                if queued.object_key in (None, object_key):
                    self._faults.remove(queued)
                    return queued.fault
            return None

    def _next_bucket_fault(self, bucket: str) -> Respond | None:
        with self._lock:
            for queued in self._bucket_faults:
                if queued.bucket in (None, bucket):
                    self._bucket_faults.remove(queued)
                    return queued.fault
            return None

    def _bucket_details(self, bucket: str) -> dict[str, Any] | None:
        """The JSON the real ``GET /bucket/{id}`` returns, or ``None`` for no such bucket."""
        with self._lock:
            if bucket not in self._buckets:
                return None
            public = bucket in self._public_buckets
        created = "2026-01-01T00:00:00.000Z"
        return {
            "id": bucket,
            "name": bucket,
            "owner": "",
            "public": public,
            "file_size_limit": None,
            "allowed_mime_types": None,
            "created_at": created,
            "updated_at": created,
        }

    def _lookup(self, bucket: str, name: str) -> _Object | Literal["no_bucket"] | None:
        with self._lock:
            objects = self._buckets.get(bucket)
            if objects is None:
                return "no_bucket"
            return objects.get(name)

    def _authenticate(self, headers: Mapping[str, str]) -> tuple[str, tuple[int, Any] | None]:
        """``(auth, None)`` when accepted, ``(reason, (status, body))`` when refused."""
        apikey = headers.get("apikey")
        authorization = headers.get("authorization")
        user_agent = headers.get("user-agent", "")
        invalid_jwt: tuple[int, Any]
        if self.invalid_jwt_style == "legacy403":
            invalid_jwt = (
                400,
                {"statusCode": "403", "error": "Unauthorized", "message": "invalid signature"},
            )
        else:
            invalid_jwt = (
                400,
                {
                    "statusCode": "400",
                    "code": "InvalidJWT",
                    "error": "InvalidJWT",
                    "message": "invalid signature",
                },
            )
        if apikey is None:
            return "missing", (401, {"message": "No API key found in request"})
        if apikey in self._secret_keys:
            if _BROWSER_UA.search(user_agent):
                return "browser", (401, {"message": "Forbidden use of secret API key in browser"})
            if authorization is not None and authorization != f"Bearer {apikey}":
                return "bad_bearer", invalid_jwt
            return "secret", None
        if apikey in self._jwt_keys:
            if authorization != f"Bearer {apikey}":
                return "bad_bearer", invalid_jwt
            return "jwt", None
        if apikey.startswith("sb_"):
            return "wrong_key", (
                401,
                {"message": "Invalid API key", "hint": "Double check your Supabase API key."},
            )
        return "wrong_key", invalid_jwt


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection; HTTP/1.1 keep-alive like the real gateway."""

    protocol_version = "HTTP/1.1"
    storage: StorageServer  # set on the bound subclass made in ``StorageServer.start``
    _object_key: tuple[str, str] = ("", "")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; tests read ``StorageServer.requests``."""

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        storage = self.storage
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k: storage.redact(v) for k, v in headers.items()},
            range=headers.get("range"),
            if_range=headers.get("if-range"),
        )
        storage._begin(record)
        try:
            self._respond(record, headers, head=head)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        finally:
            storage._end()

    def _respond(self, record: RecordedRequest, headers: dict[str, str], *, head: bool) -> None:
        storage = self.storage
        route = urlsplit(self.path).path
        if route.startswith(BUCKET_PREFIX) and self.command == "GET":
            self._respond_bucket(record, headers, unquote(route[len(BUCKET_PREFIX) :]))
            return
        if not route.startswith(OBJECT_PREFIX):
            self._json(
                record,
                404,
                {
                    "statusCode": "404",
                    "error": "Not Found",
                    "message": f"Route {self.command}:{route} not found",
                },
            )
            return
        rest = route[len(OBJECT_PREFIX) :]
        rest = rest.removeprefix("authenticated/")
        quoted_bucket, _, quoted_name = rest.partition("/")
        bucket, name = unquote(quoted_bucket), unquote(quoted_name)
        self._object_key = (bucket, name)
        auth, refusal = storage._authenticate(headers)
        record.auth = auth
        if refusal is not None:
            self._json(record, *refusal)
            return
        fault = None if head else storage._next_fault(f"{bucket}/{name}")
        record.fault = type(fault).__name__ if fault is not None else None
        if isinstance(fault, Respond):
            self._send(record, fault.status, fault.body, fault.headers)
            return
        found = storage._lookup(bucket, name)
        if found == "no_bucket":
            self._json(record, 400, NO_SUCH_BUCKET)
            return
        if found is None:
            self._json(record, 400, NO_SUCH_KEY)
            return
        self._send_object(record, found, headers, fault, head=head)

    def _respond_bucket(
        self, record: RecordedRequest, headers: dict[str, str], bucket: str
    ) -> None:
        storage = self.storage
        auth, refusal = storage._authenticate(headers)
        record.auth = auth
        if refusal is not None:
            self._json(record, *refusal)
            return
        fault = storage._next_bucket_fault(bucket)
        record.fault = type(fault).__name__ if fault is not None else None
        if fault is not None:
            self._send(record, fault.status, fault.body, fault.headers)
            return
        details = storage._bucket_details(bucket)
        if details is None:
            self._json(record, 400, NO_SUCH_BUCKET)
            return
        self._json(record, 200, details)

    def _send_object(
        self,
        record: RecordedRequest,
        obj: _Object,
        headers: dict[str, str],
        fault: Fault | None,
        *,
        head: bool,
    ) -> None:
        start, end = 0, obj.size - 1
        status = 200
        range_header = headers.get("range")
        if_range = headers.get("if-range")
        honour_range = (
            range_header is not None
            and not isinstance(fault, IgnoreRange)
            and (
                if_range is None
                or if_range in (obj.etag, obj.last_modified)
                or isinstance(fault, IgnoreIfRange)
            )
        )
        if honour_range and range_header is not None:
            parsed = _parse_range(range_header, obj.size)
            if parsed == "unsatisfiable":
                if self.storage.range_not_satisfiable == "http416":
                    self._send(record, 416, b"", {"Content-Range": f"bytes */{obj.size}"})
                else:
                    self._json(
                        record,
                        400,
                        {
                            "statusCode": "416",
                            "code": "InvalidRange",
                            "error": "invalid_range",
                            "message": "invalid range provided",
                        },
                    )
                return
            if parsed is not None:
                start, end = parsed
                status = 206
        length = max(0, end - start + 1)
        response_headers = {
            "Content-Type": obj.content_type,
            "ETag": obj.etag,
            "Last-Modified": obj.last_modified,
            "Accept-Ranges": "bytes",
            "Cache-Control": "no-cache",
        }
        if status == 206:
            response_headers["Content-Range"] = f"bytes {start}-{end}/{obj.size}"
        chunked = isinstance(fault, Chunked)
        if chunked:
            response_headers["Transfer-Encoding"] = "chunked"
        else:
            response_headers["Content-Length"] = str(length)
        record.status = status
        self.send_response(status)
        for key, value in response_headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return
        with obj.path.open("rb") as body:
            self._send_body(record, body, start, length, fault)

    def _send_body(
        self, record: RecordedRequest, body: BinaryIO, start: int, length: int, fault: Fault | None
    ) -> None:
        connection: socket.socket = self.connection
        if isinstance(fault, DropConnection):
            self._sendfile(record, body, start, min(fault.after_bytes, length))
            self._hang_up()
            if fault.replace_with is not None:
                bucket, name = self._object_key
                self.storage.put_file(bucket, name, fault.replace_with)
            return
        if isinstance(fault, Stall):
            self._sendfile(record, body, start, min(fault.after_bytes, length))
            self.storage._stopping.wait(fault.seconds)
            self._hang_up()
            return
        if isinstance(fault, SlowBody):
            sent = 0
            while sent < length and not self.storage._stopping.is_set():
                piece = min(fault.piece_bytes, length - sent)
                self._sendfile(record, body, start + sent, piece)
                sent += piece
                self.storage._stopping.wait(fault.delay_seconds)
            return
        if isinstance(fault, Chunked):
            body.seek(start)
            remaining = length if fault.hang_up_after is None else min(fault.hang_up_after, length)
            while remaining > 0:
                data = body.read(min(SENDFILE_PIECE_BYTES, remaining))
                if not data:
                    break
                connection.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                record.bytes_sent += len(data)
                remaining -= len(data)
            if fault.hang_up_after is not None:
                self._hang_up()
            else:
                connection.sendall(b"0\r\n\r\n")
            return
        self._sendfile(record, body, start, length)

    def _sendfile(self, record: RecordedRequest, body: BinaryIO, offset: int, count: int) -> None:
        rate = self.storage._bytes_per_second
        if rate is None:
            if count > 0:
                record.bytes_sent += self.connection.sendfile(body, offset, count)
            return
        started = time.monotonic()
        sent = 0
        while sent < count and not self.storage._stopping.is_set():
            piece = min(THROTTLE_PIECE_BYTES, count - sent)
            done = self.connection.sendfile(body, offset + sent, piece)
            if not done:
                return  # the file is shorter than it was (replaced): as sendfile does
            sent += done
            record.bytes_sent += done
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                self.storage._stopping.wait(ahead)

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _json(self, record: RecordedRequest, status: int, body: Any) -> None:
        self._send(record, status, body, {})

    def _send(
        self,
        record: RecordedRequest,
        status: int,
        body: Mapping[str, Any] | bytes | None,
        headers: Mapping[str, str],
    ) -> None:
        payload = (
            b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        )
        record.status = status
        self.send_response(status)
        if isinstance(body, Mapping):
            self.send_header("Content-Type", "application/json; charset=utf-8")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
            record.bytes_sent += len(payload)


def _parse_range(value: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """One ``bytes=`` range → inclusive ``(start, end)``; ``None`` when it is not one we
    understand (the whole object is sent, as RFC 9110 allows)."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    if not match.group(1):
        suffix = int(match.group(2))
        if suffix == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    if start >= size:
        return "unsatisfiable"
    if end < start:
        return None
    return start, min(end, size - 1)
