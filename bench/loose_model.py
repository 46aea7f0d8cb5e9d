"""Imports against a loose model: how many finish, what each costs in calls, and whether every
billed token is recorded.

Runs ``--imports`` jobs (realistic generated ZIP exports, one per user) through the real daemon
and the real anthropic SDK against the tests' Messages API server answering as ``LooseModel``:
valid for the wire schema, but with fewer or more items than described, over-long strings, fields
left out, "not enough data", and a generic ``ai_name`` in about half the answers. With
``--hard-violations`` the first quick-pass answer of every import also breaks hard rules.

    python bench/loose_model.py [--imports 20] [--conversations 12] [--hard-violations]

Prints: imports completed out of started, calls per import (median, min, max; by purpose), re-asks
and fallback names, the repairs recorded by rule, and recorded against billed tokens.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.scratch_import import prepare_job, worker_env  # noqa: E402
from soulworker.llm.ai_name import FALLBACK_NAMES  # noqa: E402
from soulworker.llm.schemas import SOULPRINT  # noqa: E402
from soulworker.testing import postgres as pg  # noqa: E402
from soulworker.testing.export_generator import ExportForm, GeneratorConfig, write_export  # noqa: E402
from soulworker.testing.messages_api import (  # noqa: E402
    FakeMessagesAPI,
    LooseModel,
    RecordedRequest,
    answer,
    generate_from_schema,
    recorded_usage,
)
from soulworker.testing.storage_server import StorageServer  # noqa: E402


def broken_soulprint() -> dict[str, Any]:
    data: dict[str, Any] = generate_from_schema(SOULPRINT.wire_schema, random.Random(7))
    data["soul"]["formality_level"] = "whatever fits"
    del data["identity"]["ai_name"]
    return data


def is_first_quick_pass(request: RecordedRequest) -> bool:
    return request.purpose == "quick_pass" and isinstance(
        request.body["messages"][0]["content"], str
    )


def run(imports: int, conversations: int, hard_violations: bool, server: str) -> None:
    with (
        pg.scratch_database(server) as database_url,
        StorageServer() as storage,
        FakeMessagesAPI(responder=LooseModel()) as api,
        tempfile.TemporaryDirectory() as scratch,
    ):
        env = worker_env(
            database_url,
            storage,
            ANTHROPIC_API_KEY="sk-ant-bench-0123456789",
            ANTHROPIC_BASE_URL=api.base_url,
            SOULWORKER_MODEL_STAGES="on",
            SOULWORKER_FULL_PASS_BATCH_TOKENS="4000",
            # Direct: the benchmark reads the answers from the direct requests it records.
            SOULWORKER_FULL_PASS_MODE="direct",
            SOULWORKER_POLL_SECONDS="0.5",
            SOULWORKER_RETRY_BASE_SECONDS="0.2",
            SOULWORKER_RETRY_MAX_SECONDS="1",
        )
        for number in range(imports):
            export = Path(scratch) / f"export-{number}.zip"
            config = GeneratorConfig(
                seed=1000 + number, conversations=conversations, form=ExportForm.ZIP
            )
            write_export(export, config)
            prepare_job(env, storage, export)
            if hard_violations:
                api.script(answer(broken_soulprint(), when=is_first_quick_pass))
        subprocess.run(
            [sys.executable, "-m", "soulworker", "run", "--drain"],
            env=env,
            cwd=REPO_ROOT,
            check=True,
        )
        with psycopg.connect(database_url, row_factory=dict_row) as conn:
            jobs = conn.execute(
                "select j.status, j.attempt, j.result, j.errors, p.ai_name from import_jobs j "
                "join user_profiles p on p.import_job_id = j.id"
            ).fetchall()
        report(jobs, api, imports, hard_violations)


def report(
    jobs: list[dict[str, Any]], api: FakeMessagesAPI, started: int, hard_violations: bool
) -> None:
    completed = [job for job in jobs if job["status"] == "succeeded"]
    empty: dict[str, dict[str, Any]] = {"by_purpose": {}, "total": {}}
    calls = [(job["result"].get("model_usage") or empty)["total"].get("calls", 0) for job in jobs]
    by_purpose: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    recorded: Counter[str] = Counter()
    for job in jobs:
        usage = job["result"].get("model_usage") or empty
        for purpose, totals in usage["by_purpose"].items():
            by_purpose[purpose] += totals["calls"]
        recorded.update(recorded_usage(usage["total"]))
        for entry in job["result"].get("degraded") or []:
            rules[entry["rule"]] += entry["count"]
    billed = api.billed()
    re_asks = sum(
        1
        for request in api.message_requests
        if request.purpose in ("quick_pass", "soulprint_v2")
        and not isinstance(request.body["messages"][0]["content"], str)
    )
    print(f"date: {datetime.now(UTC).date()}  machine: {platform.node()}, {platform.machine()}")
    print(f"hard violation in every first quick-pass answer: {hard_violations}")
    print(f"imports completed: {len(completed)} of {started} started")
    print(f"attempts: {Counter(job['attempt'] for job in jobs)}")
    print(
        f"statuses: {Counter(job['status'] for job in jobs)}; errors: "
        f"{Counter(e['code'] for job in jobs for e in job['errors'])}"
    )
    print(
        f"calls per import: median {statistics.median(calls)}, min {min(calls)}, "
        f"max {max(calls)}; by purpose (all imports): {dict(sorted(by_purpose.items()))}"
    )
    print(
        f"re-asks: {re_asks}; fallback names: "
        f"{sum(1 for job in jobs if job['ai_name'] in FALLBACK_NAMES)}"
    )
    print(f"repairs and skips recorded, by rule: {dict(rules.most_common())}")
    print(f"recorded: {dict(recorded)}")
    print(f"billed:   {billed}")
    print(f"recorded == billed: {dict(recorded) == billed}")
    print(f"requests sent twice without a transport failure: {len(api.repeated_bodies())}")
    print(json.dumps({"completed": len(completed), "started": started}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imports", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--hard-violations", action="store_true")
    parser.add_argument("--database-url", help="a server where this user may create databases")
    args = parser.parse_args()
    server = args.database_url or pg.find_server()
    if server is None:
        sys.exit("no PostgreSQL server found (set --database-url)")
    run(args.imports, args.conversations, args.hard_violations, server)


if __name__ == "__main__":
    main()
