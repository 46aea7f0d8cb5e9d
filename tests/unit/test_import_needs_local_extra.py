"""``soulworker import`` without the ``local`` extra (the daemon's image has no ``rich``): one
line saying what to install, exit 2, in a real subprocess where ``rich`` cannot be imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from soulworker.cli.import_command import LOCAL_EXTRA_MISSING

# sys.modules[name] = None makes `import name` raise ModuleNotFoundError, as if not installed.
WITHOUT_RICH = (
    "import sys\n"
    "sys.modules['rich'] = None\n"
    "from soulworker.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_import_without_rich_says_which_extra_to_install(tmp_path: Path) -> None:
    export = tmp_path / "export.zip"
    export.write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_RICH, "import", str(export)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"soulworker: {LOCAL_EXTRA_MISSING}"
    assert "Traceback" not in result.stderr
