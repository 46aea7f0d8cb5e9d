"""Logging: structlog everywhere, JSON in containers, readable on a terminal.

* Every line of a job carries ``job_id``, ``user_id`` and ``attempt``: the worker binds them with
  :func:`structlog.contextvars.bound_contextvars` inside the job's task, and
  ``merge_contextvars`` adds them to each event, including events from stdlib loggers.
* The stdlib loggers of psycopg, httpx2 and anthropic go through the same processors, so
  their lines are formatted and redacted like ours.
* Secrets are redacted by key name (``*key*``, ``*token*``, ``password``, ``authorization``…)
  and by value shape (``sk-ant-…``, ``sb_secret_…``, JWTs, passwords inside URLs).
* JSON tracebacks never carry frame locals: structlog's default would dump keys, connection
  strings and conversation text held in local variables.
* Conversation text is never logged in the first place; redaction is a second line of defence.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import psycopg
import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

# Keys whose values are secrets whatever they look like: the whole name, or its last part after
# "_"/"-" ("access_token", "x-api-key"); never a substring, so "input_tokens" stays readable.
_SECRET_KEY = re.compile(
    r"^(?:.*[_-])?(?:password|passwd|secret|token|api[_-]?key|apikey|key|authorization|cookie|"
    r"dsn|conninfo|database_url|credentials?)$",
    re.IGNORECASE,
)
# Values that are secrets wherever they appear inside a string.
_SECRET_VALUE = re.compile(
    r"(sk-ant-[A-Za-z0-9_\-]{6,}"
    r"|sb_secret_[A-Za-z0-9_\-]{6,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{8,})"
)
# user:password@ inside connection URLs.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://[^:/@\s]+):[^@\s]+@", re.IGNORECASE)
# password=… inside libpq key=value connection strings.
_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)

# Third-party loggers and the level below which their lines are dropped: psycopg and httpx2 log
# every request at DEBUG/INFO, which would drown the job lines.
_STDLIB_LEVELS: Mapping[str, int] = {
    "psycopg": logging.WARNING,
    "psycopg.pool": logging.WARNING,
    "httpx2": logging.WARNING,
    "httpcore2": logging.WARNING,
    "anthropic": logging.WARNING,
    "asyncio": logging.WARNING,
}


def redact_text(text: str) -> str:
    """Mask secret-shaped substrings in free text (exception messages, URLs)."""
    text = _SECRET_VALUE.sub(REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}:{REDACTED}@", text)
    return _CONNINFO_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def redacted_line(text: str, limit: int = 160) -> str:
    """The first line of ``text`` with secret-shaped parts masked, clipped to ``limit``
    characters: a driver's or library's error text, fit to show an operator."""
    stripped = text.strip()
    first = redact_text(stripped.splitlines()[0] if stripped else "")
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key) and value not in (None, "", True, False):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets by key name and by value shape."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(key, value)
    return event_dict


def _exception_of(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        value = exc_info[1]
        return value if isinstance(value, BaseException) else None
    if exc_info is True:
        return sys.exc_info()[1]
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what it was raised from or during, and members of exception groups."""
    seen: list[BaseException] = []
    pending = [exc]
    while pending and len(seen) < 20:
        current = pending.pop(0)
        if any(current is known for known in seen):
            continue
        seen.append(current)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    return seen


def _safe_summary(exc: BaseException) -> str:
    """A line about an exception that cannot carry row data: database errors keep only their
    primary message (their DETAIL quotes the failing row), others only their class."""
    from soulworker.errors import JobError

    if isinstance(exc, psycopg.Error):
        primary = exc.diag.message_primary if exc.diag else None
        state = f" [{exc.sqlstate}]" if exc.sqlstate else ""
        return f"{type(exc).__name__}{state}: {primary or 'no message'}"
    if isinstance(exc, JobError):
        return f"{type(exc).__name__}: {exc.message}"
    return type(exc).__name__


def sanitize_database_errors(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: no traceback text from an exception chain holding a database error.

    A database error's text quotes the row that failed ("Failing row contains (…)"), which may
    be conversation text; such chains are logged as one safe line per exception instead.
    """
    exc = _exception_of(event_dict.get("exc_info"))
    if exc is None:
        return event_dict
    chain = _chain(exc)
    if any(isinstance(member, psycopg.Error) for member in chain):
        event_dict.pop("exc_info", None)
        event_dict["exception_chain"] = [_safe_summary(member) for member in chain]
    return event_dict


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)
    return event_dict


def wants_json(log_format: str, stream: TextIO) -> bool:
    """``auto`` means JSON unless the stream is a terminal (containers, Render, pipes)."""
    if log_format == "json":
        return True
    if log_format == "console":
        return False
    return not (hasattr(stream, "isatty") and stream.isatty())


def configure_logging(
    log_format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Set up structlog and route the stdlib loggers through the same pipeline.

    Safe to call more than once (tests and the CLI both do); the last call wins.
    """
    out = stream if stream is not None else sys.stderr
    as_json = wants_json(log_format, out)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
        sanitize_database_errors,
        redact_secrets,
    ]
    renderer: Processor
    if as_json:
        final: list[Processor] = [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ]
        renderer = final[-1]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=hasattr(out, "isatty") and out.isatty(),
            exception_formatter=structlog.dev.plain_traceback,
        )
        final = [renderer]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    root.setLevel(numeric_level)
    for name, floor in _STDLIB_LEVELS.items():
        logging.getLogger(name).setLevel(max(floor, numeric_level))

    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


def job_log_context(job_id: str, user_id: str, attempt: int) -> MutableMapping[str, Any]:
    """The keys bound to every line of a job."""
    return {"job_id": job_id, "user_id": user_id, "attempt": attempt}


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
