"""The validate stage end to end through the CLI entry point (in-process, reusing the test session)."""

import json
import os

import pandas as pd
import pytest
import yaml

from segrec.jobs import cli
from segrec.jobs.bootstrap.synthetic import config_dict, write_parquet


@pytest.fixture
def workspace(tmp_path, synthetic_data):
    paths = write_parquet(synthetic_data, str(tmp_path / "in"))
    # Hostile extras: a duplicate item, a blank-text item, events for unknown ids, a NaN rating.
    items = pd.concat(
        [
            synthetic_data.items,
            pd.DataFrame(
                [
                    {"item_id": "i000000", "title": "dup", "description": "dup", "category": "x"},
                    {"item_id": "blank", "title": " ", "description": "<br>", "category": "x"},
                ]
            ),
        ]
    )
    items.to_parquet(paths["items"], index=False)
    events = pd.concat(
        [
            synthetic_data.interactions,
            pd.DataFrame(
                [
                    {"user_id": "u00000", "item_id": "nope", "rating": 4.0, "timestamp": 1},
                    {"user_id": "ghost", "item_id": "i000000", "rating": 4.0, "timestamp": 1},
                    {"user_id": "u00001", "item_id": "i000001", "rating": float("nan"), "timestamp": 1},
                ]
            ),
        ]
    )
    events.to_parquet(paths["interactions"], index=False)
    conf = config_dict(paths, str(tmp_path / "out"))
    conf["inputs"]["users"]["complete"] = True  # the users source lists everyone: "ghost" is unknown
    return tmp_path, conf, len(items), len(events)


def run_cli(tmp_path, conf, *args):
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return cli.main([args[0], "--conf", str(path), *args[1:]])


def test_validate_writes_outputs_and_a_reconciling_manifest(spark, workspace, capsys):
    tmp_path, conf, n_items, n_events = workspace
    assert run_cli(tmp_path, conf, "validate") == 0
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    items, events = manifest["sources"]["items"], manifest["sources"]["interactions"]
    assert items["rows_in"] == n_items and items["kept"] + items["rejected"] == n_items
    assert items["rejected_by_reason"] == {"duplicate_id": 1, "empty_text": 1}
    assert events["rejected_by_reason"] == {"invalid_rating": 1, "unknown_item": 1, "unknown_user": 1}
    assert events["kept"] == n_events - 3
    assert spark.read.parquet(str(out / "items")).count() == items["kept"]
    rejects = spark.read.parquet(str(out / "rejects"))
    assert rejects.count() == 5
    assert sorted(os.listdir(out / "_staging")) == []  # staging datasets were renamed into place
    printed = capsys.readouterr().out
    assert "interactions  rows_in=" in printed and "unknown_user=1" in printed


def test_a_partial_users_source_keeps_other_users_interactions(spark, workspace):
    """users.complete false (the default): a users table with text for some users only rejects nobody's
    interactions for that; the user appears in user-side outputs through their interactions."""
    tmp_path, conf, _, n_events = workspace
    del conf["inputs"]["users"]["complete"]
    assert run_cli(tmp_path, conf, "validate") == 0
    events = json.loads((tmp_path / "out" / "manifest.json").read_text())["sources"]["interactions"]
    assert events["rejected_by_reason"] == {"invalid_rating": 1, "unknown_item": 1}
    assert events["kept"] == n_events - 2
    kept = spark.read.parquet(str(tmp_path / "out" / "interactions"))
    assert kept.where("user_id = 'ghost'").count() == 1


def test_rerun_replaces_outputs_not_appends(spark, workspace):
    tmp_path, conf, _, _ = workspace
    assert run_cli(tmp_path, conf, "validate") == 0
    assert run_cli(tmp_path, conf, "validate") == 0
    runs = os.listdir(tmp_path / "out" / "_runs")
    assert len(runs) == 2
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert spark.read.parquet(str(tmp_path / "out" / "items")).count() == manifest["sources"]["items"]["kept"]


def test_misspelt_key_exits_2_naming_it(workspace, capsys):
    tmp_path, conf, _, _ = workspace
    conf["outptu"] = {"path": "x"}
    assert run_cli(tmp_path, conf, "validate") == 2
    err = capsys.readouterr().err
    assert "outptu: unknown key" in err and "did you mean 'output'" in err and "Traceback" not in err


