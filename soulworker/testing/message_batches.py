"""The Message Batches part of the fake Messages API (``FakeMessagesAPI``).

Endpoints, in the real API's shapes (what the ``anthropic`` SDK 2.x reads):

* ``POST /v1/messages/batches`` ``{"requests": [{"custom_id", "params"}]}``: checks the custom
  ids (``^[a-zA-Z0-9_-]{1,64}$``, unique in the batch) and answers the batch, ``in_progress``.
* ``GET /v1/messages/batches/{id}``: the batch with ``processing_status`` and
  ``request_counts``; ``results_url`` once it has ended.
* ``GET /v1/messages/batches/{id}/results``: one JSON line per request, in an order that is
  not the requests' (shuffled), each ``succeeded`` / ``errored`` / ``canceled`` / ``expired``.
* ``POST /v1/messages/batches/{id}/cancel``: ``canceling``; it ends at the next look, with the
  requests not yet answered ``canceled``.
* ``GET /v1/messages/batches``: newest first, paginated with ``limit``, ``after_id`` (older
  than) and ``before_id`` (newer than).

When a batch ends: at the first look (retrieve, list or results) at or after
``FakeMessagesAPI.batch_seconds`` past its creation, unless ``hold_batches`` is set (then it
waits for ``end_held_batches``), or at once on ``expire``. Each request is then answered like a
direct one, through the same faults: a fault scripted with ``path=BATCH_REQUEST_PATH`` applies
to batch requests only; ``error`` faults make an ``errored`` result, and the kinds ``expired``
and ``canceled`` those results. Every batch request is recorded with that path, so
``message_requests`` still lists the direct calls alone.
"""

from __future__ import annotations

import datetime
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from soulworker.testing.messages_api import FakeMessagesAPI, RecordedRequest

BATCHES_PATH = "/v1/messages/batches"
# The path batch requests are recorded and matched by (faults scripted for batch requests).
BATCH_REQUEST_PATH = "batch:/v1/messages"
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
BATCH_LIFETIME = datetime.timedelta(hours=24)
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 20


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _iso(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@dataclass
class FakeBatch:
    """One batch as the fake holds it."""

    id: str
    requests: list[tuple[str, RecordedRequest]]  # (custom_id, the request as recorded)
    created_at: datetime.datetime
    expires_at: datetime.datetime
    status: str = "in_progress"
    ended_at: datetime.datetime | None = None
    cancel_initiated_at: datetime.datetime | None = None
    # custom_id -> the result line's "result" object, filled when the batch ends.
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    results_fetched: int = 0

    @property
    def custom_ids(self) -> list[str]:
        return [custom_id for custom_id, _ in self.requests]

    def counts(self) -> dict[str, int]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if self.status != "ended":
            counts["processing"] = len(self.requests)
            return counts
        for result in self.results.values():
            counts[result["type"]] += 1
        return counts

    def to_json(self, base_url: str) -> dict[str, Any]:
        ended = self.status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": self.counts(),
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "ended_at": _iso(self.ended_at),
            "cancel_initiated_at": _iso(self.cancel_initiated_at),
            "archived_at": None,
            "results_url": f"{base_url}{BATCHES_PATH}/{self.id}/results" if ended else None,
        }


