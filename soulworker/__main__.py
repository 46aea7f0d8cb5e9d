"""``python -m soulworker`` is the same as the ``soulworker`` command."""

from soulworker.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
