"""A real HTTP server on 127.0.0.1 that speaks both embedding protocols soulworker uses.

* **Bedrock InvokeModel**: ``POST /model/{model id}/invoke`` with the id percent-encoded (a raw
  ``:`` is refused, as a signature mismatch would be), ``{"inputText", "dimensions",
  "normalize"}`` in, ``{"embedding", "inputTextTokenCount"}`` out. The ``Authorization`` header
  must be a well-formed SigV4 one (``AWS4-HMAC-SHA256 Credential=<key id>/<day>/<region>/bedrock/
  aws4_request, SignedHeaders=…host…x-amz-date…, Signature=<64 hex>``, with ``X-Amz-Date``
  sent) for the server's access key id, or ``Bearer <bedrock_api_key>``. Titan V2 takes the
  lengths in ``bedrock_dimensions`` (1024, 512, 256 unless told) and answers any other with
  Titan's ``ValidationException``.
* **OpenAI-compatible** ``POST {base}/embeddings`` (any prefix, e.g. ``/v1``): ``{"model",
  "input", "dimensions"?}`` in, ``{"data": [{"index", "embedding"}], "usage"}`` out, with
  ``Authorization: Bearer <openai_api_key>`` when the server has a key. ``text-embedding-3-*``
  take ``dimensions`` up to their full length; other models ignore it and give their length from
  ``openai_native_dimensions`` (768 unless listed), as local servers do.

Vectors are derived from the text alone (``expected_vector``): the same text always gets the
same vector, different texts different ones, so a test can tell *which* text a stored vector
belongs to. Bedrock's are unit length when ``normalize`` is asked; OpenAI-style ones are scaled
by a text-dependent length, so a client that forgets to normalize is caught. Tokens are counted
as one per ``chars_per_token`` characters (4 unless told; 1 imitates dense text such as CJK), and
an input over the model's token limit (Titan 8,192, OpenAI 8,191) is refused in the provider's
words.

Faults are queued with ``script`` and consumed in order, one per request (a fault with
``times=None`` applies to every request from then on): ``throttle`` (429 /
``ThrottlingException``), ``server_error`` (500 / ``InternalServerException``),
``access_denied`` (403 / ``AccessDeniedException``), ``no_quota`` (OpenAI's 429
``insufficient_quota``; Bedrock's ``ServiceQuotaExceededException``). ``latency_seconds`` delays
every answer. Every request is recorded (``requests``) with its texts and its headers, secrets
redacted.

``vector_bank`` (benchmarks only): each text gets one of that many vectors made ahead of time and
already encoded, picked by a hash of the text, instead of its own. Deriving and encoding a vector
costs this server ~1.5 ms of CPU per text under the same interpreter lock as everything else in the
process; a real provider's work is its latency, not our CPU, so a benchmark of the embed stage
would otherwise measure this server (docs/embeddings.md, "Throughput and cost").
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import quote, unquote

from soulworker.testing.loopback import LoopbackServer

FAKE_AWS_ACCESS_KEY_ID = "AKIDSOULWORKERTEST01"
FAKE_AWS_SECRET_ACCESS_KEY = "fake/secret+for+loopback+only0000000000"  # noqa: S105 - a fake
FAKE_BEDROCK_API_KEY = "bedrock-api-key-fake-for-loopback"
FAKE_OPENAI_API_KEY = "sk-fake-openai-key-for-loopback"

TITAN_V2 = "amazon.titan-embed-text-v2:0"
TITAN_V2_DIMENSIONS = (1024, 512, 256)
TITAN_MAX_CHARS = 50_000
TITAN_MAX_TOKENS = 8_192
OPENAI_MAX_TOKENS = 8_191
OPENAI_NATIVE_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072}
DEFAULT_NATIVE_DIMENSIONS = 768
_SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]+)/(?P<day>\d{8})/(?P<region>[a-z0-9-]+)/"
    r"bedrock/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})$"
)
_BEDROCK_PATH = re.compile(r"^/model/(?P<model>[^/]+)/invoke$")

FaultKind = Literal["throttle", "server_error", "access_denied", "no_quota"]


@dataclass
class Fault:
    """What the next ``times`` requests get instead of vectors (``None``: every request)."""

    kind: FaultKind
    times: int | None = 1


def throttle(times: int | None = 1) -> Fault:
    return Fault("throttle", times)


def server_error(times: int | None = 1) -> Fault:
    return Fault("server_error", times)


def access_denied(times: int | None = None) -> Fault:
    return Fault("access_denied", times)


def no_quota(times: int | None = None) -> Fault:
    return Fault("no_quota", times)


@dataclass(frozen=True)
class EmbedRequest:
    """One request as received: which protocol, the model, the texts, the dimensions asked for,
    the headers (secrets redacted) and the raw path."""

    protocol: Literal["bedrock", "openai"]
    path: str
    model: str
    texts: tuple[str, ...]
    dimensions: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    answered: bool = False


def expected_vector(text: str, dimensions: int) -> list[float]:
    """The unit-length vector the server gives ``text`` at ``dimensions`` (what a client must
    store after normalizing)."""
    raw = _raw_vector(text, dimensions)
    length = math.sqrt(math.fsum(v * v for v in raw))
    return [v / length for v in raw]


def _raw_vector(text: str, dimensions: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    return [rng.gauss(0.0, 1.0) for _ in range(dimensions)]


def _scale(text: str) -> float:
    """A length between 0.5 and 3.5 that depends on the text (unnormalized answers)."""
    return 0.5 + hashlib.sha256(b"scale:" + text.encode()).digest()[0] / 85.0


def count_tokens(text: str, chars_per_token: float = 4.0) -> int:
    """The server's token count: one per ``chars_per_token`` characters, at least one."""
    return max(1, int(len(text) / chars_per_token))


