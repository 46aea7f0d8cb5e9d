"""A real HTTP server on 127.0.0.1 that speaks enough of the Anthropic Messages API for the real
``anthropic`` SDK (2.x) to talk to it through ``base_url``.

Endpoints: ``POST /v1/messages``, ``POST /v1/messages/count_tokens`` and the Message Batches
endpoints (``soulworker.testing.message_batches``: create, retrieve, list, results, cancel,
expiry and per-request results, scripted with the same faults). Answers are
structured-output messages: one ``text`` block holding JSON, ``stop_reason`` ``end_turn``, and
``usage`` that looks real (input tokens = ceil(chars of system + user text / 4), output tokens
= ceil(chars of the answer / 4)).

What a test can script:

* ``responder``: request → answer dict. The default, ``schema_responder``, builds a valid
  answer from the request's own ``output_config.format.schema``, deterministically, seeded by
  a hash of the request text, so end-to-end tests work without scripting. ``LooseModel`` answers
  the way real models sometimes do: valid for the wire schema, but with fewer or more items than
  the descriptions ask, over-long strings, fields left out, "not enough data" everywhere, a
  generic ``ai_name``.
* faults (``script(...)``), consumed in order, each optionally only for requests matching a
  predicate and optionally several ``times``: HTTP errors with the API's error body shape
  (429 with ``retry-after`` / ``retry-after-ms``, 529 overloaded, 500, 401, 403, spend limit
  as ``enforced_spend_limit_reached``, 400 credit balance, 400 invalid request), truncated
  answers (``stop_reason: max_tokens``), refusals, invalid JSON, a fixed answer, and delays.
* ``latency_seconds``: every request waits this long (for concurrency tests).

What it records: every request (``requests``) with its JSON body and headers, the
``authorization`` / ``x-api-key`` values redacted; every answer it sent (``responses``); the
most requests in flight at once (``max_in_flight``), overall and per purpose (the
``X-Soulworker-Purpose`` header); calls per purpose (``calls_by_purpose``); what it billed
(``billed``: the usage of every message it answered, which is what the real API charges for);
and requests whose body repeats an earlier one with no transport failure between
(``repeated_bodies``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from soulworker.testing.loopback import LoopbackServer
from soulworker.testing.message_batches import (
    BATCH_REQUEST_PATH,
    BATCHES_PATH,
    BatchBook,
    FakeBatch,
)

REDACTED = "[redacted]"
SECRET_HEADERS = frozenset({"authorization", "x-api-key"})
PURPOSE_HEADER = "x-soulworker-purpose"
CHARS_PER_TOKEN = 4
# Array length the schema responder produces: fits every list bound in soulworker's schemas
# (the wire schema no longer carries maxItems, so the fake cannot read the real bounds).
GENERATED_ARRAY_MIN = 3
GENERATED_ARRAY_MAX = 5
_WORDS = (
    "amber",
    "harbor",
    "lantern",
    "meadow",
    "quartz",
    "willow",
    "ember",
    "atlas",
    "cedar",
    "drift",
    "fjord",
    "garnet",
    "halcyon",
    "indigo",
    "juniper",
    "kestrel",
    "lumen",
    "marlow",
    "nimbus",
    "orchid",
    "pebble",
    "quill",
    "rowan",
    "sable",
    "tide",
    "umber",
    "vesper",
    "wren",
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.time)  # wall clock, comparable with the database's

    @property
    def purpose(self) -> str | None:
        return self.headers.get(PURPOSE_HEADER)

    @property
    def schema(self) -> dict[str, Any] | None:
        fmt = (self.body.get("output_config") or {}).get("format") or {}
        schema = fmt.get("schema")
        return schema if isinstance(schema, dict) else None

    @property
    def text(self) -> str:
        """System prompt and every text of every message, concatenated."""
        parts: list[str] = []
        system = self.body.get("system")
        if isinstance(system, str):
            parts.append(system)
        elif isinstance(system, list):
            parts.extend(str(b.get("text", "")) for b in system if isinstance(b, dict))
        for message in self.body.get("messages") or []:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(str(b.get("text", "")) for b in content if isinstance(b, dict))
        return "\n".join(parts)


Responder = Callable[[RecordedRequest], dict[str, Any]]
Predicate = Callable[[RecordedRequest], bool]


def recorded_usage(total: Mapping[str, Any]) -> dict[str, int]:
    """A job's ``result.model_usage.total`` in the form ``FakeMessagesAPI.billed`` returns."""
    return {
        "calls": int(total.get("calls", 0)),
        "input_tokens": sum(
            int(total.get(key, 0))
            for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        ),
        "output_tokens": int(total.get("output_tokens", 0)),
    }


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def generate_from_schema(schema: Mapping[str, Any], rng: random.Random) -> Any:
    """A value valid for ``schema`` (a wire schema: types, enums, objects, arrays, strings)."""
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        return {
            name: generate_from_schema(sub, rng)
            for name, sub in (schema.get("properties") or {}).items()
        }
    if kind == "array":
        low = max(GENERATED_ARRAY_MIN, int(schema.get("minItems", 0)))
        count = rng.randint(low, max(low, GENERATED_ARRAY_MAX))
        return [generate_from_schema(schema.get("items") or {}, rng) for _ in range(count)]
    if kind == "string":
        words = [rng.choice(_WORDS) for _ in range(rng.randint(1, 3))]
        return " ".join(words).capitalize()
    if kind == "integer":
        return rng.randint(0, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def schema_responder(request: RecordedRequest) -> dict[str, Any]:
    """A valid answer for the request's schema, the same for the same request text."""
    schema = request.schema
    if schema is None:
        return {}
    seed = hashlib.sha256(request.text.encode()).digest()
    value = generate_from_schema(schema, random.Random(seed))
    return value if isinstance(value, dict) else {"value": value}


# How a loose model may treat one node of the schema (``LooseModel``).
COMPLY = "comply"  # what the description asks
FEW = "few"  # an array with the fewest items the wire schema allows: below the described minimum
MANY = "many"  # an array with more items than the described maximum
LONG = "long"  # a string longer than the described maximum
ABSENT = "absent"  # a field the description says may be unknown or empty, left out
UNKNOWN = "unknown"  # "not enough data" for a string, the fewest items for an array
EMPTY = "empty"  # an empty string where the description says "Not empty"
LOOSE_WAYS = (COMPLY, FEW, MANY, LONG, ABSENT, UNKNOWN, EMPTY)
NOT_ENOUGH_DATA = "not enough data"
GENERIC_NAMES = ("Assistant", "AI", "My AI", "ChatGPT", NOT_ENOUGH_DATA, "", "Claude 2")
_ITEMS_HINT = re.compile(r"(?:Between (\d+) and (\d+)|At most ()(\d+)|At least (\d+)()) items\.")
_CHARS_HINT = re.compile(r"at most (\d+) characters", re.I)
# A field a model may leave out: its description allows "unknown" or "empty".
_OPTIONAL_HINT = re.compile(r'Write "not enough data"|Empty when')


def item_bounds(node: Mapping[str, Any]) -> tuple[int, int | None]:
    """The (min, max) items an array's wire description asks for (minItems when none said)."""
    low, high = int(node.get("minItems", 0)), None
    match = _ITEMS_HINT.search(str(node.get("description", "")))
    if match:
        numbers = [int(g) if g else None for g in match.groups()]
        low = numbers[0] or numbers[4] or low
        high = numbers[1] or numbers[3]
    return low, high


def char_bound(node: Mapping[str, Any]) -> int | None:
    """The most characters a string's wire description allows, if it says."""
    match = _CHARS_HINT.search(str(node.get("description", "")))
    return int(match.group(1)) if match else None


class LooseModel:
    """Answers like a loose but schema-valid model: valid for the wire schema (types, enums,
    every required key), but each node treated one of ``ways`` (chosen by a hash of the
    request, so the same request gets the same answer): fewer or more items than the
    description asks, strings longer than it allows, optional fields left out, "not enough
    data" everywhere. With probability ``generic_name_share`` the companion's ``ai_name`` is
    no name ("Assistant", "", "not enough data"…). ``leave_out`` false keeps every field (a
    strict schema-valid answer); true also leaves fields out, as a model without constrained
    decoding might."""

    def __init__(
        self,
        *,
        ways: tuple[str, ...] = LOOSE_WAYS,
        generic_name_share: float = 0.5,
        leave_out: bool = True,
    ) -> None:
        self.ways = tuple(way for way in ways if leave_out or way != ABSENT) or (COMPLY,)
        self.generic_name_share = generic_name_share

    def __call__(self, request: RecordedRequest) -> dict[str, Any]:
        schema = request.schema
        if schema is None:
            return {}
        rng = random.Random(hashlib.sha256(request.text.encode()).digest())
        value = self._value(schema, rng)
        identity = value.get("identity") if isinstance(value, dict) else None
        if isinstance(identity, dict) and rng.random() < self.generic_name_share:
            identity["ai_name"] = rng.choice(GENERIC_NAMES)
        return value if isinstance(value, dict) else {"value": value}

    def _value(self, node: Mapping[str, Any], rng: random.Random) -> Any:
        way = rng.choice(self.ways)
        if "enum" in node:
            return rng.choice(node["enum"])
        kind = node.get("type")
        if kind == "object":
            out = {}
            for name, sub in (node.get("properties") or {}).items():
                optional = bool(_OPTIONAL_HINT.search(str(sub.get("description", ""))))
                if optional and rng.choice(self.ways) == ABSENT:
                    continue
                out[name] = self._value(sub, rng)
            return out
        if kind == "array":
            low, high = item_bounds(node)
            wire_min = int(node.get("minItems", 0))
            if way in (FEW, UNKNOWN, EMPTY):
                count = wire_min
            elif way == MANY:
                count = (high if high is not None else 8) + rng.randint(1, 6)
            else:
                count = rng.randint(max(low, wire_min), max(low, wire_min, high or 3))
            return [self._value(node.get("items") or {}, rng) for _ in range(count)]
        if kind == "string":
            most = char_bound(node)
            if way == UNKNOWN:
                return NOT_ENOUGH_DATA
            if way == EMPTY:
                return ""
            if way == LONG:
                target = 2 * (most or 300) + rng.randint(1, 50)
                words = " ".join(rng.choice(_WORDS) for _ in range(target // 4 + 1))
                return words[:target].strip() or "x" * target
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3))).capitalize()
            return words[:most] if most else words
        return generate_from_schema(node, rng)


