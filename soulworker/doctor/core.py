"""What a check is and how checks run: statuses, outcomes, the report, dependencies and timeouts.

Nothing here knows any particular check; the check families (``configuration``, ``database``,
``exposure``, ``storage``, ``model``, ``machine``) build on it, and ``checks`` lists them in the
order they are reported.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from soulworker.logs import redacted_line
from soulworker.settings import Settings, SettingsError

CHECK_TIMEOUT_SECONDS = 15.0
"""Time limit of one check: above every inner timeout of the checks, so those name the real
cause first, and short enough that doctor never looks hung."""

HTTP_CONNECT_TIMEOUT_SECONDS = 5.0
"""Storage and the model API accept connections within a second or two when healthy."""

HTTP_READ_TIMEOUT_SECONDS = 10.0
"""The probes are tiny requests; a healthy API answers well within this."""

DEFAULT_TIMEOUT_HINT = "check the network path to this service"
"""What a timed-out check suggests when it names nothing better."""


class Status(enum.StrEnum):
    """How a check went; the package docstring says what each means."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


_SEVERITY = {Status.SKIP: 0, Status.OK: 1, Status.WARN: 2, Status.FAIL: 3}


@dataclass(frozen=True)
class Outcome:
    """What one check found: ``finding`` is one line; ``hint`` says what to do (``None`` when
    there is nothing to do); ``details`` are machine-readable facts for ``--json``, never
    secrets."""

    status: Status
    finding: str
    hint: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def ok(finding: str, **details: Any) -> Outcome:
    return Outcome(Status.OK, finding, None, details)


def warn(finding: str, hint: str, **details: Any) -> Outcome:
    return Outcome(Status.WARN, finding, hint, details)


def fail(finding: str, hint: str, **details: Any) -> Outcome:
    return Outcome(Status.FAIL, finding, hint, details)


def skip(finding: str, hint: str | None = None, **details: Any) -> Outcome:
    return Outcome(Status.SKIP, finding, hint, details)


def merge(outcomes: Sequence[Outcome], details: Mapping[str, Any]) -> Outcome:
    """Several findings of one check as one line, the most severe status first."""
    ordered = sorted(outcomes, key=lambda o: -_SEVERITY[o.status])
    hints: list[str] = []
    for outcome in ordered:
        if outcome.hint and outcome.hint not in hints:
            hints.append(outcome.hint)
    return Outcome(
        status=ordered[0].status,
        finding="; ".join(o.finding for o in ordered),
        hint="; ".join(hints) or None,
        details=details,
    )


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome with its name and how long it took."""

    name: str
    status: Status
    finding: str
    hint: str | None
    details: Mapping[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "finding": self.finding,
            "hint": self.hint,
            "seconds": round(self.seconds, 3),
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class DoctorReport:
    """Every check's result, in the order the checks are declared."""

    results: tuple[CheckResult, ...]

    @property
    def healthy(self) -> bool:
        """No check failed (warnings and skips are allowed)."""
        return all(result.status is not Status.FAIL for result in self.results)

    @property
    def exit_code(self) -> int:
        """0 when healthy, 1 otherwise."""
        return 0 if self.healthy else 1

    def counts(self) -> dict[str, int]:
        return {
            status.value: sum(1 for r in self.results if r.status is status) for status in Status
        }

    def result(self, name: str) -> CheckResult:
        """The result of the check called ``name`` (``KeyError`` if it did not run)."""
        for candidate in self.results:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "checks": [result.to_json() for result in self.results],
        }


@dataclass(frozen=True)
class DoctorContext:
    """What the checks look at. ``settings`` is ``None`` when the environment does not parse
    (``settings_error`` says why); ``temp_base`` is where the private temp root lives
    (``None``: ``TMPDIR`` / the system default, as for the daemon)."""

    environ: Mapping[str, str]
    settings: Settings | None
    settings_error: str | None = None
    temp_base: Path | None = None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], *, temp_base: Path | None = None
    ) -> DoctorContext:
        try:
            settings: Settings | None = Settings.from_env(environ)
            error = None
        except SettingsError as exc:
            settings, error = None, str(exc)
        return cls(environ=environ, settings=settings, settings_error=error, temp_base=temp_base)


CheckFunction = Callable[[DoctorContext], Awaitable[Outcome]]


@dataclass(frozen=True)
class Check:
    """A named check; ``needs`` names earlier checks that must not fail for it to run;
    ``timeout_hint`` is what to do when it gets no answer in time."""

    name: str
    run: CheckFunction
    needs: tuple[str, ...] = ()
    timeout_hint: str = DEFAULT_TIMEOUT_HINT


async def run_checks(
    declared: Sequence[Check],
    context: DoctorContext,
    *,
    only: Collection[str] | None = None,
    timeout_seconds: float = CHECK_TIMEOUT_SECONDS,
) -> DoctorReport:
    """Run ``declared`` (``only`` these and what they need, when given) concurrently.

    Each check gets ``timeout_seconds``, counted from when it starts (after the checks it
    needs). A check that times out or raises fails with a safe message; the others go on.
    Raises ``ValueError`` for an unknown name in ``only``.
    """
    selected = _with_dependencies(declared, only)
    tasks: dict[str, asyncio.Task[CheckResult]] = {}
    for check in declared:
        if check.name not in selected:
            continue
        needed = [tasks[name] for name in check.needs if name in tasks]
        tasks[check.name] = asyncio.create_task(
            _run_one(check, context, needed, timeout_seconds), name=f"doctor-{check.name}"
        )
    results = await asyncio.gather(*tasks.values())
    return DoctorReport(tuple(results))


def _with_dependencies(declared: Sequence[Check], only: Collection[str] | None) -> set[str]:
    by_name = {check.name: check for check in declared}
    if only is None:
        return set(by_name)
    unknown = sorted(set(only) - set(by_name))
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(unknown)}")
    selected: set[str] = set()
    pending = list(only)
    while pending:
        name = pending.pop()
        if name not in selected:
            selected.add(name)
            pending.extend(by_name[name].needs)
    return selected


async def _run_one(
    check: Check,
    context: DoctorContext,
    needed: Sequence[asyncio.Task[CheckResult]],
    timeout_seconds: float,
) -> CheckResult:
    for task in needed:
        prerequisite = await task
        if prerequisite.status in (Status.FAIL, Status.SKIP):
            verb = "failed" if prerequisite.status is Status.FAIL else "was skipped"
            outcome = skip(f"skipped: the {prerequisite.name} check {verb}")
            return _result(check, outcome, 0.0)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_seconds):
            outcome = await check.run(context)
    except TimeoutError:
        outcome = fail(f"no answer within {timeout_seconds:g} s", check.timeout_hint)
    except psycopg.Error as exc:
        # The database check itself connected; this is a later query or a dropped link.
        outcome = fail(
            f"database error: {type(exc).__name__}: {redacted_line(str(exc))}",
            "run doctor again; if it persists, check the database's logs and load",
        )
    except Exception as exc:  # a check must never take the others down with it
        outcome = fail(
            f"the check itself failed: {type(exc).__name__}: {redacted_line(str(exc))}",
            "this looks like a bug in soulworker doctor; please report it with this output",
        )
    return _result(check, outcome, time.monotonic() - started)


def _result(check: Check, outcome: Outcome, seconds: float) -> CheckResult:
    return CheckResult(
        name=check.name,
        status=outcome.status,
        finding=outcome.finding,
        hint=outcome.hint,
        details=outcome.details,
        seconds=seconds,
    )