class BatchBook:
    """The fake's batches and what tests script about them (see the module docstring)."""

    def __init__(self, api: FakeMessagesAPI) -> None:
        self._api = api
        self._lock = threading.Lock()
        self._batches: list[FakeBatch] = []  # oldest first
        self.batch_seconds = 0.0
        self.hold_batches = False
        # Called with the batch once it is stored, before the create is answered: a test can
        # kill the client there (a crash between create and saving the id).
        self.on_create: Callable[[FakeBatch], None] | None = None

    # --- inspection and control

    @property
    def batches(self) -> list[FakeBatch]:
        with self._lock:
            return list(self._batches)

    def get(self, batch_id: str) -> FakeBatch | None:
        with self._lock:
            return next((b for b in self._batches if b.id == batch_id), None)

    def end_held_batches(self) -> None:
        """End every batch still in progress (``hold_batches`` is left as it is)."""
        for batch in self.batches:
            self._end(batch, force=True)

    def age(self, batch_id: str, by: datetime.timedelta) -> None:
        """Make ``batch_id`` look ``by`` older (its creation and expiry earlier), still running:
        a batch the API never ended at its expiry."""
        batch = self.get(batch_id)
        assert batch is not None
        with self._lock:
            batch.created_at -= by
            batch.expires_at -= by

    def expire(self, batch_id: str) -> None:
        """End ``batch_id`` as the API does at 24 hours: what is not answered yet expires."""
        batch = self.get(batch_id)
        assert batch is not None
        with self._lock:
            if batch.status == "ended":
                return
            batch.expires_at = _now()
            self._finish(batch, {"type": "expired"})

    # --- endpoints

    def handle(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> Any:
        """``(status, payload)``; a ``bytes`` payload is sent as JSON lines."""
        rest = path[len(BATCHES_PATH) :].strip("/")
        parts = rest.split("/") if rest else []
        if method == "POST" and not parts:
            return self._create(body)
        if method == "GET" and not parts:
            return self._list(query)
        batch = self.get(parts[0]) if parts else None
        if batch is None:
            return 404, _error("not_found_error", "batch not found")
        if method == "GET" and len(parts) == 1:
            self._end(batch)
            return 200, batch.to_json(self._api.base_url)
        if method == "GET" and parts[1:] == ["results"]:
            self._end(batch)
            if batch.status != "ended":
                return 400, _error("invalid_request_error", "batch has not ended")
            return 200, self._results(batch)
        if method == "POST" and parts[1:] == ["cancel"]:
            with self._lock:
                if batch.status == "in_progress":
                    batch.status = "canceling"
                    batch.cancel_initiated_at = _now()
            return 200, batch.to_json(self._api.base_url)
        return 404, _error("not_found_error", "Not found")

    def _create(self, body: dict[str, Any]) -> tuple[int, Any]:
        from soulworker.testing.messages_api import RecordedRequest

        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return 400, _error("invalid_request_error", "requests: must be a non-empty list")
        seen: set[str] = set()
        recorded: list[tuple[str, RecordedRequest]] = []
        for entry in requests:
            custom_id = entry.get("custom_id") if isinstance(entry, dict) else None
            params = entry.get("params") if isinstance(entry, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                return 400, _error("invalid_request_error", "custom_id: invalid")
            if custom_id in seen:
                return 400, _error("invalid_request_error", "custom_id: must be unique")
            if not isinstance(params, dict):
                return 400, _error("invalid_request_error", "params: must be an object")
            seen.add(custom_id)
            recorded.append((custom_id, RecordedRequest("BATCH", BATCH_REQUEST_PATH, {}, params)))
        now = _now()
        batch = FakeBatch(
            id=self._api._next_id("msgbatch"),
            requests=recorded,
            created_at=now,
            expires_at=now + BATCH_LIFETIME,
        )
        with self._lock:
            self._batches.append(batch)
        if self.on_create is not None:
            self.on_create(batch)
        return 200, batch.to_json(self._api.base_url)

    def _list(self, query: dict[str, str]) -> tuple[int, Any]:
        try:
            limit = min(MAX_LIST_LIMIT, max(1, int(query.get("limit", DEFAULT_LIST_LIMIT))))
        except ValueError:
            return 400, _error("invalid_request_error", "limit: must be a number")
        newest_first = list(reversed(self.batches))
        for batch in newest_first:
            self._end(batch)
        ids = [b.id for b in newest_first]
        if "after_id" in query:  # older than after_id
            start = ids.index(query["after_id"]) + 1 if query["after_id"] in ids else len(ids)
            page = newest_first[start : start + limit]
            has_more = start + limit < len(ids)
        elif "before_id" in query:  # newer than before_id
            end = ids.index(query["before_id"]) if query["before_id"] in ids else 0
            page = newest_first[max(0, end - limit) : end]
            has_more = end - limit > 0
        else:
            page = newest_first[:limit]
            has_more = limit < len(ids)
        base = self._api.base_url
        return 200, {
            "data": [b.to_json(base) for b in page],
            "has_more": has_more,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }

    def _results(self, batch: FakeBatch) -> bytes:
        import json

        with self._lock:
            batch.results_fetched += 1
            lines = [(cid, batch.results[cid]) for cid in batch.custom_ids]
        # The API gives no order; the fake gives one that is never the requests'.
        random.Random(batch.id).shuffle(lines)
        if len(lines) > 1 and [cid for cid, _ in lines] == batch.custom_ids:
            lines.reverse()
        return b"".join(
            json.dumps({"custom_id": cid, "result": result}).encode() + b"\n"
            for cid, result in lines
        )

    # --- ending

    def _end(self, batch: FakeBatch, *, force: bool = False) -> None:
        with self._lock:
            if batch.status == "ended":
                return
            if batch.status == "canceling":
                self._finish(batch, {"type": "canceled"})
                return
            due = (_now() - batch.created_at).total_seconds() >= self.batch_seconds
            if force or (due and not self.hold_batches):
                self._answer_all(batch)

    def _answer_all(self, batch: FakeBatch) -> None:
        """Answer every request (called with the lock held; the API's own lock is separate)."""
        for custom_id, request in batch.requests:
            batch.results[custom_id] = self._api._batch_result(request)
        batch.status = "ended"
        batch.ended_at = _now()

    def _finish(self, batch: FakeBatch, unanswered: dict[str, Any]) -> None:
        for custom_id in batch.custom_ids:
            batch.results.setdefault(custom_id, dict(unanswered))
        batch.status = "ended"
        batch.ended_at = _now()


def _error(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}