def test_missing_input_path_exits_2_naming_it(spark, workspace, capsys):
    tmp_path, conf, _, _ = workspace
    conf["inputs"]["users"]["path"] = str(tmp_path / "missing_users.parquet")
    assert run_cli(tmp_path, conf, "validate") == 2
    err = capsys.readouterr().err
    assert "users: input path not found:" in err and "missing_users.parquet" in err and "Traceback" not in err


def test_absent_mapped_column_exits_2_naming_it(spark, workspace, capsys):
    tmp_path, conf, _, _ = workspace
    conf["inputs"]["interactions"]["columns"]["rating"] = "stars"
    assert run_cli(tmp_path, conf, "validate") == 2
    err = capsys.readouterr().err
    assert "interactions: mapped rating column 'stars' is not in" in err


def test_a_source_with_nothing_valid_stops_the_run(spark, workspace, capsys):
    tmp_path, conf, _, _ = workspace
    pd.DataFrame({"item_id": ["a", "b"], "title": ["", " "], "description": [None, "<p></p>"]}).to_parquet(
        conf["inputs"]["items"]["path"], index=False
    )
    assert run_cli(tmp_path, conf, "validate") == 2
    err = capsys.readouterr().err
    assert "items: no valid rows left (2 read; rejected: empty_text=2)" in err
    manifest_dir = tmp_path / "out" / "_runs"
    written = [json.loads((manifest_dir / r / "manifest.json").read_text()) for r in os.listdir(manifest_dir)]
    assert [m["status"] for m in written] == ["failed"]
    assert written[0]["error"]["stage"] == "validate" and written[0]["error"]["class"] == "InputError"
    assert "items: no valid rows left" in written[0]["error"]["message"]
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_secrets_from_the_environment_stay_out_of_manifests_and_output(spark, workspace, capsys, monkeypatch):
    tmp_path, conf, _, _ = workspace
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "s3cr3t-value")
    conf["spark"]["conf"] = {"spark.segrec.test.password": "${WAREHOUSE_PASSWORD}"}
    assert run_cli(tmp_path, conf, "validate") == 0
    assert spark.conf.get("spark.segrec.test.password") == "s3cr3t-value"  # the run itself gets it
    out = tmp_path / "out"
    written = [p.read_text() for p in out.rglob("manifest.json")]
    assert written and all("s3cr3t-value" not in text for text in written)
    captured = capsys.readouterr()
    assert "s3cr3t-value" not in captured.out + captured.err


def test_a_wrong_timestamp_unit_stops_the_run_naming_the_reason(spark, workspace, capsys):
    tmp_path, conf, _, _ = workspace
    events = pd.read_parquet(conf["inputs"]["interactions"]["path"])
    events["timestamp"] = events["timestamp"] * 1000 * 1000  # microseconds read as seconds: out of range
    events.to_parquet(conf["inputs"]["interactions"]["path"], index=False)
    assert run_cli(tmp_path, conf, "validate") == 2
    err = capsys.readouterr().err
    assert "interactions:" in err and "invalid_timestamp" in err and "Traceback" not in err


def test_mostly_rejected_interactions_stop_at_max_reject_share(spark, workspace, capsys):
    tmp_path, conf, _, n_events = workspace
    events = pd.read_parquet(conf["inputs"]["interactions"]["path"])
    events.loc[events.index[: int(len(events) * 0.6)], "item_id"] = "not-an-item"
    events.to_parquet(conf["inputs"]["interactions"]["path"], index=False)
    assert run_cli(tmp_path, conf, "validate") == 2
    err = capsys.readouterr().err
    assert "above inputs.interactions.max_reject_share 0.5" in err and "most are unknown_item" in err
    conf["inputs"]["interactions"]["max_reject_share"] = 0.9  # the user says this much is expected
    assert run_cli(tmp_path, conf, "validate") == 0


def test_ratings_too_large_to_weigh_are_rejected(spark, workspace):
    tmp_path, conf, _, _ = workspace
    events = pd.read_parquet(conf["inputs"]["interactions"]["path"])
    events.loc[events.index[:2], "rating"] = 1e308
    events.to_parquet(conf["inputs"]["interactions"]["path"], index=False)
    assert run_cli(tmp_path, conf, "validate") == 0
    counts = json.loads((tmp_path / "out" / "manifest.json").read_text())["sources"]["interactions"]
    assert counts["rejected_by_reason"]["invalid_rating"] == 1 + 2  # the NaN row and the two overflows
