"""The configuration check: the settings parse, the daemon's required variables are set, the
storage key is usable, and no ``SOULWORKER_*`` variable is unknown (a typo would be silently
ignored)."""

from __future__ import annotations

from typing import Any

from soulworker.doctor.core import Check, DoctorContext, Outcome, fail, merge, ok, warn
from soulworker.settings import Settings, unknown_variables
from soulworker.storage.download import KEY_KIND_NAMES, StorageConfig, StorageConfigError

STORAGE_KEY_HINT = (
    "copy the service_role key (legacy) or a secret key (sb_secret_…) from the Supabase "
    "dashboard: Project Settings → API Keys"
)


async def check_configuration(context: DoctorContext) -> Outcome:
    """Settings parse; required variables set; the storage key usable; no unknown variable."""
    if context.settings is None:
        return fail(
            context.settings_error or "the settings could not be read",
            "fix that variable; `soulworker settings --markdown` lists every setting, its "
            "default and what it accepts",
        )
    settings = context.settings
    problems: list[Outcome] = []
    missing = _missing_variables(settings)
    if missing:
        problems.append(
            fail(
                f"missing {', '.join(missing)}",
                "set them in the service's environment (Render: Environment, as secrets)",
            )
        )
    key_kind = None
    if settings.supabase_url and settings.supabase_service_key:
        try:
            key_kind = StorageConfig.from_settings(settings).key_kind
        except StorageConfigError as exc:
            problems.append(fail(str(exc), STORAGE_KEY_HINT))
        if key_kind == "opaque":
            problems.append(
                warn(
                    "SUPABASE_SERVICE_KEY is neither a JWT (eyJ…) nor a secret key (sb_secret_…)",
                    STORAGE_KEY_HINT,
                )
            )
    unknown = unknown_variables(context.environ)
    if unknown:
        problems.append(
            warn(
                f"unknown variable(s) ignored: {', '.join(unknown)}",
                "check the spelling; `soulworker settings` lists every valid name",
            )
        )
    details: dict[str, Any] = {
        "missing": missing,
        "unknown": unknown,
        "storage_key_kind": key_kind,
        "model_stages": settings.model_stages,
    }
    if problems:
        return merge(problems, details)
    stages = (
        f"model stages on ({settings.quick_pass_model})"
        if settings.model_stages
        else "model stages off"
    )
    key_name = KEY_KIND_NAMES[key_kind] if key_kind else "unknown"
    return ok(f"required variables set; storage key: {key_name}; {stages}", **details)


def _missing_variables(settings: Settings) -> list[str]:
    missing = []
    if not settings.database_url:
        missing.append("DATABASE_URL")
    if not settings.supabase_url:
        missing.append("SUPABASE_URL")
    if not settings.supabase_service_key:
        missing.append("SUPABASE_SERVICE_KEY")
    if settings.model_stages and not settings.anthropic_api_key:
        missing.append("ANTHROPIC_API_KEY (or set SOULWORKER_MODEL_STAGES=off)")
    return missing


CONFIGURATION = Check("configuration", check_configuration)
