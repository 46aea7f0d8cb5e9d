"""What a start-up imports: a command that makes no model call never loads the model SDK,
which takes ~1.5 s of every start (and of every worker process the tests start), and only
``soulworker doctor`` loads doctor's checks (~0.3 s).

Each case runs the command in a fresh interpreter, the only place where ``sys.modules`` says
what the command itself imported, and reads the modules it had loaded when it exited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from soulworker import doctor
from soulworker.cli import doctor_command
from soulworker.testing.storage_server import FAKE_SERVICE_JWT

# Runs the command like `python -m soulworker ARGS`; at exit (argparse's --help exits too) it
# writes the names of the loaded modules to MODULES_OUT.
RECORD_MODULES = (
    "import atexit, json, os, sys\n"
    "def record():\n"
    "    with open(os.environ['MODULES_OUT'], 'w') as out:\n"
    "        json.dump(sorted(sys.modules), out)\n"
    "atexit.register(record)\n"
    "from soulworker.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)

MODEL_SDK = "anthropic"
DOCTOR_CHECKS = "soulworker.doctor.checks"


def loaded_modules(tmp_path: Path, args: list[str], **env: str) -> tuple[int, set[str], str]:
    """``(exit code, modules loaded, stderr)`` of ``soulworker ARGS`` in a new interpreter."""
    out = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", RECORD_MODULES, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "MODULES_OUT": str(out), "TMPDIR": str(tmp_path), **env},
    )
    modules: list[str] = json.loads(out.read_text())
    return result.returncode, set(modules), result.stderr


def test_help_loads_no_model_sdk(tmp_path: Path) -> None:
    code, modules, stderr = loaded_modules(tmp_path, ["--help"])
    assert code == 0, stderr
    assert MODEL_SDK not in modules
    assert DOCTOR_CHECKS not in modules


def test_import_of_a_missing_file_loads_no_model_sdk(tmp_path: Path) -> None:
    code, modules, stderr = loaded_modules(tmp_path, ["import", str(tmp_path / "missing.zip")])
    assert code == 2, stderr
    assert stderr.strip() == f"soulworker: no such file: {tmp_path / 'missing.zip'}"
    assert MODEL_SDK not in modules
    assert DOCTOR_CHECKS not in modules


def test_the_daemon_with_the_model_stages_off_loads_no_model_sdk(
    tmp_path: Path, database_url: str
) -> None:
    # The default handler (the import pipeline) is built, then the queue drains: nothing is
    # queued in this new database, so the worker stops at once.
    code, modules, stderr = loaded_modules(
        tmp_path,
        ["run", "--drain"],
        DATABASE_URL=database_url,
        SOULWORKER_MODEL_STAGES="off",
        SOULWORKER_EMBED_PROVIDER="off",
        SUPABASE_URL="http://127.0.0.1:9",
        SUPABASE_SERVICE_KEY=FAKE_SERVICE_JWT,
    )
    assert code == 0, stderr[-3000:]
    assert "soulworker.pipeline.handler" in modules, "the pipeline was the handler"
    assert MODEL_SDK not in modules
    assert DOCTOR_CHECKS not in modules


def test_doctor_loads_its_checks(tmp_path: Path) -> None:
    code, modules, stderr = loaded_modules(tmp_path, ["doctor", "--check", "ijson"])
    assert code == 0, stderr
    assert DOCTOR_CHECKS in modules


def test_the_commands_copy_of_the_check_names_and_time_limit_is_doctors() -> None:
    # The command names them without importing the checks (see soulworker.cli.doctor_command).
    assert doctor_command.CHECK_NAMES == doctor.CHECK_NAMES
    assert doctor_command.CHECK_TIMEOUT_SECONDS == doctor.CHECK_TIMEOUT_SECONDS
