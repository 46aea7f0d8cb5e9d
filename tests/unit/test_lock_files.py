"""The lock files in requirements/ agree with pyproject.toml (docs/dependencies.md).

A range changed or a dependency added in pyproject.toml without running
``requirements/compile`` would leave CI and the image installing something else than the
package declares; these tests fail then, and say which requirement is out of date.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = REPO_ROOT / "pyproject.toml"
RUNTIME_LOCK = REPO_ROOT / "requirements" / "runtime.txt"
DEV_LOCK = REPO_ROOT / "requirements" / "dev.txt"
PROJECT = "soulworker"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")


def pins(lock: Path) -> dict[str, str]:
    """Package name (canonical) → pinned version."""
    found: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        if match := PIN.match(line):
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def requirements(*extras: str) -> list[Requirement]:
    """The project's requirements with ``extras``, the project's own extras expanded."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    found = [Requirement(text) for text in project["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == PROJECT:
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize(
    ("lock", "extras"), [(RUNTIME_LOCK, ()), (DEV_LOCK, ("dev",))], ids=["runtime", "dev"]
)
def test_the_lock_pins_every_requirement_within_its_range(
    lock: Path, extras: tuple[str, ...]
) -> None:
    locked = pins(lock)
    stale = []
    for requirement in requirements(*extras):
        version = locked.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            stale.append(f"{requirement} (locked: {version})")
    assert stale == [], f"run requirements/compile: {lock.name} does not satisfy {stale}"


def test_the_runtime_lock_is_the_dev_lock_s_versions() -> None:
    dev = pins(DEV_LOCK)
    runtime = pins(RUNTIME_LOCK)
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_image_leaves_out_what_only_soulworker_import_needs() -> None:
    runtime = pins(RUNTIME_LOCK)
    for requirement in requirements("local"):
        if requirement not in requirements():
            assert canonicalize_name(requirement.name) not in runtime, requirement.name
