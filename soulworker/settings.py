"""Configuration from the environment: one typed, validated settings object.

Every knob is declared once, below, as a field of :class:`Settings` with its environment variable,
its default and the reason for that default. The README's settings table and ``soulworker
settings`` are generated from these declarations, and a test keeps the README in step, so the
defaults documented are always the defaults used.

Invalid values fail at start with one line that names the variable, what it must be and what
it was (secrets are never echoed). Unknown ``SOULWORKER_*`` variables are reported as warnings,
because a typo in a knob name would otherwise be silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

ENV_PREFIX = "SOULWORKER_"
GIB = 1024**3
MIB = 1024**2


class SettingsError(ValueError):
    """A setting has an invalid value. The message is one line, fit to print as is."""


@dataclass(frozen=True)
class Knob:
    """How one setting is read: its variable, its documented default and why it is that."""

    env: str
    default_text: str
    reason: str
    parse: Callable[[str], Any]
    secret: bool = False
    group: str = "worker"


def _knob(
    env: str,
    default: T,
    reason: str,
    parse: Callable[[str], T],
    *,
    default_text: str | None = None,
    secret: bool = False,
    group: str = "worker",
) -> T:
    """Declare a settings field: the default value plus the knob metadata."""
    text = default_text if default_text is not None else ("" if default is None else str(default))
    metadata = {"knob": Knob(env, text, reason, parse, secret, group)}
    return field(default=default, metadata=metadata)


# --- parsers: each takes the raw text and returns the value or raises ValueError(what it must be)


def _text(raw: str) -> str:
    return raw.strip()


def _optional_text(raw: str) -> str | None:
    value = raw.strip()
    return value or None


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            raise ValueError(f"a whole number ≥ {minimum}") from None
        if value < minimum:
            raise ValueError(f"a whole number ≥ {minimum}")
        return value

    return parse


def _seconds(minimum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"a number of seconds ≥ {minimum:g}") from None
        if not math.isfinite(value) or value < minimum:
            raise ValueError(f"a number of seconds ≥ {minimum:g}")
        return value

    return parse


def _fraction(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("a number between 0 and 1") from None
    if not 0 <= value <= 1:
        raise ValueError("a number between 0 and 1")
    return value


def _non_negative_number(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("a number ≥ 0") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError("a number ≥ 0")
    return value


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip


def parse_size(raw: str) -> int:
    """Bytes from ``8GiB``, ``500MB``, ``1048576``: units are decimal (MB) or binary (MiB)."""
    match = _SIZE.match(raw)
    unit = (match.group(2) or "").lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError("a size such as 8GiB, 500MB or a number of bytes")
    value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value < 1:
        raise ValueError("a size of at least 1 byte")
    return value


_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")


def _model_id(raw: str) -> str:
    value = raw.strip()
    if not _MODEL_ID.match(value):
        raise ValueError("a model id such as claude-haiku-5-5")
    return value


def _optional_int_at_least(minimum: int) -> Callable[[str], int | None]:
    whole = _int_at_least(minimum)

    def parse(raw: str) -> int | None:
        return whole(raw) if raw.strip() else None

    return parse


def _optional_price(raw: str) -> float | None:
    if not raw.strip():
        return None
    try:
        return _non_negative_number(raw)
    except ValueError:
        raise ValueError("a price in USD per million tokens, such as 0.02") from None


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("true or false")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return value

    return parse


_BUCKET = re.compile(r"^[a-z0-9_-]+$")


def _buckets(raw: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not names or not all(_BUCKET.match(name) for name in names):
        raise ValueError("a comma-separated list of bucket names ([a-z0-9_-]+)")
    return names


def _http_url(raw: str) -> str | None:
    value = raw.strip().rstrip("/")
    if not value:
        return None
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        raise ValueError("an http(s) URL such as https://<project>.supabase.co")
    return value


def _database_url(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(value)
    except Exception:
        raise ValueError(
            "a PostgreSQL URL such as postgresql://user:password@host:5432/postgres"
        ) from None
    return value


def _clip(raw: str, limit: int = 80) -> str:
    return raw if len(raw) <= limit else raw[: limit - 1] + "…"


@dataclass(frozen=True)
class Settings:
    """Everything soulworker can be told, validated. Build it with :meth:`from_env`."""

    # Each setting keeps its variable and default on one line, the way the README's table reads
    # them; the formatter would give every argument a line of its own.
    # fmt: off

    # --- connections and secrets
    database_url: str | None = _knob(
        "DATABASE_URL", None,
        "Postgres to work on. On Render use Supabase's session pooler (port 5432, IPv4); "
        "the transaction pooler (6543) works too, with polling only.",
        _database_url, default_text="(required)", secret=True, group="connections",
    )
    supabase_url: str | None = _knob(
        "SUPABASE_URL", None,
        "Base URL of the Supabase project whose Storage holds the exports; every download URL "
        "is built from it and nothing else.",
        _http_url, default_text="(required to download)", group="connections",
    )
    supabase_service_key: str | None = _knob(
        "SUPABASE_SERVICE_KEY", None,
        "A legacy service_role JWT or a new sb_secret_… key; each is sent the way Supabase "
        "expects it.",
        _optional_text, default_text="(required to download)", secret=True, group="connections",
    )
    anthropic_api_key: str | None = _knob(
        "ANTHROPIC_API_KEY", None,
        "Key for the model stages. Without it the daemon refuses to start unless "
        "SOULWORKER_MODEL_STAGES=off.",
        _optional_text, default_text="(required for model stages)", secret=True,
        group="connections",
    )
    anthropic_base_url: str | None = _knob(
        "ANTHROPIC_BASE_URL", None,
        "Messages API endpoint; unset means Anthropic's own. Tests point it at a local server.",
        _http_url, default_text="(Anthropic)", group="connections",
    )

    # --- the queue
    concurrency: int = _knob(
        "SOULWORKER_CONCURRENCY", 2,
        "Jobs run at once by one process. Imports are I/O- and API-bound; 2 keeps peak memory "
        "well inside a 2 GB instance. Scale out with more instances.",
        _int_at_least(1),
    )
    lease_seconds: float = _knob(
        "SOULWORKER_LEASE_SECONDS", 60.0,
        "How long a claim lasts without a heartbeat (heartbeat every lease/4). Shorter rescues "
        "crashed jobs sooner; longer tolerates longer database hiccups.",
        _seconds(1), default_text="60",
    )
    poll_seconds: float = _knob(
        "SOULWORKER_POLL_SECONDS", 5.0,
        "Poll interval (±20% jitter), the source of truth behind NOTIFY. Only matters when "
        "NOTIFY is lost or LISTEN is off.",
        _seconds(0.05), default_text="5",
    )
    shutdown_seconds: float = _knob(
        "SOULWORKER_SHUTDOWN_SECONDS", 25.0,
        "Budget after SIGTERM for running jobs to reach a checkpoint before they are released; "
        "plus 4 s it must stay under the platform's SIGKILL delay (30 s by default). "
        "render.yaml sets 290 under Render's 300 s so model calls in flight can finish.",
        _seconds(0), default_text="25",
    )
    job_timeout_seconds: float = _knob(
        "SOULWORKER_JOB_TIMEOUT_SECONDS", 3600.0,
        "Per-attempt time limit, separate from the lease: a live but stuck attempt is stopped "
        "and retried.",
        _seconds(1), default_text="3600",
    )
    max_attempts: int = _knob(
        "SOULWORKER_MAX_ATTEMPTS", 3,
        "Default max_attempts for new jobs (written as the column default by migrate). Imports "
        "are expensive; three attempts ride out an outage without looping on a bad export.",
        _int_at_least(1),
    )
    retry_base_seconds: float = _knob(
        "SOULWORKER_RETRY_BASE_SECONDS", 30.0,
        "First retry delay; doubles per attempt with ±25% jitter. Long enough for an "
        "overloaded API or a storage blip to pass.",
        _seconds(0), default_text="30",
    )
    retry_max_seconds: float = _knob(
        "SOULWORKER_RETRY_MAX_SECONDS", 1800.0,
        "Cap on the retry delay, so a user never waits more than half an hour between attempts.",
        _seconds(0), default_text="1800",
    )
    progress_interval_seconds: float = _knob(
        "SOULWORKER_PROGRESS_INTERVAL_SECONDS", 1.0,
        "Minimum time between progress writes of one job; the web app polls every few seconds.",
        _seconds(0), default_text="1",
    )
    listen: str = _knob(
        "SOULWORKER_LISTEN", "auto",
        "LISTEN for new jobs: auto (on unless DATABASE_URL is a transaction pooler), on, off "
        "(poll only).",
        _choice("auto", "on", "off"),
    )
    transaction_pooler: str = _knob(
        "SOULWORKER_TRANSACTION_POOLER", "auto",
        "Whether DATABASE_URL is a transaction-mode pooler (no prepared statements, no LISTEN). "
        "auto means port 6543, Supabase's transaction port.",
        _choice("auto", "true", "false"),
    )
    queue_stats_seconds: float = _knob(
        "SOULWORKER_QUEUE_STATS_SECONDS", 60.0,
        "How often one worker logs the queue_stats event for alerting (0: never). Shorter "
        "notices a stuck queue sooner; each report is one pass over import_jobs and a log line.",
        _seconds(0), default_text="60",
    )
    statement_timeout_seconds: float = _knob(
        "SOULWORKER_STATEMENT_TIMEOUT_SECONDS", 120.0,
        "Longest any one statement may run; a hung statement is cut off instead of hanging a "
        "job. Matches Supabase's own cap. Session connections only: behind a transaction "
        "pooler the role's own timeout applies.",
        _seconds(1), default_text="120",
    )

    # --- inputs and limits
    storage_buckets: tuple[str, ...] = _knob(
        "SOULWORKER_STORAGE_BUCKETS", ("imports",),
        "Comma-separated buckets a job may read; anything else is refused before any request.",
        _buckets, default_text="imports", group="pipeline",
    )
    require_user_folder: bool = _knob(
        "SOULWORKER_REQUIRE_USER_FOLDER", True,
        "The object name must start with the job's user_id/ folder, so one user's job can never "
        "read another user's upload.",
        _bool, default_text="true", group="pipeline",
    )
    max_export_bytes: int = _knob(
        "SOULWORKER_MAX_EXPORT_BYTES", 8 * GIB,
        "Download and uncompressed-size limit. Real exports reach a few GB with media; 8 GiB "
        "leaves room while stopping runaway files and ZIP bombs.",
        parse_size, default_text="8GiB", group="pipeline",
    )
    max_message_bytes: int = _knob(
        "SOULWORKER_MAX_MESSAGE_BYTES", 1 * MIB,
        "A single message over this is truncated with a marker and counted; 1 MiB is far above "
        "anything a person types and bounds memory per message.",
        parse_size, default_text="1MiB", group="pipeline",
    )
    max_conversation_bytes: int = _knob(
        "SOULWORKER_MAX_CONVERSATION_BYTES", 64 * MIB,
        "One conversation's JSON is held in memory as objects (about 4x its size) while it is "
        "read: larger ones fail the import. The largest real conversations are 18-40 MB; "
        "raising it raises peak memory by ~4x the increase.",
        parse_size, default_text="64MiB", group="pipeline",
    )
    max_zip_entries: int = _knob(
        "SOULWORKER_MAX_ZIP_ENTRIES", 50_000,
        "Files a ZIP may hold; more fails the import before its directory is read (each entry "
        "costs ~600 bytes of memory). Real exports hold a few thousand with media.",
        _int_at_least(1), group="pipeline",
    )
    chunk_tier: str = _knob(
        "SOULWORKER_CHUNK_TIER", "medium",
        "Chunk size for search: micro (~250 tokens), medium (~2000, what the chat was tuned "
        "for) or macro (~5000).",
        _choice("micro", "medium", "macro"), group="pipeline",
    )
    model_stages: bool = _knob(
        "SOULWORKER_MODEL_STAGES", True,
        "off runs everything but the model calls (download, parse, chunks), for trying the "
        "pipeline without an API key.",
        _bool, default_text="on", group="pipeline",
    )

    # --- model stages
    quick_pass_model: str = _knob(
        "SOULWORKER_QUICK_PASS_MODEL", "claude-haiku-5-5",
        "Model for the quick pass and the v2 sections. The current Haiku: a tenth of Haiku "
        "4.5's price and a 1M-token context, so the sample always fits.",
        _model_id, group="model",
    )
    full_pass_model: str = _knob(
        "SOULWORKER_FULL_PASS_MODEL", "claude-haiku-5-5",
        "Model for fact extraction and reduction: many small structured calls, where price "
        "matters most.",
        _model_id, group="model",
    )
    model_concurrency: int = _knob(
        "SOULWORKER_MODEL_CONCURRENCY", 8,
        "Model calls in flight at once in one process, across all its jobs; keeps the "
        "organisation's rate limit from being hit by one instance.",
        _int_at_least(1), group="model",
    )
    model_concurrency_per_job: int = _knob(
        "SOULWORKER_MODEL_CONCURRENCY_PER_JOB", 4,
        "Model calls in flight at once for one job. The predecessor's 10 hit rate limits; 4 "
        "finishes a large full pass in minutes.",
        _int_at_least(1), group="model",
    )
    model_timeout_seconds: float = _knob(
        "SOULWORKER_MODEL_TIMEOUT_SECONDS", 300.0,
        "Longest wait for one model answer before it is retried.",
        _seconds(1), default_text="300", group="model",
    )
    model_retry_after_cap_seconds: float = _knob(
        "SOULWORKER_MODEL_RETRY_AFTER_CAP_SECONDS", 60.0,
        "Longest wait honoured from a retry-after header; the SDK itself has no cap.",
        _seconds(0), default_text="60", group="model",
    )
    model_prices: str | None = _knob(
        "SOULWORKER_MODEL_PRICES", None,
        'JSON prices per model in USD per million tokens, e.g. {"my-model": {"input": 1, '
        '"output": 5}}, added to the built-in list prices of the Claude models.',
        _optional_text, default_text="(built-in list prices)", group="model",
    )
    quick_pass_sample_chars: int = _knob(
        "SOULWORKER_QUICK_PASS_SAMPLE_CHARS", 200_000,
        "Character budget of the quick-pass sample (about 50K tokens): enough for 20-50 "
        "conversations, small enough for a fast answer.",
        _int_at_least(1000), group="model",
    )
    full_pass_batch_tokens: int = _knob(
        "SOULWORKER_FULL_PASS_BATCH_TOKENS", 24_000,
        "Input tokens of chunk text per fact-extraction call: several chunks per call, so the "
        "instructions are paid once per batch, not once per chunk.",
        _int_at_least(1000), group="model",
    )
    full_pass_token_budget: int = _knob(
        "SOULWORKER_FULL_PASS_TOKEN_BUDGET", 2_000_000,
        "Input tokens the full pass may spend per job (~$0.25 on Haiku 5.5, about 20 MB of "
        "export); over it, the richest and most recent chunks are read and the result says "
        "what was left out.",
        _int_at_least(1000), group="model",
    )
    full_pass_mode: str = _knob(
        "SOULWORKER_FULL_PASS_MODE", "auto",
        "batch sends the full pass's fact extraction through Message Batches (half the price, "
        "usually done within the hour while the job waits parked; the chat works from the "
        "quick pass meanwhile); direct calls the model at once; auto is batch in the daemon and "
        "direct in soulworker import, where a person waits.",
        _choice("auto", "batch", "direct"), group="model",
    )
    batch_poll_min_seconds: float = _knob(
        "SOULWORKER_BATCH_POLL_MIN_SECONDS", 30.0,
        "First wait before a parked job looks at its batch again; the wait grows with the "
        "batch's age (a tenth of it) up to the maximum below.",
        _seconds(0.1), default_text="30", group="model",
    )
    batch_poll_max_seconds: float = _knob(
        "SOULWORKER_BATCH_POLL_MAX_SECONDS", 300.0,
        "Longest wait between two looks at a batch: most batches end within the hour, so a "
        "finished one waits at most this long to be read.",
        _seconds(0.1), default_text="300", group="model",
    )
    soulprint_effort: str = _knob(
        "SOULWORKER_SOULPRINT_EFFORT", "default",
        "Effort of the quick pass and the v2 sections (low, medium, high, xhigh, max or "
        "default: none sent, the model decides): the soulprint is judgement, worth thinking.",
        _choice("default", "low", "medium", "high", "xhigh", "max"), group="model",
    )
    fact_extraction_effort: str = _knob(
        "SOULWORKER_FACT_EXTRACTION_EFFORT", "low",
        "Effort of fact extraction: copying stated facts out of excerpts needs little "
        "thought, and thinking is billed as output (docs/full-pass-batches.md, Effort).",
        _choice("default", "low", "medium", "high", "xhigh", "max"), group="model",
    )
    fact_reduction_effort: str = _knob(
        "SOULWORKER_FACT_REDUCTION_EFFORT", "low",
        "Effort of fact reduction: merging and deduplicating lists of facts, again little "
        "thought for its output.",
        _choice("default", "low", "medium", "high", "xhigh", "max"), group="model",
    )
    parse_during_download: bool = _knob(
        "SOULWORKER_PARSE_DURING_DOWNLOAD", True,
        "Parse the export while it downloads (JSON, gzip, and a ZIP whose layout allows it; "
        "other ZIPs once whole): the soulprint comes sooner by up to the download's time. Off: "
        "download, then parse, as before (kept to compare both).",
        _bool, default_text="on", group="pipeline",
    )
    download_process_min_bytes: int = _knob(
        "SOULWORKER_DOWNLOAD_PROCESS_MIN_BYTES", 64 * MIB,
        "While the parse follows the download, an export of this size or more moves to a "
        "helper process once it is ready (~0.3 s; one request more), so that receiving it "
        "does not take CPU from the parse. Smaller ones stay in the daemon, where the helper "
        "would cost more than it saves.",
        parse_size, default_text="64MiB", group="pipeline",
    )
    artifact_retention_days: int = _knob(
        "SOULWORKER_ARTIFACT_RETENTION_DAYS", 30,
        "Days the working data of a failed or cancelled import (its conversation sample and "
        "facts, kept so a retry need not pay again) is kept before it is deleted.",
        _int_at_least(1), group="pipeline",
    )
    persona_signal_chars: int = _knob(
        "SOULWORKER_PERSONA_SIGNAL_CHARS", 20_000,
        "Character budget for custom instructions and memory writes given to the model as "
        "their own input; newest first.",
        _int_at_least(0), group="model",
    )

    # --- embeddings (docs/embeddings.md)
    embed_provider: str = _knob(
        "SOULWORKER_EMBED_PROVIDER", "off",
        "bedrock (Titan Text Embeddings V2 through bedrock-runtime InvokeModel, what the app "
        "embeds its questions with), openai (any OpenAI-compatible POST {base}/embeddings: "
        "OpenAI, Azure, Ollama, vLLM, TEI, LM Studio), or off (chunks are not embedded).",
        _choice("off", "bedrock", "openai"), group="embeddings",
    )
    embed_model: str | None = _knob(
        "SOULWORKER_EMBED_MODEL", None,
        "Model id sent to the provider; it must be the model the app embeds questions with, or "
        "search finds nothing.",
        _model_id, group="embeddings",
        default_text="amazon.titan-embed-text-v2:0 (bedrock), text-embedding-3-small (openai)",
    )
    embed_dimensions: int | None = _knob(
        "SOULWORKER_EMBED_DIMENSIONS", None,
        "Vector length requested. A provider or model that cannot produce it is refused at "
        "start (doctor makes one live call).",
        _optional_int_at_least(1), group="embeddings",
        default_text="the embedding column's own dimension",
    )
    embed_endpoint_url: str | None = _knob(
        "SOULWORKER_EMBED_ENDPOINT_URL", None,
        "Base URL: the Bedrock runtime endpoint, or the OpenAI-compatible base such as "
        "http://localhost:11434/v1. Tests point it at a local server.",
        _http_url, group="embeddings", default_text="the provider's own",
    )
    embed_api_key: str | None = _knob(
        "SOULWORKER_EMBED_API_KEY", None,
        "Bearer key for openai (falls back to OPENAI_API_KEY); a local server may need none. "
        "Bedrock uses the standard AWS variables instead.",
        _optional_text, secret=True, group="embeddings",
    )
    embed_concurrency: int = _knob(
        "SOULWORKER_EMBED_CONCURRENCY", 4,
        "Embedding requests in flight per process; halved on throttling and grown back on "
        "success, so a busy account slows soulworker down instead of failing imports.",
        _int_at_least(1), group="embeddings",
    )
    embed_price_per_mtok: float | None = _knob(
        "SOULWORKER_EMBED_PRICE_PER_MTOK", None,
        "USD per million input tokens, for the cost record ($0.02 for Titan V2 and "
        "text-embedding-3-small, $0.13 for -large); 0 for a self-hosted model.",
        _optional_price, group="embeddings", default_text="provider list price",
    )

    # --- logs
    log_format: str = _knob(
        "SOULWORKER_LOG_FORMAT", "auto",
        "json, console, or auto (console on a terminal, JSON otherwise, e.g. on Render).",
        _choice("auto", "json", "console"), group="logs",
    )
    log_level: str = _knob(
        "SOULWORKER_LOG_LEVEL", "info",
        "debug, info, warning or error.",
        _choice("debug", "info", "warning", "error"), group="logs",
    )

    loop_stall_monitor: bool = _knob(
        "SOULWORKER_LOOP_STALL_MONITOR", False,
        "Benchmarks only: measure the event loop's longest stall during each job and report it "
        "(an \"event loop stall\" log line and loop_max_stall_seconds in the result). Off: the "
        "monitor wakes 100 times a second.",
        _bool, default_text="off", group="logs",
    )

    # fmt: on

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every knob from ``environ`` (default ``os.environ``); raise SettingsError."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for knob_field, knob in iter_knobs():
            raw = env.get(knob.env)
            if raw is None or (raw.strip() == "" and not knob.env.startswith(ENV_PREFIX)):
                continue
            try:
                values[knob_field.name] = knob.parse(raw)
            except ValueError as exc:
                shown = "(hidden)" if knob.secret else repr(_clip(raw))
                raise SettingsError(f"{knob.env} must be {exc}, got {shown}") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules that no single parser can see."""
        if self.retry_max_seconds < self.retry_base_seconds:
            raise SettingsError(
                "SOULWORKER_RETRY_MAX_SECONDS must be ≥ SOULWORKER_RETRY_BASE_SECONDS, got "
                f"{self.retry_max_seconds:g} < {self.retry_base_seconds:g}"
            )

    @property
    def heartbeat_seconds(self) -> float:
        """Heartbeats renew the lease four times per lease, so three can be missed."""
        return self.lease_seconds / 4

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SettingsError(
                "DATABASE_URL must be set, e.g. postgresql://postgres:…@host:5432/postgres"
            )
        return self.database_url

    def replace(self, **changes: Any) -> Settings:
        updated = dataclasses.replace(self, **changes)
        updated.check()
        return updated


def iter_knobs() -> Iterable[tuple[dataclasses.Field[Any], Knob]]:
    """Every settings field with its knob, in declaration order."""
    for settings_field in dataclasses.fields(Settings):
        knob = settings_field.metadata.get("knob")
        if isinstance(knob, Knob):
            yield settings_field, knob


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``SOULWORKER_*`` variables that no knob reads: probably typos, worth a warning."""
    env = os.environ if environ is None else environ
    known = {knob.env for _, knob in iter_knobs()} | EXTRA_KNOWN_VARIABLES
    return sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known)


# Variables read outside Settings on purpose: the test suite's database location.
EXTRA_KNOWN_VARIABLES = frozenset({"SOULWORKER_TEST_DATABASE_URL"})


def settings_table_markdown() -> str:
    """The README's settings table, generated from the declarations above."""
    lines = ["| variable | default | why |", "|---|---|---|"]
    for _, knob in iter_knobs():
        reason = knob.reason.replace("|", "\\|")
        lines.append(f"| `{knob.env}` | {knob.default_text or '(unset)'} | {reason} |")
    return "\n".join(lines)
