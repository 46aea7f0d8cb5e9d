"""A threaded HTTP server on 127.0.0.1 at a free port, served from a daemon thread: the
lifecycle every fake service of the test kit shares (Storage, the Messages API, embeddings)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SHUTDOWN_POLL_SECONDS = 0.02
"""How often ``serve_forever`` checks for shutdown: short, so stopping a server is instant."""


class LoopbackServer:
    """Start serving ``handler`` at once; :meth:`stop` shuts down and joins the thread.

    ``wait_for_handlers=False`` lets close return while keep-alive connections still idle in
    their handler threads (the SDK clients keep them open); a fake that must know its handlers
    are done before it cleans up (Storage removes its files) waits for them.
    """

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        *,
        name: str,
        wait_for_handlers: bool = False,
    ) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = wait_for_handlers
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name=name,
            daemon=True,
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
