"""``soulworker run`` as real subprocesses: start them, send real signals, read their logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTED_HANDLER = "soulworker.testing.scripted_handler:create_scripted_handler"


class WorkerProcess:
    """One ``python -m soulworker run`` process with JSON logs captured to a file."""

    def __init__(
        self,
        database_url: str,
        *,
        handler: str | None = SCRIPTED_HANDLER,
        drain: bool = False,
        env: Mapping[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.log_file = Path(tempfile.mkstemp(prefix="soulworker-test-", suffix=".log")[1])
        self.command = [sys.executable, "-m", "soulworker", *(args or ["run"])]
        if handler and (args is None or args[0] == "run"):
            self.command += ["--handler", handler]
        if drain:
            self.command.append("--drain")
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SOULWORKER_LOG_FORMAT": "json",
            "SOULWORKER_LOG_LEVEL": "info",
            "SOULWORKER_MODEL_STAGES": "off",
            "PYTHONPATH": str(REPO_ROOT),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._final_output: str | None = None

    def start(self) -> WorkerProcess:
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.send(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Kill the process if it still runs and remove its log (assertion messages quote it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.log_file.exists():
            self._final_output = self.log_file.read_text(errors="replace")
            self.log_file.unlink()

    def output(self) -> str:
        if self._final_output is not None:
            return self._final_output
        return self.log_file.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.output().splitlines():
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                events.append(parsed)
        return events

    def wait_for_event(self, event: str, *, count: int = 1, timeout: float = 20) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            matches = [e for e in self.events() if e.get("event") == event]
            return matches[count - 1] if len(matches) >= count else None

        event_found: dict[str, Any] = wait_for(
            found, timeout=timeout, what=f"log event {event!r} ×{count}", context=self.output
        )
        return event_found

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(
    check: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
    context: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f"\n--- worker output ---\n{context()[-4000:]}" if context else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def query(database_url: str, statement: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        cur = conn.execute(statement, params or None)
        return list(cur.fetchall()) if cur.description else []


def handler_events(database_url: str, job_id: Any) -> list[dict[str, Any]]:
    if not query(database_url, "select to_regclass('test_handler_runs') is not null as t")[0]["t"]:
        return []
    return query(
        database_url,
        "select attempt, pid, event, at from test_handler_runs where job_id = %s order by at",
        job_id,
    )
