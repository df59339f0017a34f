"""Long stages say what they are doing at a steady beat, and stop saying it when they end."""

import logging
import time

import pytest

from segrec.jobs.config import config_from_dict
from segrec.jobs.io import manifest as manifest_module
from segrec.jobs.io.manifest import RunManifest

MINIMAL = {
    "inputs": {
        "items": {"path": "i", "columns": {"id": "id"}},
        "interactions": {"path": "e", "columns": {"user_id": "u", "item_id": "i"}},
    }
}


def test_a_running_stage_logs_progress_with_its_current_activity(monkeypatch, caplog):
    monkeypatch.setattr(manifest_module, "PROGRESS_SECONDS", 0.05)
    manifest = RunManifest(config_from_dict(MINIMAL), "evaluate", "run-1")
    with caplog.at_level(logging.INFO, logger="segrec"):
        with manifest.stage("evaluate"):
            manifest.doing("evaluate: tuning ALS, cell 2 of 8")
            time.sleep(0.3)
        ended = len(caplog.records)
        time.sleep(0.2)
    lines = [r.getMessage() for r in caplog.records]
    beats = [line for line in lines if line.startswith("stage evaluate still running after")]
    assert len(beats) >= 2 and all(line.endswith("tuning ALS, cell 2 of 8") for line in beats)
    assert len(caplog.records) == ended  # no progress line once the stage is over


def test_the_manifest_keys_stages_fill_are_attributes_written_to_its_document():
    manifest = RunManifest(config_from_dict(MINIMAL), "run", "run-2")
    assert (manifest.run_id, manifest.command, manifest.status) == ("run-2", "run", "running")
    assert manifest.segments is None and manifest.stage_figures("segment") == {}
    manifest.segments = [{"segment_id": 0, "size": 3}]
    manifest.record_stage("segment", k=2, silhouette_by_k={"2": 0.4})
    assert manifest.data["segments"] == [{"segment_id": 0, "size": 3}]  # the same document manifest.json holds
    assert manifest.stage_figures("segment") == {"k": 2, "silhouette_by_k": {"2": 0.4}}
    with pytest.raises(AttributeError):
        manifest.segment_table = []  # a misspelt entry is refused, not written where nobody reads it
