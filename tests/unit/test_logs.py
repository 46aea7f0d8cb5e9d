from __future__ import annotations

import io
import json
import logging

import psycopg
import structlog

from soulworker.logs import REDACTED, configure_logging, get_logger, redact_text


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_the_job_context() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    with structlog.contextvars.bound_contextvars(job_id="j1", user_id="u1", attempt=2):
        get_logger("test").info("stage done", stage="parse")
        logging.getLogger("psycopg").warning("from the stdlib")
    get_logger("test").info("outside")
    first, second, third = _lines(out)
    assert first["event"] == "stage done"
    assert (first["job_id"], first["user_id"], first["attempt"]) == ("j1", "u1", 2)
    assert second["event"] == "from the stdlib"
    assert second["job_id"] == "j1", "stdlib lines get the job context too"
    assert "job_id" not in third


def test_secrets_are_redacted_by_key_and_by_shape() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlc2lnbg"
    get_logger("test").info(
        "connecting",
        api_key="plain-looking",
        headers={"Authorization": "Bearer abcdefghijklmnop", "apikey": jwt},
        note=f"key sk-ant-api03-abcdefghij and sb_secret_abcdefghijkl and {jwt}",
        url="postgresql://postgres:hunter2@db.example.com:5432/postgres",
    )
    text = out.getvalue()
    for secret in (
        "plain-looking",
        "abcdefghijklmnop",
        "sk-ant-api03",
        "sb_secret_abc",
        jwt,
        "hunter2",
    ):
        assert secret not in text
    assert REDACTED in text
    assert "db.example.com" in text, "non-secret parts of a URL stay readable"


def test_json_tracebacks_have_no_frame_locals() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)

    def fails() -> None:
        conversation_text = "my very private diary entry"  # noqa: F841 - the point of the test
        raise ValueError("boom")

    try:
        fails()
    except ValueError:
        get_logger("test").exception("it failed")
    (line,) = _lines(out)
    assert "my very private diary entry" not in out.getvalue()
    assert "exception" in line


def test_console_format_is_readable() -> None:
    out = io.StringIO()
    configure_logging("console", "info", stream=out)
    get_logger("test").info("hello", job_id="x")
    text = out.getvalue()
    assert "hello" in text and "job_id" in text
    assert not text.lstrip().startswith("{")


def test_auto_format_is_json_when_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("auto", "info", stream=out)
    get_logger("test").info("hello")
    assert json.loads(out.getvalue())["event"] == "hello"


def test_redact_text_handles_conninfo_passwords() -> None:
    assert "s3cret" not in redact_text("host=db user=postgres password=s3cret dbname=x")
    assert "s3cret" not in redact_text("host=db password='s3cret' dbname=x")


def test_token_counts_stay_readable_while_tokens_are_hidden() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    get_logger("test").info(
        "model call",
        input_tokens=1234,
        output_tokens=56,
        access_token="abc123456789",
        x_api_key="k-1234567890",
        bypass_count=3,
    )
    (line,) = _lines(out)
    assert (line["input_tokens"], line["output_tokens"], line["bypass_count"]) == (1234, 56, 3)
    assert line["access_token"] == REDACTED
    assert line["x_api_key"] == REDACTED


def test_database_errors_never_log_the_failing_row() -> None:
    """A constraint violation's text quotes the row: such chains are logged without it."""
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    error = psycopg.errors.CheckViolation(
        'new row violates check constraint "x"\nDETAIL:  Failing row contains (my diary entry).'
    )
    try:
        try:
            raise error
        except psycopg.Error as exc:
            raise RuntimeError("while writing chunks") from exc
    except RuntimeError as wrapped:
        get_logger("test").error("job failed", exc_info=wrapped)
    text = out.getvalue()
    assert "my diary entry" not in text
    (line,) = _lines(out)
    chain = line["exception_chain"]
    assert isinstance(chain, list)
    assert chain[0] == "RuntimeError"
    assert str(chain[1]).startswith("CheckViolation")
