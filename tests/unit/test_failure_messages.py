"""Failure messages are true: only the queue says whether an import will be tried again."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from soulworker.jobs.runner import STOPPED_AFTER_ATTEMPTS, WILL_BE_RETRIED, with_next_step

PACKAGE = Path(__file__).resolve().parents[2] / "soulworker"
RUNNER = PACKAGE / "jobs" / "runner.py"
# The help of settings describes behaviour to operators; it is never a job's message.
NOT_JOB_MESSAGES = {RUNNER, PACKAGE / "settings.py"}
# The test kit's fake services answer in the real services' words (Titan's "…please reformat
# your input and try again."); those are what soulworker reads, never what it says.
TEST_KIT = PACKAGE / "testing"
# Wordings that promise (or deny) another attempt.
NEXT_STEP_WORDS = ("retried", "try again", "tried again", "try it again")


def string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_error_message_outside_the_runner_promises_what_happens_next() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path in NOT_JOB_MESSAGES or path.is_relative_to(TEST_KIT):
            continue
        for text in string_constants(path):
            lowered = text.lower()
            # Setting help and log events may say "retried"; messages are sentences.
            sentence = text.endswith(".") and " " in text
            promises = any(word in lowered for word in NEXT_STEP_WORDS)
            if sentence and promises and "then retry" not in lowered:
                offenders.append(f"{path.relative_to(PACKAGE)}: {text!r}")
    assert offenders == []


@pytest.mark.parametrize(
    ("retrying", "permanent", "attempts", "expected"),
    [
        (True, False, 1, f"Storage is busy. {WILL_BE_RETRIED}"),
        (
            False,
            False,
            3,
            "Storage is busy. " + STOPPED_AFTER_ATTEMPTS.format(attempts="3 attempts"),
        ),
        (
            False,
            False,
            1,
            "Storage is busy. " + STOPPED_AFTER_ATTEMPTS.format(attempts="1 attempt"),
        ),
        (False, True, 1, "Storage is busy."),
    ],
)
def test_the_next_step_follows_the_outcome(
    retrying: bool, permanent: bool, attempts: int, expected: str
) -> None:
    message = with_next_step(
        "Storage is busy.", retrying=retrying, permanent=permanent, attempts=attempts
    )
    assert message == expected
    assert ("retried" in message) == retrying