class EmbeddingsServer:
    """The server; use as a context manager and point the embedder at ``base_url`` (Bedrock) or
    ``openai_base_url``."""

    def __init__(
        self,
        *,
        aws_access_key_id: str = FAKE_AWS_ACCESS_KEY_ID,
        bedrock_api_key: str | None = FAKE_BEDROCK_API_KEY,
        openai_api_key: str | None = FAKE_OPENAI_API_KEY,
        bedrock_dimensions: Sequence[int] = TITAN_V2_DIMENSIONS,
        openai_native_dimensions: Mapping[str, int] | None = None,
        latency_seconds: float = 0.0,
        chars_per_token: float = 4.0,
        vector_bank: int = 0,
    ) -> None:
        self.aws_access_key_id = aws_access_key_id
        self.bedrock_api_key = bedrock_api_key
        self.openai_api_key = openai_api_key
        self.bedrock_dimensions = tuple(bedrock_dimensions)
        self.openai_native_dimensions = dict(openai_native_dimensions or OPENAI_NATIVE_DIMENSIONS)
        self.latency_seconds = latency_seconds
        self.chars_per_token = chars_per_token
        self.vector_bank = vector_bank
        self._bank: dict[tuple[int, bool, int], bytes] = {}
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._requests: list[EmbedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._tokens_billed = 0
        self._http: LoopbackServer | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> EmbeddingsServer:
        self._http = LoopbackServer(_make_handler(self), name="fake-embeddings")
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None

    def __enter__(self) -> EmbeddingsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The Bedrock runtime endpoint (``SOULWORKER_EMBED_ENDPOINT_URL`` for ``bedrock``)."""
        assert self._http is not None, "server not started"
        return self._http.base_url

    @property
    def openai_base_url(self) -> str:
        """The OpenAI-compatible base (``…/v1``)."""
        return self.base_url + "/v1"

    # --- scripting and inspection -------------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[EmbedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def answered(self) -> list[EmbedRequest]:
        """The requests that got vectors."""
        return [request for request in self.requests if request.answered]

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    @property
    def tokens_billed(self) -> int:
        """Input tokens reported in answers with vectors."""
        with self._lock:
            return self._tokens_billed

    # --- answering ----------------------------------------------------------------------------

    def _take_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.pop(0)
            return fault

    def _record(self, request: EmbedRequest, tokens: int = 0) -> None:
        """Keep ``request``; ``tokens`` are billed before its answer is sent, so a client that
        has its answer sees them counted."""
        with self._lock:
            self._requests.append(request)
            self._tokens_billed += tokens

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def handle(
        self, path: str, headers: Mapping[str, str], body: Any
    ) -> tuple[int, dict[str, str], Any]:
        """Route one POST: ``(status, headers, JSON body)``."""
        match = _BEDROCK_PATH.match(path)
        if match:
            return self._bedrock(match.group("model"), path, headers, body)
        if path.endswith("/embeddings"):
            return self._openai(path, headers, body)
        return 404, {}, {"message": f"no route for {path}"}

    def _bedrock(
        self, raw_model: str, path: str, headers: Mapping[str, str], body: Any
    ) -> tuple[int, dict[str, str], Any]:
        model = unquote(raw_model)
        text = body.get("inputText") if isinstance(body, dict) else None
        dimensions = body.get("dimensions", 1024) if isinstance(body, dict) else None
        request = EmbedRequest(
            "bedrock", path, model, (str(text),), dimensions, _redact(headers), answered=False
        )
        if quote(model, safe="") != raw_model:
            self._record(request)
            return _aws_error(403, "InvalidSignatureException", "The model id is not encoded.")
        refused = self._bedrock_auth(headers)
        if refused is not None:
            self._record(request)
            return refused
        fault = self._take_fault()
        if fault is not None:
            self._record(request)
            return _bedrock_fault(fault)
        if not isinstance(text, str) or not text:
            self._record(request)
            return _aws_error(400, "ValidationException", "Malformed input request: inputText")
        if len(text) > TITAN_MAX_CHARS:
            self._record(request)
            return _aws_error(400, "ValidationException", "Input text is too long.")
        tokens = count_tokens(text, self.chars_per_token)
        if tokens > TITAN_MAX_TOKENS:
            self._record(request)
            return _aws_error(
                400,
                "ValidationException",
                f"400 Bad Request: Too many input tokens. Max input tokens: {TITAN_MAX_TOKENS}, "
                f"request input token count: {tokens}",
            )
        if model != TITAN_V2:
            self._record(request)
            return _aws_error(
                404, "ResourceNotFoundException", "The requested resource could not be found."
            )
        if dimensions not in self.bedrock_dimensions:
            self._record(request)
            return _aws_error(
                400,
                "ValidationException",
                f"Malformed input request: #/dimensions: {dimensions} is not a valid enum "
                "value, please reformat your input and try again.",
            )
        if self.vector_bank:
            self._record(
                EmbedRequest("bedrock", path, model, (text,), dimensions, _redact(headers), True),
                tokens,
            )
            banked = self._banked_vector(text, dimensions, normalize=bool(body.get("normalize")))
            return 200, {}, b'{"embedding":%s,"inputTextTokenCount":%d}' % (banked, tokens)
        vector = (
            expected_vector(text, dimensions)
            if body.get("normalize")
            else [v * _scale(text) for v in _raw_vector(text, dimensions)]
        )
        self._record(
            EmbedRequest("bedrock", path, model, (text,), dimensions, _redact(headers), True),
            tokens,
        )
        return 200, {}, {"embedding": vector, "inputTextTokenCount": tokens}

    def _bedrock_auth(self, headers: Mapping[str, str]) -> tuple[int, dict[str, str], Any] | None:
        authorization = headers.get("authorization", "")
        if authorization.startswith("Bearer "):
            if self.bedrock_api_key and authorization == f"Bearer {self.bedrock_api_key}":
                return None
            return _aws_error(403, "UnrecognizedClientException", "Invalid API key.")
        match = _SIGV4.match(authorization)
        amz_date = headers.get("x-amz-date", "")
        if (
            match is None
            or not re.match(r"^\d{8}T\d{6}Z$", amz_date)
            or amz_date[:8] != match.group("day")
            or not {"host", "x-amz-date"} <= set(match.group("signed").split(";"))
        ):
            return _aws_error(
                403, "IncompleteSignatureException", "The request signature is malformed."
            )
        if match.group("key") != self.aws_access_key_id:
            return _aws_error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        return None

    def _openai(
        self, path: str, headers: Mapping[str, str], body: Any
    ) -> tuple[int, dict[str, str], Any]:
        payload = body if isinstance(body, dict) else {}
        model = str(payload.get("model", ""))
        raw_input = payload.get("input")
        texts = [raw_input] if isinstance(raw_input, str) else list(raw_input or [])
        dimensions = payload.get("dimensions")
        request = EmbedRequest(
            "openai", path, model, tuple(map(str, texts)), dimensions, _redact(headers)
        )
        if self.openai_api_key and headers.get("authorization") != (
            f"Bearer {self.openai_api_key}"
        ):
            self._record(request)
            return _openai_error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        fault = self._take_fault()
        if fault is not None:
            self._record(request)
            return _openai_fault(fault)
        if not texts or not all(isinstance(text, str) and text for text in texts):
            self._record(request)
            return _openai_error(400, "'input' is invalid.", "invalid_request_error", None)
        longest = max(count_tokens(text, self.chars_per_token) for text in texts)
        if longest > OPENAI_MAX_TOKENS:
            self._record(request)
            return _openai_error(
                400,
                f"This model's maximum context length is {OPENAI_MAX_TOKENS + 1} tokens, however "
                f"you requested {longest} tokens. Please reduce your prompt.",
                "invalid_request_error",
                None,
            )
        native = self.openai_native_dimensions.get(model, DEFAULT_NATIVE_DIMENSIONS)
        length = native
        if dimensions is not None:
            if not model.startswith("text-embedding-3-"):
                self._record(request)
                return _openai_error(
                    400,
                    "This model does not support specifying dimensions.",
                    "invalid_request_error",
                    None,
                )
            if not 1 <= int(dimensions) <= native:
                self._record(request)
                return _openai_error(
                    400,
                    f"Invalid value for 'dimensions' = {dimensions}. Must be less than or "
                    f"equal to {native}.",
                    "invalid_request_error",
                    None,
                )
            length = int(dimensions)
        tokens = sum(count_tokens(text, self.chars_per_token) for text in texts)
        self._record(
            EmbedRequest("openai", path, model, tuple(texts), dimensions, _redact(headers), True),
            tokens,
        )
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        if self.vector_bank:
            return 200, {}, self._openai_banked(texts, length, model, usage)
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": [v * _scale(text) for v in _raw_vector(text, length)],
            }
            for index, text in enumerate(texts)
        ]
        data.reverse()  # the index, not the order, says which text a vector is for
        return 200, {}, {"object": "list", "data": data, "model": model, "usage": usage}

    def _openai_banked(
        self, texts: list[str], length: int, model: str, usage: dict[str, int]
    ) -> bytes:
        items = [
            b'{"object":"embedding","index":%d,"embedding":%s}'
            % (index, self._banked_vector(text, length, normalize=False))
            for index, text in reversed(list(enumerate(texts)))
        ]
        rest = json.dumps({"model": model, "usage": usage}).encode()
        return b'{"object":"list","data":[' + b",".join(items) + b"]," + rest[1:]

    def _banked_vector(self, text: str, length: int, *, normalize: bool) -> bytes:
        """The encoded bank vector for ``text`` (module docstring, ``vector_bank``)."""
        slot = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")
        key = (length, normalize, slot % self.vector_bank)
        encoded = self._bank.get(key)
        if encoded is None:
            seed_text = f"bank:{key[2]}"
            vector = (
                expected_vector(seed_text, length)
                if normalize
                else [v * _scale(seed_text) for v in _raw_vector(seed_text, length)]
            )
            encoded = self._bank.setdefault(key, json.dumps(vector).encode())
        return encoded


def _aws_error(status: int, error_type: str, message: str) -> tuple[int, dict[str, str], Any]:
    return (
        status,
        {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"},
        {"message": message},
    )


def _bedrock_fault(fault: Fault) -> tuple[int, dict[str, str], Any]:
    if fault.kind == "throttle":
        return _aws_error(
            429, "ThrottlingException", "Too many requests, please wait before trying again."
        )
    if fault.kind == "server_error":
        return _aws_error(500, "InternalServerException", "An internal server error occurred.")
    if fault.kind == "access_denied":
        return _aws_error(
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        )
    return _aws_error(
        400, "ServiceQuotaExceededException", "Your request exceeds the service quota."
    )


def _openai_error(
    status: int, message: str, error_type: str, code: str | None
) -> tuple[int, dict[str, str], Any]:
    error = {"message": message, "type": error_type, "param": None, "code": code}
    return status, {}, {"error": error}


def _openai_fault(fault: Fault) -> tuple[int, dict[str, str], Any]:
    if fault.kind == "throttle":
        return _openai_error(
            429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded"
        )
    if fault.kind == "server_error":
        return _openai_error(500, "The server had an error.", "server_error", None)
    if fault.kind == "access_denied":
        return _openai_error(
            403, "You are not allowed to sample from this model.", "invalid_request_error", None
        )
    return _openai_error(
        429, "You exceeded your current quota.", "insufficient_quota", "insufficient_quota"
    )


SECRET_HEADERS = frozenset({"authorization", "x-amz-security-token"})


def _redact(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with secrets replaced; a SigV4 header keeps its public parts (scope, names)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key == "authorization" and value.startswith("AWS4-HMAC-SHA256 "):
            out[key] = re.sub(r"Signature=[0-9a-f]+", "Signature=<redacted>", value)
        elif key in SECRET_HEADERS:
            out[key] = value.split(" ", 1)[0] + " <redacted>" if " " in value else "<redacted>"
        else:
            out[key] = value
    return out


def _make_handler(server: EmbeddingsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            # In flight from here until the answer is ready (not sent: a client that has its
            # answer may send the next request before this thread would count it done).
            server._enter()
            extra: dict[str, str] = {}
            try:
                if server.latency_seconds:
                    time.sleep(server.latency_seconds)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    status, payload = 400, {"message": "invalid JSON"}
                else:
                    status, extra, payload = server.handle(self.path, headers, body)
            finally:
                server._leave()
            self._send(status, extra, payload)

        def _send(self, status: int, headers: Mapping[str, str], payload: Any) -> None:
            # A benchmark's banked answer arrives already encoded (``vector_bank``).
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler
