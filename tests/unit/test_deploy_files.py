"""The deployment files: ``Dockerfile``, ``.dockerignore`` and ``render.yaml``.

There is no Docker engine here, so the Dockerfile is parsed and its rules checked (a pinned
base image, a non-root final user, exec-form start command, no compilers in the final stage),
and, most importantly, **its builder stage is executed**: the same ``COPY`` and ``RUN``
instructions, in order, with every absolute path mapped into a temporary directory that stands
for the builder's filesystem, and the build context filtered through ``.dockerignore``. Then
the installed copy is exercised: ``soulworker --version``, ``soulworker settings --markdown``,
its packaged SQL files, and ``soulworker migrate`` against a real database.

The trade-off, for speed (a few seconds instead of a minute) and to work offline: the installs
are changed. The Dockerfile installs the locked dependencies (``requirements/runtime.txt``, with
hashes, ``--only-binary=:all:``) from the package index, then the wheel with ``--no-deps``; here
the lock is not installed but checked to pin exactly the versions the suite runs with, the wheel's
install gets ``--no-deps --no-index``, and the new environment sees the test suite's own
site-packages through a ``.pth`` file. So this proves
that the wheel builds from exactly the files the Dockerfile copies (nothing missing from
``COPY`` or excluded by ``.dockerignore``), that it installs, that its entry point and its SQL
files work from an installed copy rather than the checkout, and that its declared dependency
ranges accept the versions the suite is tested with (``pip check``). It does not prove that
the index serves binary wheels of those dependencies for the image's platform; the Docker
build itself fails on that (``--only-binary``), before anything is deployed. Building the
wheel uses pip's build isolation exactly as the Dockerfile does, so the build backend
(hatchling) is fetched from the configured package index.

``render.yaml`` is read with a small parser for the YAML subset it uses (PyYAML is not a
dependency); the parser refuses anything outside that subset, so the file cannot silently
grow past what the test understands.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from soulworker import __version__
from soulworker.cli import build_parser, migrate_command, run_command
from soulworker.jobs.worker import CANCEL_GRACE_SECONDS, RELEASE_GRACE_SECONDS
from soulworker.settings import Settings, iter_knobs, settings_table_markdown

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
RENDER_YAML = REPO_ROOT / "render.yaml"
COMMAND_TIMEOUT_SECONDS = 120

PINNED_BASE_IMAGE = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")
COMPILER_PACKAGES = frozenset(
    {"gcc", "g++", "cc", "clang", "make", "build-essential", "libc6-dev", "python3-dev"}
)

# Render's instance types and their memory in MB (docs/platform.md).
RENDER_PLAN_MEMORY_MB = {
    "starter": 512,
    "standard": 2048,
    "pro": 4096,
    "pro plus": 8192,
    "pro max": 16384,
    "pro ultra": 32768,
}
RENDER_REGIONS = frozenset({"oregon", "ohio", "virginia", "frankfurt", "singapore"})
# Render's accepted range for maxShutdownDelaySeconds (docs/platform.md).
RENDER_MAX_SHUTDOWN_DELAY_SECONDS = 300
# What a model call in flight at SIGTERM needs to finish (docs/platform.md, "What a deploy costs"):
# the largest output limit any stage asks for (the quick pass's and the v2 sections' retry,
# 16,384 tokens; the finish stage's reductions ask for 16,000) at an output rate of 100 tokens/s,
# the low end for a Haiku-class model, plus up to 10 s before the first token of a long prompt.
LONGEST_MODEL_OUTPUT_TOKENS = 16_384
OUTPUT_TOKENS_PER_SECOND = 100
FIRST_TOKEN_SECONDS = 10
# BENCHMARKS.md: a job's peak RSS stays under this.
PEAK_JOB_RSS_MB = 200
# Measured: the interpreter with soulworker, psycopg and the anthropic SDK loaded, ~95 MiB.
PROCESS_BASELINE_MB = 100
# Room for the page cache of the downloaded exports and an export near the target.
MEMORY_HEADROOM_FACTOR = 2
SECRET_VARIABLES = ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_KEY", "ANTHROPIC_API_KEY")


# --- a Dockerfile reader -------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def parse_dockerfile(text: str) -> Dockerfile:
    """Instructions grouped by stage; continuation lines joined, comments dropped, ``ARG``s
    before the first ``FROM`` substituted into ``FROM`` lines."""
    logical: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped too
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append((start, pending + line))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            arg_name, _, default = args.partition("=")
            global_args[arg_name] = default
        elif keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m[1] or m[2]], args)
            parts = image.split()
            stage_name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=stage_name))
        else:
            assert stages, f"line {number}: {keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return Dockerfile(global_args, stages)


def env_pairs(instruction: Instruction) -> dict[str, str]:
    """``ENV A=1 B=2`` (the key=value form) as a dict."""
    return dict(token.split("=", 1) for token in shlex.split(instruction.args))


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def test_every_stage_uses_the_same_pinned_slim_bookworm_base(dockerfile: Dockerfile) -> None:
    bases = {stage.base for stage in dockerfile.stages}
    assert len(bases) == 1, bases
    base = bases.pop()
    assert PINNED_BASE_IMAGE.match(base), base
    assert "latest" not in base


def test_the_final_stage_runs_as_the_unprivileged_user_it_creates(
    dockerfile: Dockerfile,
) -> None:
    users = dockerfile.final.all("USER")
    assert users, "the final stage never switches away from root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    created = " ".join(run.args for run in dockerfile.final.all("RUN"))
    uid = re.search(r"useradd\b.*--uid (\d+)", created)
    assert uid is not None, "the final stage does not create its user"
    assert user in (uid.group(1), "soulworker")
    # USER comes before the start command, so the daemon (and migrate) never run as root.
    cmd_line = dockerfile.final.all("CMD")[-1].line
    assert users[-1].line < cmd_line


def test_the_start_command_is_exec_form_soulworker_run(dockerfile: Dockerfile) -> None:
    cmds = dockerfile.final.all("CMD")
    assert len(cmds) == 1
    argv = json.loads(cmds[0].args)
    assert isinstance(argv, list)
    assert argv == ["soulworker", "run"]
    for entrypoint in dockerfile.final.all("ENTRYPOINT"):
        assert isinstance(json.loads(entrypoint.args), list)
    # The command is one the CLI accepts, and it is the daemon.
    args = build_parser().parse_args(argv[1:])
    assert args.func is run_command.run
    assert args.drain is False


def test_the_final_stage_has_no_compilers_and_only_the_built_environment(
    dockerfile: Dockerfile,
) -> None:
    for run in dockerfile.final.all("RUN"):
        words = set(re.split(r"[\s;&|]+", run.args))
        assert not words & COMPILER_PACKAGES, run
        assert "pip" not in words, f"line {run.line}: installs into the final stage"
    copies = dockerfile.final.all("COPY")
    assert copies
    for copy in copies:
        assert copy.args.startswith("--from=builder "), copy


def test_the_final_stage_sets_unbuffered_json_logs(dockerfile: Dockerfile) -> None:
    env: dict[str, str] = {}
    for instruction in dockerfile.final.all("ENV"):
        env.update(env_pairs(instruction))
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["SOULWORKER_LOG_FORMAT"] == "json"
    assert env["PATH"].startswith("/opt/soulworker/bin:")
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("SOULWORKER_")})
    assert settings.log_format == "json"


# --- .dockerignore ---------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """``(negated, regex)`` per line: ``*`` within a segment, ``**`` across segments."""
    patterns = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = ""
        index = 0
        while index < len(glob):
            if glob.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif glob.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif glob[index] == "*":
                regex, index = regex + "[^/]*", index + 1
            elif glob[index] == "?":
                regex, index = regex + "[^/]", index + 1
            else:
                regex, index = regex + re.escape(glob[index]), index + 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def excluded(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path, or any folder above it, decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negated, pattern in patterns:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            verdict = not negated
    return verdict


def build_context(destination: Path) -> None:
    """Copy the repository as Docker would send it: only what .dockerignore admits."""
    patterns = dockerignore_patterns()
    for directory, dirnames, filenames in os.walk(REPO_ROOT):
        relative_dir = Path(directory).relative_to(REPO_ROOT)
        # Prune folders that are excluded and that no "!" pattern reaches into (.venv, .git).
        dirnames[:] = [
            d
            for d in dirnames
            if not excluded(str(relative_dir / d), patterns)
            or any(
                n and p.pattern.startswith(re.escape(str(relative_dir / d))) for n, p in patterns
            )
        ]
        for name in filenames:
            relative = relative_dir / name
            if not excluded(str(relative), patterns):
                target = destination / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO_ROOT / relative, target)


def test_dockerignore_admits_what_the_build_copies_and_keeps_out_the_rest(
    dockerfile: Dockerfile,
) -> None:
    patterns = dockerignore_patterns()
    for copy in dockerfile.stage("builder").all("COPY"):
        for source in shlex.split(copy.args)[:-1]:
            assert not excluded(source.rstrip("/"), patterns), source
            assert (REPO_ROOT / source).exists(), source
    for inside in ("soulworker/cli/__init__.py", "sql/migrations/0001_import_jobs.sql"):
        assert not excluded(inside, patterns)
    for outside in (
        ".env",
        ".git/HEAD",
        ".venv/bin/python",
        "tests/conftest.py",
        "bench/out/result.json",
        "soulworker/__pycache__/db.cpython-311.pyc",
        "export.zip",
    ):
        assert excluded(outside, patterns), outside


# --- the builder stage, executed -------------------------------------------------------------


@dataclass
class Installed:
    """What the builder stage produced: the wheel and the environment the image ships."""

    root: Path
    wheel: Path
    venv: Path
    workdir: Path

    def run(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """An installed command, from a folder that is not the checkout, with a clean env."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("SOULWORKER_", "PYTHON"))}
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=self.root,
            env={**clean, **(env or {})},
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )

    @property
    def site_packages(self) -> Path:
        return next((self.venv / "lib").glob("python3*/site-packages"))


def in_root(root: Path, command: str) -> str:
    """Every absolute path in ``command`` (``/wheels``, ``/opt/…``) moved under ``root``."""
    return re.sub(r"(?<![\w./-])/(?=[A-Za-z])", lambda _: f"{root}/", command)


def is_dependency_install(command: str) -> bool:
    return bool(re.search(r"\bpip\b.*\binstall\b", command))


LOCKED_INSTALL = re.compile(r"\s-r\s+(\S+)")
LOCK_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def assert_lock_pins_the_tested_versions(lock: Path) -> None:
    """Every pin of ``lock`` that applies here is the version this test suite runs with."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.markers import Marker

    pins = 0
    lines = lock.read_text().splitlines()
    for line, following in zip(lines, [*lines[1:], ""], strict=True):
        match = LOCK_PIN.match(line)
        if match is None:
            continue
        name, pinned, marker = match.groups()
        assert following.strip().startswith("--hash=sha256:"), f"{name} has no hash"
        if marker and not Marker(marker).evaluate():
            continue
        try:
            tested = version(name)
        except PackageNotFoundError:
            tested = None
        assert tested == pinned, f"{lock.name} pins {name}=={pinned}; the tests run {tested}"
        pins += 1
    assert pins, f"no pins read from {lock}"


@pytest.fixture(scope="module")
def installed(dockerfile: Dockerfile, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Run the builder stage's COPY and RUN instructions (see the module docstring)."""
    base = tmp_path_factory.mktemp("docker-build")
    context, root = base / "context", base / "root"
    context.mkdir()
    root.mkdir()
    build_context(context)
    builder = dockerfile.stage("builder")
    workdir = root
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", str(base)),
    }
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT"):
        if name in os.environ:
            env[name] = os.environ[name]
    for instruction in builder.instructions:
        if instruction.keyword == "ENV":
            env.update(env_pairs(instruction))
        elif instruction.keyword == "WORKDIR":
            workdir = Path(in_root(root, instruction.args))
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            *sources, destination = shlex.split(instruction.args)
            target = workdir / destination
            for source in sources:
                origin = context / source
                if origin.is_dir():
                    shutil.copytree(origin, target if len(sources) == 1 else target / source)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        elif instruction.keyword == "RUN":
            command = in_root(root, instruction.args)
            locked = LOCKED_INSTALL.search(command) if is_dependency_install(command) else None
            if locked is not None:
                assert "--require-hashes" in command, "the lock is installed with its hashes"
                assert_lock_pins_the_tested_versions(workdir / locked.group(1))
                continue
            if is_dependency_install(command):
                command = re.sub(r"\binstall\b", "install --no-deps --no-index", command, count=1)
            completed = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_SECONDS,
                check=False,
            )
            assert completed.returncode == 0, (
                f"Dockerfile line {instruction.line} failed: {instruction.args}\n"
                f"{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}"
            )
            if is_dependency_install(command):
                # Stand-in for the dependencies the image downloads (see the module docstring).
                venv = Path(in_root(root, "/opt/soulworker"))
                site = next((venv / "lib").glob("python3*/site-packages"))
                (site / "_test_dependencies.pth").write_text(
                    sysconfig.get_paths()["purelib"] + "\n"
                )
        else:
            raise AssertionError(
                f"line {instruction.line}: the test does not emulate {instruction.keyword}"
            )
    wheels = list(Path(in_root(root, "/wheels")).glob("soulworker-*.whl"))
    assert len(wheels) == 1, wheels
    final_copy = dockerfile.final.all("COPY")[0].args.split()
    assert final_copy[1] == final_copy[2] == "/opt/soulworker", "the final stage copies the venv"
    return Installed(root, wheels[0], Path(in_root(root, "/opt/soulworker")), workdir)


def test_the_installed_command_runs_from_the_installed_copy(installed: Installed) -> None:
    version = installed.run("soulworker", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"soulworker {__version__}"

    table = installed.run("soulworker", "settings", "--markdown")
    assert table.returncode == 0, table.stderr
    assert table.stdout.strip() == settings_table_markdown()

    where = installed.run(
        "python", "-c", "import soulworker.sql_files as f; print(f.__file__); print(f.sql_root())"
    )
    assert where.returncode == 0, where.stderr
    module_file, sql_root = where.stdout.split()
    assert Path(module_file).is_relative_to(installed.site_packages)
    assert Path(sql_root) == installed.site_packages / "soulworker" / "sql"


def test_the_wheel_and_the_installed_package_carry_every_sql_file(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    for folder in ("migrations", "queries"):
        root = REPO_ROOT / "sql" / folder
        expected = sorted(str(p.relative_to(root)) for p in root.rglob("*.sql"))
        assert expected, folder
        prefix = f"soulworker/sql/{folder}/"
        in_wheel = sorted(
            n.removeprefix(prefix) for n in names if n.startswith(prefix) and n.endswith(".sql")
        )
        assert in_wheel == expected
        packaged = installed.site_packages / "soulworker" / "sql" / folder
        assert sorted(str(p.relative_to(packaged)) for p in packaged.rglob("*.sql")) == expected
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]


def test_the_declared_dependency_ranges_accept_the_tested_versions(installed: Installed) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(installed.venv / "bin" / "python"), "check"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.db
def test_migrate_and_doctor_work_from_the_installed_copy(
    installed: Installed, empty_database_url: str
) -> None:
    env = {"DATABASE_URL": empty_database_url, "SOULWORKER_LOG_FORMAT": "json"}
    migrations = sorted(p.name for p in (REPO_ROOT / "sql" / "migrations").glob("*.sql"))

    first = installed.run("soulworker", "migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"applied {len(migrations)} migration(s)")
    again = installed.run("soulworker", "migrate", env=env)
    assert again.returncode == 0, again.stderr
    assert "schema is current" in again.stdout

    doctor = installed.run("soulworker", "doctor", "--json", "--check", "migrations", env=env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    report = json.loads(doctor.stdout)
    assert [c["status"] for c in report["checks"]] == ["ok", "ok"]


# --- render.yaml -----------------------------------------------------------------------------


class YamlSubsetError(ValueError):
    """render.yaml uses YAML this reader does not understand; extend the reader deliberately."""


_KEY_LINE = re.compile(r"^([A-Za-z_][\w.-]*):(?:\s+(.*))?$")


def _strip_comment(line: str) -> str:
    quote: str | None = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def _scalar(text: str, line: int) -> Any:
    if text[0] in "[{&*|>!%@`":
        raise YamlSubsetError(f"line {line}: unsupported YAML {text!r}")
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~"):
        return None
    return text


def parse_yaml_subset(text: str) -> Any:
    """Block mappings, block sequences (of scalars or mappings), plain/quoted scalars, ints,
    booleans and comments: the YAML a Render Blueprint needs. Anything else raises."""
    lines: list[tuple[int, str, int]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        content = _strip_comment(raw).rstrip()
        if not content.strip():
            continue
        indent = len(content) - len(content.lstrip(" "))
        if content[indent] == "\t":
            raise YamlSubsetError(f"line {number}: tab indentation")
        lines.append((indent, content.strip(), number))

    def block(pos: int, indent: int) -> tuple[Any, int]:
        if lines[pos][1].startswith("- "):
            return sequence(pos, indent)
        return mapping(pos, indent)

    def mapping(pos: int, indent: int) -> tuple[dict[str, Any], int]:
        result: dict[str, Any] = {}
        while pos < len(lines) and lines[pos][0] == indent and not lines[pos][1].startswith("- "):
            _, content, number = lines[pos]
            match = _KEY_LINE.match(content)
            if match is None:
                raise YamlSubsetError(f"line {number}: expected 'key: value'")
            key, rest = match.group(1), match.group(2)
            if key in result:
                raise YamlSubsetError(f"line {number}: duplicate key {key!r}")
            pos += 1
            if rest:
                result[key] = _scalar(rest, number)
            elif pos < len(lines) and lines[pos][0] > indent:
                result[key], pos = block(pos, lines[pos][0])
            elif pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
                result[key], pos = sequence(pos, indent)
            else:
                result[key] = None
        if pos < len(lines) and lines[pos][0] > indent:
            raise YamlSubsetError(f"line {lines[pos][2]}: unexpected indentation")
        return result, pos

    def sequence(pos: int, indent: int) -> tuple[list[Any], int]:
        items: list[Any] = []
        while pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
            _, content, number = lines[pos]
            item = content[2:].lstrip()
            if _KEY_LINE.match(item):
                # "- key: value" opens a mapping whose keys line up with "key".
                item_indent = indent + len(content) - len(item)
                lines[pos] = (item_indent, item, number)
                value, pos = mapping(pos, item_indent)
            else:
                value, pos = _scalar(item, number), pos + 1
            items.append(value)
        return items, pos

    if not lines:
        return None
    value, end = block(0, lines[0][0])
    if end != len(lines):
        raise YamlSubsetError(f"line {lines[end][2]}: unexpected content")
    return value


def test_the_yaml_reader_reads_blocks_and_refuses_what_it_does_not_know() -> None:
    parsed = parse_yaml_subset(
        "a: 1  # comment\nb:\n  - x: 'y # not a comment'\n    z: true\n  - plain\nc: json\n"
    )
    assert parsed == {"a": 1, "b": [{"x": "y # not a comment", "z": True}, "plain"], "c": "json"}
    for unsupported in ("a: [1, 2]\n", "a: &anchor 1\n", "a: |\n  text\n", "a: 1\na: 2\n"):
        with pytest.raises(YamlSubsetError):
            parse_yaml_subset(unsupported)


@pytest.fixture(scope="module")
def worker() -> dict[str, Any]:
    blueprint = parse_yaml_subset(RENDER_YAML.read_text(encoding="utf-8"))
    services = blueprint["services"]
    assert len(services) == 1
    service: dict[str, Any] = services[0]
    return service


@pytest.fixture(scope="module")
def blueprint_env(worker: dict[str, Any]) -> dict[str, dict[str, Any]]:
    variables = {entry["key"]: entry for entry in worker["envVars"]}
    assert len(variables) == len(worker["envVars"]), "a variable is listed twice"
    return variables


@pytest.fixture(scope="module")
def blueprint_settings(blueprint_env: dict[str, dict[str, Any]]) -> Settings:
    """The settings the worker runs with: the Blueprint's values over the defaults."""
    values = {key: str(entry["value"]) for key, entry in blueprint_env.items() if "value" in entry}
    return Settings.from_env(values)


def test_the_blueprint_is_a_docker_worker_built_from_this_dockerfile(
    worker: dict[str, Any],
) -> None:
    assert worker["type"] == "worker"
    assert worker["runtime"] == "docker"
    assert (REPO_ROOT / worker["dockerfilePath"]).resolve() == DOCKERFILE
    assert (REPO_ROOT / worker["dockerContext"]).resolve() == REPO_ROOT
    assert worker["region"] in RENDER_REGIONS
    assert isinstance(worker["numInstances"], int)
    assert worker["numInstances"] >= 1


def test_the_plan_has_memory_for_the_configured_concurrency(
    worker: dict[str, Any], blueprint_settings: Settings
) -> None:
    def needed_mb(concurrency: int) -> int:
        return concurrency * PEAK_JOB_RSS_MB * MEMORY_HEADROOM_FACTOR + PROCESS_BASELINE_MB

    plan = worker["plan"]
    assert plan in RENDER_PLAN_MEMORY_MB
    assert RENDER_PLAN_MEMORY_MB[plan] >= needed_mb(blueprint_settings.concurrency)
    # The rule has teeth: the smallest plan would not do for the default concurrency.
    assert RENDER_PLAN_MEMORY_MB["starter"] < needed_mb(Settings().concurrency)


def test_the_shutdown_delay_covers_the_shutdown_budget_and_release_grace(
    worker: dict[str, Any], blueprint_settings: Settings
) -> None:
    delay = worker["maxShutdownDelaySeconds"]
    assert isinstance(delay, int)
    assert 1 <= delay <= RENDER_MAX_SHUTDOWN_DELAY_SECONDS
    assert delay > (
        blueprint_settings.shutdown_seconds + RELEASE_GRACE_SECONDS + CANCEL_GRACE_SECONDS
    )


def test_the_shutdown_budget_lets_a_model_call_in_flight_finish(
    blueprint_settings: Settings,
) -> None:
    longest_call = LONGEST_MODEL_OUTPUT_TOKENS / OUTPUT_TOKENS_PER_SECOND + FIRST_TOKEN_SECONDS
    assert blueprint_settings.shutdown_seconds >= longest_call
    # A model request is cut off by its own timeout in any case; a budget past it buys nothing.
    assert blueprint_settings.shutdown_seconds <= blueprint_settings.model_timeout_seconds


def test_the_default_shutdown_budget_fits_the_platforms_default_delay() -> None:
    """Without render.yaml (a service made by hand, another platform) the delay is 30 s."""
    default_delay = 30
    budget = Settings().shutdown_seconds
    assert budget + RELEASE_GRACE_SECONDS + CANCEL_GRACE_SECONDS < default_delay


def test_deploys_wait_for_checks_to_pass(worker: dict[str, Any]) -> None:
    assert worker["autoDeployTrigger"] == "checksPass"


def test_secrets_are_prompted_for_and_never_committed(
    blueprint_env: dict[str, dict[str, Any]],
) -> None:
    secret_knobs = {knob.env for _, knob in iter_knobs() if knob.secret}
    for name in SECRET_VARIABLES:
        assert name in blueprint_env, name
    for name, entry in blueprint_env.items():
        if name in SECRET_VARIABLES or name in secret_knobs:
            assert entry == {"key": name, "sync": False}, entry


def test_every_variable_is_a_real_setting_with_a_valid_value(
    blueprint_env: dict[str, dict[str, Any]], blueprint_settings: Settings
) -> None:
    knobs = {knob.env for _, knob in iter_knobs()}
    for name in blueprint_env:
        assert name in knobs, f"{name} is not a setting soulworker reads"
    assert blueprint_env["SOULWORKER_LOG_FORMAT"]["value"] == "json"
    assert blueprint_settings.log_format == "json"


def test_the_pre_deploy_command_is_migrate_without_a_shell(worker: dict[str, Any]) -> None:
    command = worker["preDeployCommand"]
    assert not re.search(r"[;&|<>`$]", command), "Render does not run it through a shell"
    argv = shlex.split(command)
    assert argv[0] == "soulworker"
    assert build_parser().parse_args(argv[1:]).func is migrate_command.run
