"""A tiny stand-in for Supabase Storage that serves one local file, for ``soulworker import``.

The local import runs the real download stage, so the export must come over HTTP exactly as it
would from Supabase: ``GET {url}/storage/v1/object/{bucket}/{object}`` with the ``apikey``
header, ``Range``/``If-Range`` resumes, and errors as HTTP 400 with the real status in a JSON
body (``{"statusCode": "404", "error": "not_found", …}``). This server does just that for one
object and nothing else:

* it listens on 127.0.0.1 only, on a free port;
* it answers only the one object path, and only to the random key it was made with, so another
  local process cannot read the export through it;
* the file is streamed with ``sendfile`` from disk, never read into memory (exports reach GB);
* the ETag comes from the file's size and modification time, so a file changed during the run
  makes the download start over instead of stitching two versions together.

It runs in a thread of its own: the download stage's client and this server then never compete
for the event loop.
"""

from __future__ import annotations

import email.utils
import hmac
import json
import os
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from soulworker.storage.path import StoragePath

BIND_HOST = "127.0.0.1"
"""Loopback only: the export is personal data and this server has no TLS."""

SHUTDOWN_POLL_SECONDS = 0.05
"""How often the serving thread checks for shutdown; short so the command exits at once."""

KEY_PREFIX = "sb_secret_"
"""The key looks like Supabase's new secret keys, so the client sends it in ``apikey`` only."""

_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


def new_service_key() -> str:
    """A random key for one run; it never leaves this process and its children."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


class LocalStorageServer:
    """Serves ``file`` as ``storage_path`` at :attr:`url` to requests carrying ``service_key``.

    Use as a context manager, or :meth:`start` and :meth:`stop`.
    """

    def __init__(self, file: Path, storage_path: StoragePath, service_key: str) -> None:
        self.file = file
        self.request_path = storage_path.url_path()
        self.service_key = service_key
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL to use as ``SUPABASE_URL``."""
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LocalStorageServer:
        server = ThreadingHTTPServer((BIND_HOST, 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="local-storage",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> LocalStorageServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def authorized(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(
            presented.encode(), self.service_key.encode()
        )


def _storage_error(status: str, error: str, message: str) -> dict[str, str]:
    """Supabase's error body: the real status is a string inside, the HTTP status is 400."""
    return {"statusCode": status, "error": error, "message": message}


def _make_handler(storage: LocalStorageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Supabase; every answer has a length

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: request lines would only clutter the command's progress display."""

        def do_GET(self) -> None:
            if not storage.authorized(self.headers.get("apikey")):
                self._json(400, _storage_error("403", "Unauthorized", "Invalid key"))
                return
            if self.path != storage.request_path:
                self._json(400, _storage_error("404", "not_found", "Object not found"))
                return
            try:
                handle = storage.file.open("rb")
            except OSError:
                self._json(400, _storage_error("404", "not_found", "Object not found"))
                return
            with handle:
                self._send_file(handle)

        def _send_file(self, handle: Any) -> None:
            stat = os.fstat(handle.fileno())
            size = stat.st_size
            etag = f'"{size:x}-{stat.st_mtime_ns:x}"'
            modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
            start, end = 0, size - 1
            status = 200
            wanted = _RANGE_RE.match(self.headers.get("Range", "").strip())
            if_range = self.headers.get("If-Range")
            if wanted and (if_range is None or if_range in (etag, modified)):
                start = int(wanted.group(1))
                if wanted.group(2):
                    end = min(int(wanted.group(2)), size - 1)
                if start >= size or start > end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            length = max(0, end - start + 1)
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            try:
                if length:
                    self.connection.sendfile(handle, start, length)
            except (BrokenPipeError, ConnectionResetError):
                # The client hung up (it will resume with Range); nothing to clean up here.
                self.close_connection = True

        def _json(self, status: int, payload: dict[str, str]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
