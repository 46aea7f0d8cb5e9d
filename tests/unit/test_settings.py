from __future__ import annotations

from pathlib import Path

import pytest

from soulworker.settings import (
    GIB,
    Settings,
    SettingsError,
    iter_knobs,
    parse_size,
    settings_table_markdown,
    unknown_variables,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_match_the_design_contract() -> None:
    settings = Settings.from_env({})
    assert settings.concurrency == 2
    assert settings.lease_seconds == 60
    assert settings.heartbeat_seconds == 15
    assert settings.poll_seconds == 5
    assert settings.shutdown_seconds == 25
    assert settings.job_timeout_seconds == 3600
    assert settings.max_attempts == 3
    assert settings.storage_buckets == ("imports",)
    assert settings.require_user_folder is True
    assert settings.max_export_bytes == 8 * GIB
    assert settings.model_stages is True
    assert settings.log_format == "auto"


def test_values_are_parsed_and_typed() -> None:
    settings = Settings.from_env(
        {
            "SOULWORKER_CONCURRENCY": "4",
            "SOULWORKER_LEASE_SECONDS": "12.5",
            "SOULWORKER_STORAGE_BUCKETS": "imports, exports",
            "SOULWORKER_REQUIRE_USER_FOLDER": "false",
            "SOULWORKER_MAX_EXPORT_BYTES": "500MB",
            "SOULWORKER_MODEL_STAGES": "off",
        }
    )
    assert settings.concurrency == 4
    assert settings.lease_seconds == 12.5
    assert settings.storage_buckets == ("imports", "exports")
    assert settings.require_user_folder is False
    assert settings.max_export_bytes == 500_000_000
    assert settings.model_stages is False


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SOULWORKER_CONCURRENCY", "zero", "SOULWORKER_CONCURRENCY must be a whole number ≥ 1"),
        ("SOULWORKER_CONCURRENCY", "0", "SOULWORKER_CONCURRENCY must be a whole number ≥ 1"),
        ("SOULWORKER_POLL_SECONDS", "nan", "SOULWORKER_POLL_SECONDS must be a number of seconds"),
        ("SOULWORKER_LOG_FORMAT", "xml", "SOULWORKER_LOG_FORMAT must be one of auto, json"),
        ("SOULWORKER_MAX_EXPORT_BYTES", "8 parsecs", "SOULWORKER_MAX_EXPORT_BYTES must be a size"),
        ("SOULWORKER_STORAGE_BUCKETS", "Imports", "SOULWORKER_STORAGE_BUCKETS must be a comma"),
        ("SUPABASE_URL", "ftp://x", "SUPABASE_URL must be an http(s) URL"),
    ],
)
def test_invalid_values_fail_with_one_clear_line(variable: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(expected)
    assert "\n" not in message
    assert repr(value) in message


def test_secrets_are_never_echoed_in_errors() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DATABASE_URL": "postgresql://u:hunter2@host:5432/db?bogus=1"})
    assert "hunter2" not in str(caught.value)
    assert "(hidden)" in str(caught.value)


def test_cross_field_rules() -> None:
    with pytest.raises(SettingsError, match="RETRY_MAX"):
        Settings.from_env(
            {"SOULWORKER_RETRY_BASE_SECONDS": "60", "SOULWORKER_RETRY_MAX_SECONDS": "10"}
        )


def test_sizes() -> None:
    assert parse_size("8GiB") == 8 * 1024**3
    assert parse_size("1 MiB") == 1024**2
    assert parse_size("2kb") == 2000
    assert parse_size("1048576") == 1048576
    with pytest.raises(ValueError):
        parse_size("-1")


def test_unknown_soulworker_variables_are_reported() -> None:
    environ = {"SOULWORKER_CONCURENCY": "3", "SOULWORKER_CONCURRENCY": "3", "HOME": "/root"}
    assert unknown_variables(environ) == ["SOULWORKER_CONCURENCY"]


def test_every_knob_has_a_reason_and_the_readme_documents_it() -> None:
    readme = README.read_text(encoding="utf-8")
    for _, knob in iter_knobs():
        assert len(knob.reason) > 20, knob.env
        assert f"`{knob.env}`" in readme, f"{knob.env} is missing from README.md"
    assert settings_table_markdown() in readme, "README's settings table is out of date"