@dataclass
class Fault:
    """One scripted misbehaviour; build them with the helper functions below.

    ``kind``: ``error`` (HTTP error with the API's body shape), ``truncated``, ``refusal``,
    ``raw_text`` (``text`` as the answer, e.g. invalid JSON), ``answer`` (``data`` as the
    answer), ``context_exceeded``, ``stop`` (a normal answer with ``stop_reason``), or
    ``delay`` (a normal answer after ``delay_seconds``).
    Every kind waits ``delay_seconds`` first. ``usage`` overrides reported usage fields.
    """

    kind: str
    status: int = 200
    error_type: str | None = None
    error_code: str | None = None
    message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0
    text: str | None = None
    data: dict[str, Any] | None = None
    usage: Mapping[str, Any] | None = None
    stop_reason: str | None = None
    when: Predicate | None = None
    path: str = "/v1/messages"
    times: int = 1


def http_error(
    status: int,
    error_type: str,
    message: str,
    *,
    error_code: str | None = None,
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Fault:
    return Fault(
        kind="error",
        status=status,
        error_type=error_type,
        error_code=error_code,
        message=message,
        headers=dict(headers or {}),
        **kwargs,
    )


def rate_limited(
    *, retry_after: float | str | None = None, retry_after_ms: float | None = None, **kw: Any
) -> Fault:
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    return http_error(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your rate limit.",
        headers=headers,
        **kw,
    )


def overloaded(**kw: Any) -> Fault:
    return http_error(529, "overloaded_error", "Overloaded", **kw)


def server_error(status: int = 500, **kw: Any) -> Fault:
    return http_error(status, "api_error", "Internal server error", **kw)


def unauthorized(**kw: Any) -> Fault:
    return http_error(401, "authentication_error", "invalid x-api-key", **kw)


def permission_denied(**kw: Any) -> Fault:
    return http_error(403, "permission_error", "Your API key does not have permission.", **kw)


def spend_limit(**kw: Any) -> Fault:
    """The real shape: 429 ``rate_limit_error`` with ``details.error_code``
    ``enforced_spend_limit_reached`` (the SDK maps it to ``EnforcedSpendLimitReachedError``)."""
    return http_error(
        429,
        "rate_limit_error",
        "Your organization has reached its monthly usage limit.",
        error_code="enforced_spend_limit_reached",
        **kw,
    )


def credit_balance_too_low(**kw: Any) -> Fault:
    return http_error(
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. "
        "Please go to Plans & Billing to upgrade or purchase credits.",
        **kw,
    )


def bad_request(message: str = "messages: field required", **kw: Any) -> Fault:
    return http_error(400, "invalid_request_error", message, **kw)


def not_found(**kw: Any) -> Fault:
    return http_error(404, "not_found_error", "model: not-a-model", **kw)


def truncated(**kw: Any) -> Fault:
    return Fault(kind="truncated", **kw)


def refusal(**kw: Any) -> Fault:
    return Fault(kind="refusal", **kw)


def context_exceeded(**kw: Any) -> Fault:
    return Fault(kind="context_exceeded", **kw)


def invalid_json(**kw: Any) -> Fault:
    return Fault(kind="raw_text", text='{"soul": {"communication_style": "cut', **kw)


def raw_text(text: str, **kw: Any) -> Fault:
    return Fault(kind="raw_text", text=text, **kw)


def answer(data: dict[str, Any], **kw: Any) -> Fault:
    return Fault(kind="answer", data=data, **kw)


def stopped(stop_reason: str, **kw: Any) -> Fault:
    return Fault(kind="stop", stop_reason=stop_reason, **kw)


def in_batches(fault: Fault) -> Fault:
    """``fault`` for requests inside a batch instead of direct calls (``message_batches``)."""
    fault.path = BATCH_REQUEST_PATH
    return fault


def batch_request_expired(**kw: Any) -> Fault:
    """A batch request that comes back ``expired``."""
    return Fault(kind="expired", path=BATCH_REQUEST_PATH, **kw)


def batch_request_canceled(**kw: Any) -> Fault:
    """A batch request that comes back ``canceled``."""
    return Fault(kind="canceled", path=BATCH_REQUEST_PATH, **kw)


def slow(seconds: float, **kw: Any) -> Fault:
    return Fault(kind="delay", delay_seconds=seconds, **kw)


class FakeMessagesAPI:
    """The server. Use as a context manager (or ``start``/``stop``); point the SDK at
    ``base_url``."""

    def __init__(self, *, responder: Responder | None = None, latency_seconds: float = 0.0) -> None:
        self.responder: Responder = responder or schema_responder
        self.latency_seconds = latency_seconds
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._responses: list[dict[str, Any]] = []
        # (request, status or None when no answer was sent, message when status is 200)
        self._exchanges: list[tuple[RecordedRequest, int | None, dict[str, Any] | None]] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._in_flight_by_purpose: Counter[str] = Counter()
        self._max_in_flight_by_purpose: dict[str, int] = {}
        self._counter = 0
        self._http: LoopbackServer | None = None
        self.batch_book = BatchBook(self)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeMessagesAPI:
        self._http = LoopbackServer(_make_handler(self), name="fake-messages-api")
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None

    def __enter__(self) -> FakeMessagesAPI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._http is not None, "server not started"
        return self._http.base_url

    # --- scripting and inspection ---------------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Queue faults; each request consumes the first queued fault that applies to it."""
        with self._lock:
            self._faults.extend(faults)

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return sum(f.times for f in self._faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/messages"]

    @property
    def responses(self) -> list[dict[str, Any]]:
        """Every message body sent back with status 200, in order."""
        with self._lock:
            return list(self._responses)

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    def max_in_flight_for(self, purpose: str) -> int:
        with self._lock:
            return self._max_in_flight_by_purpose.get(purpose, 0)

    @property
    def batches(self) -> list[FakeBatch]:
        """Every batch created, oldest first (see ``soulworker.testing.message_batches``)."""
        return self.batch_book.batches

    @property
    def batch_requests(self) -> list[RecordedRequest]:
        """The requests of every batch created, as recorded."""
        return [request for batch in self.batches for _, request in batch.requests]

    def calls_by_purpose(self) -> Counter[str]:
        return Counter(r.purpose or "" for r in self.message_requests)

    def billed(self, purpose: str | None = None, *, in_batches: bool = False) -> dict[str, int]:
        """Calls answered with a message, and their tokens: what the API bills for. Direct
        calls, or with ``in_batches`` the batch requests answered with a message (billed at
        half the price)."""
        totals = {"calls": 0, "input_tokens": 0, "output_tokens": 0}
        path = BATCH_REQUEST_PATH if in_batches else "/v1/messages"
        with self._lock:
            exchanges = list(self._exchanges)
        for request, status, message in exchanges:
            if status != 200 or message is None or request.path != path:
                continue
            if purpose is not None and request.purpose != purpose:
                continue
            usage = message["usage"]
            totals["calls"] += 1
            totals["input_tokens"] += (
                usage["input_tokens"]
                + usage.get("cache_creation_input_tokens", 0)
                + usage.get("cache_read_input_tokens", 0)
            )
            totals["output_tokens"] += usage["output_tokens"]
        return totals

    def repeated_bodies(
        self, *, since: float = 0.0, until: float = float("inf")
    ) -> list[RecordedRequest]:
        """Message requests whose body equals an earlier request's, with no transport failure
        (an error status, or no answer sent) of that body since its last sending; only among
        the requests made between ``since`` and ``until`` (e.g. one attempt of a job)."""
        with self._lock:
            exchanges = [
                e
                for e in self._exchanges
                if e[0].path == "/v1/messages" and since <= e[0].at < until
            ]
        last_ok: dict[str, bool] = {}  # body -> whether its last sending was answered
        repeated = []
        for request, status, _ in exchanges:
            body = json.dumps(request.body, sort_keys=True)
            if last_ok.get(body):
                repeated.append(request)
            last_ok[body] = status == 200
        return repeated

    # --- request handling (called from handler threads) ----------------------------------------

    def _take_fault(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.path != request.path:
                    continue
                if fault.when is not None and not fault.when(request):
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[index]
                return fault
        return None

    def _enter(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            purpose = request.purpose or ""
            self._in_flight_by_purpose[purpose] += 1
            self._max_in_flight_by_purpose[purpose] = max(
                self._max_in_flight_by_purpose.get(purpose, 0),
                self._in_flight_by_purpose[purpose],
            )

    def _leave(self, request: RecordedRequest) -> None:
        with self._lock:
            self._in_flight -= 1
            self._in_flight_by_purpose[request.purpose or ""] -= 1

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            return f"{prefix}_fake{self._counter:06d}"

    def _handle(self, request: RecordedRequest) -> tuple[int, dict[str, str], dict[str, Any]]:
        status, headers, body = self._answer(request)
        with self._lock:
            self._exchanges.append((request, status, body if status == 200 else None))
        return status, headers, body

    def _answer(self, request: RecordedRequest) -> tuple[int, dict[str, str], dict[str, Any]]:
        fault = self._take_fault(request)
        delay = self.latency_seconds + (fault.delay_seconds if fault else 0.0)
        if delay > 0:
            time.sleep(delay)
        request_id = self._next_id("req")
        headers = {"request-id": request_id}
        if fault is not None and fault.kind == "error":
            headers.update(fault.headers)
            error: dict[str, Any] = {"type": fault.error_type, "message": fault.message}
            if fault.error_code:
                error["details"] = {"error_code": fault.error_code}
            body = {"type": "error", "error": error, "request_id": request_id}
            return fault.status, headers, body
        if request.path == "/v1/messages/count_tokens":
            return 200, headers, {"input_tokens": estimate_tokens(request.text)}
        if request.path != "/v1/messages":
            body = {
                "type": "error",
                "error": {"type": "not_found_error", "message": "Not found"},
                "request_id": request_id,
            }
            return 404, headers, body
        message = self._message(request, fault)
        with self._lock:
            self._responses.append(message)
        return 200, headers, message

    def _batch_result(self, request: RecordedRequest) -> dict[str, Any]:
        """The result of one batch request, as the batch's results file gives it."""
        fault = self._take_fault(request)
        with self._lock:
            self._requests.append(request)
        if fault is not None and fault.kind in ("expired", "canceled"):
            return {"type": fault.kind}
        if fault is not None and fault.kind == "error":
            error = {"type": fault.error_type, "message": fault.message}
            return {"type": "errored", "error": {"type": "error", "error": error}}
        message = self._message(request, fault)
        with self._lock:
            self._exchanges.append((request, 200, message))
        return {"type": "succeeded", "message": message}

    def _batches_endpoint(
        self, request: RecordedRequest, query: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        """A Message Batches endpoint; a fault scripted for its exact path answers instead."""
        fault = self._take_fault(request)
        headers = {"request-id": self._next_id("req")}
        if fault is not None and fault.kind == "error":
            headers.update(fault.headers)
            error: dict[str, Any] = {"type": fault.error_type, "message": fault.message}
            return fault.status, headers, {"type": "error", "error": error}
        if fault is not None and fault.delay_seconds:
            time.sleep(fault.delay_seconds)
        status, payload = self.batch_book.handle(request.method, request.path, query, request.body)
        return status, headers, payload

    def _message(self, request: RecordedRequest, fault: Fault | None) -> dict[str, Any]:
        kind = fault.kind if fault is not None else "delay"
        max_tokens = int(request.body.get("max_tokens") or 0)
        stop_reason = "end_turn"
        stop_details: dict[str, Any] | None = None
        if kind == "raw_text":
            assert fault is not None
            assert fault.text is not None
            text = fault.text
        elif kind == "answer":
            assert fault is not None
            assert fault.data is not None
            text = json.dumps(fault.data)
        else:
            text = json.dumps(self.responder(request))
        output_tokens = estimate_tokens(text)
        if kind == "truncated":
            text = text[: len(text) // 2]
            stop_reason = "max_tokens"
            output_tokens = max_tokens
        elif kind == "context_exceeded":
            text = text[: len(text) // 3]
            stop_reason = "model_context_window_exceeded"
            output_tokens = estimate_tokens(text)
        elif kind == "stop":
            assert fault is not None
            assert fault.stop_reason is not None
            stop_reason = fault.stop_reason
        elif kind == "refusal":
            text = ""
            stop_reason = "refusal"
            stop_details = {"type": "refusal", "category": "general_harms", "explanation": None}
            output_tokens = 5
        usage: dict[str, Any] = {
            "input_tokens": estimate_tokens(request.text),
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        if fault is not None and fault.usage:
            usage.update(fault.usage)
        content = [{"type": "text", "text": text}] if text else []
        return {
            "id": self._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": request.body.get("model", "unknown"),
            "content": content,
            "stop_reason": stop_reason,
            "stop_details": stop_details,
            "stop_sequence": None,
            "usage": usage,
        }


def _redact(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in SECRET_HEADERS:
            scheme = value.split(" ", 1)[0] if " " in value else ""
            out[key] = f"{scheme} {REDACTED}".strip()
        else:
            out[key] = value
    return out


def _make_handler(api: FakeMessagesAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, the second waits for the
        # client's delayed ACK (~40 ms per request).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep test output quiet

        def do_GET(self) -> None:
            self._batches("GET", {})

        def _batches(self, method: str, body: dict[str, Any]) -> None:
            path, _, raw_query = self.path.partition("?")
            request = RecordedRequest(
                method=method, path=path, headers=_redact(dict(self.headers.items())), body=body
            )
            with api._lock:
                api._requests.append(request)
            query = dict(urllib.parse.parse_qsl(raw_query))
            status, headers, payload = api._batches_endpoint(request, query)
            self._send(status, headers, payload)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                error = {"type": "invalid_request_error", "message": "invalid JSON"}
                self._send(400, {}, {"type": "error", "error": error})
                return
            if self.path.startswith(BATCHES_PATH):
                self._batches("POST", body if isinstance(body, dict) else {})
                return
            request = RecordedRequest(
                method="POST",
                path=self.path.split("?", 1)[0],
                headers=_redact(dict(self.headers.items())),
                body=body if isinstance(body, dict) else {},
            )
            api._enter(request)
            try:
                status, headers, payload = api._handle(request)
                self._send(status, headers, payload)
            finally:
                api._leave(request)

        def _send(self, status: int, headers: Mapping[str, str], payload: object) -> None:
            lines = isinstance(payload, bytes)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header(
                    "content-type", "application/x-jsonlines" if lines else "application/json"
                )
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (a timeout test); nothing to answer to.
                self.close_connection = True

    return Handler
