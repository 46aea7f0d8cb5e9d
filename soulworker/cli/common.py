"""Helpers shared by the commands."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import timedelta

from soulworker.logs import configure_logging
from soulworker.settings import Settings, unknown_variables


class CommandError(Exception):
    """A command failed in a way the user can act on; printed as one line."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int) -> int:
    print(f"soulworker: {message}", file=sys.stderr)
    return exit_code


def load_settings() -> Settings:
    """Settings from the environment, with logging configured from them."""
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    for name in unknown_variables():
        from soulworker.logs import get_logger

        get_logger("soulworker.settings").warning(
            "unknown setting ignored; is it misspelled?", variable=name
        )
    return settings


def format_age(age: timedelta | None) -> str:
    """``45s``, ``3m12s``, ``2h05m``, ``1d03h``: two units are plenty at a glance."""
    if age is None:
        return "-"
    seconds = int(age.total_seconds())
    if seconds < 0:
        return "in " + format_age(-age)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with aligned columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
