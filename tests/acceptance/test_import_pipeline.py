"""The import pipeline through the real daemon: Storage download, parse, chunks, profile (§4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.pipeline_harness import ImportHarness
from tests.fakes.export_generator import ExportForm, GeneratorConfig, write_export

pytestmark = pytest.mark.db


def test_a_zip_export_becomes_chunks_and_a_complete_profile(
    database_url: str, tmp_path: Path
) -> None:
    export = tmp_path / "export.zip"
    summary = write_export(
        export,
        GeneratorConfig(seed=11, conversations=40, form=ExportForm.ZIP_SHARDS),
        collect_facts=True,
    )
    with ImportHarness(database_url) as h:
        user = h.new_user()
        h.upload(user, export)
        job_id = h.enqueue(user)
        worker = h.worker().start()
        assert worker.wait(60) == 0, worker.output()[-3000:]
        job = h.job(job_id)
        assert job["status"] == "succeeded", job["last_error"]
        assert job["progress_percent"] == 100
        assert summary.expected is not None
        with_dialogue = [f for f in summary.expected.values() if f.messages]
        assert job["result"]["conversations"] == len(with_dialogue)
        assert job["result"]["messages"] == sum(len(f.messages) for f in with_dialogue)
        assert job["result"]["chunks"] == h.chunk_count(user) > 0
        assert set(job["result"]["stage_seconds"]) == {"download", "parse"}
        profile = h.profile(user)
        assert profile is not None
        assert (profile["import_status"], profile["progress_percent"]) == ("complete", 100)
        assert h.artifacts(job_id) == {}, "personal working data is gone once the job succeeded"
