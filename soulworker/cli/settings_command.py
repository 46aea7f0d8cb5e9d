"""``soulworker settings``: every setting with its default and reason (or its current value)."""

from __future__ import annotations

import argparse
from typing import Any

from soulworker.settings import Settings, iter_knobs, settings_table_markdown


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "settings",
        help="list the settings, their defaults and the values in effect",
    )
    parser.add_argument("--markdown", action="store_true", help="print the README's settings table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_table_markdown())
        return 0
    settings = Settings.from_env()
    for knob_field, knob in iter_knobs():
        value = getattr(settings, knob_field.name)
        if isinstance(value, tuple):
            value = ",".join(value)
        if knob.secret and value:
            value = "(set, hidden)"
        shown = "(unset)" if value is None else value
        print(f"{knob.env}={shown}")
    return 0
