"""Faults a nightly job meets: a Python worker dying mid-task, and the whole run killed mid-write."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from segrec.jobs.bootstrap.synthetic import config_dict, generate, write_parquet

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
STAGES = (
    "import sys; from segrec.jobs.cli import main; "
    "sys.exit(main(['validate', '--conf', sys.argv[1]]) or main(['embed', '--conf', sys.argv[1]]))"
)


def write_conf(tmp_path, tiny_model_dir, name):
    data = generate(n_users=60, items_per_persona=10, seed=3)
    paths = write_parquet(data, str(tmp_path / "in"))
    conf = config_dict(paths, str(tmp_path / name), model_path=tiny_model_dir)
    conf["spark"] = {"master": "local[2,4]", "driver_memory": "1g"}  # up to 4 attempts per task
    conf["embed"] = {"partitions": 4}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def launch(conf, env=None, wait=True):
    environment = dict(os.environ, PYSPARK_PYTHON=sys.executable, **(env or {}))
    command = [sys.executable, "-c", STAGES, str(conf)]
    if wait:
        return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def vectors(out: Path, name: str, key: str) -> pd.DataFrame:
    frame = pd.read_parquet(out / name)
    return frame.sort_values([key, "text_hash"]).reset_index(drop=True)


# long: a retried task writes the same rows because a text's vector does not depend on its batch
# (test_encoder.py); this kills Python workers mid-embed to see it through Spark's retry
@pytest.mark.long
def test_worker_death_is_retried_with_identical_outputs(tmp_path, tiny_model_dir):
    clean_conf = write_conf(tmp_path, tiny_model_dir, "clean")
    faulty_conf = write_conf(tmp_path, tiny_model_dir, "faulty")
    markers = tmp_path / "markers"
    markers.mkdir()
    clean = launch(clean_conf)
    assert clean.returncode == 0, clean.stderr[-2000:]
    faulty = launch(faulty_conf, env={"SEGREC_FAULT_DIR": str(markers)})
    assert faulty.returncode == 0, faulty.stderr[-2000:]
    assert len(os.listdir(markers)) >= 1  # workers really died
    for name, key in (("item_vectors", "item_id"), ("text_vectors", "user_id")):
        a, b = vectors(tmp_path / "clean", name, key), vectors(tmp_path / "faulty", name, key)
        assert len(b) == len(a) and not b.duplicated([key, "text_hash"]).any()
        assert a[key].tolist() == b[key].tolist()
        np.testing.assert_allclose(np.stack(a["vector"]), np.stack(b["vector"]), atol=1e-6)
    manifest = json.loads((tmp_path / "faulty" / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["stages"]["embed"]["embedded"] > 0


def test_a_killed_run_leaves_the_previous_outputs_and_no_success_claim(tmp_path, tiny_model_dir):
    conf = write_conf(tmp_path, tiny_model_dir, "out")
    first = launch(conf)
    assert first.returncode == 0, first.stderr[-2000:]
    out = tmp_path / "out"
    before = json.loads((out / "manifest.json").read_text())
    items_before = vectors(out, "item_vectors", "item_id")
    runs_before = set(os.listdir(out / "_runs"))

    process = launch(conf, wait=False)
    deadline = time.time() + 300
    staging = out / "_staging"
    while time.time() < deadline and process.poll() is None:
        if staging.exists() and any(staging.iterdir()):
            break  # a dataset is being written right now
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)

    after = json.loads((out / "manifest.json").read_text())
    assert after["run_id"] == before["run_id"] and after["status"] == "succeeded"
    killed = [r for r in os.listdir(out / "_runs") if r not in runs_before]
    assert len(killed) == 1
    assert json.loads((out / "_runs" / killed[0] / "manifest.json").read_text())["status"] == "running"
    pd.testing.assert_frame_equal(vectors(out, "item_vectors", "item_id"), items_before)
    assert len(pd.read_parquet(out / "items")) == len(items_before)


TRAIN = {"dim": 8, "hidden": 16, "epochs": 3, "batch_size": 32}


def train_conf(tmp_path, tiny_model_dir, **spark):
    data = generate(n_users=40, items_per_persona=6, personas=["hiker", "cook"], seed=5)
    paths = write_parquet(data, str(tmp_path / "in"))
    conf = config_dict(paths, str(tmp_path / "out"), model_path=tiny_model_dir)
    conf["model"].update({"max_length": 32, "chunk_overlap": 4})
    conf["train"] = dict(TRAIN)
    conf["segment"] = {"k": 2}
    conf["spark"].update(spark)
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return str(path)


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def last_run_manifest(out: Path) -> dict:
    """The newest run's own manifest (the root one is the last successful run's)."""
    newest = max((out / "_runs").iterdir(), key=lambda folder: folder.stat().st_mtime)
    return json.loads((newest / "manifest.json").read_text())


# long: resuming after the last finished epoch is tests/test_checkpoints.py's, to the same weights; this
# kills a real training process mid-epoch and runs the command again
@pytest.mark.long
def test_a_training_killed_mid_epoch_publishes_nothing_and_the_rerun_resumes(
    spark, tmp_path, tiny_model_dir, monkeypatch, capsys
):
    from segrec.jobs import cli

    conf, out, markers = train_conf(tmp_path, tiny_model_dir), tmp_path / "out", tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("SEGREC_FAULT_DIR", str(markers))
    monkeypatch.setenv("SEGREC_FAULT_STAGE", "train")
    assert cli.main(["run", "--conf", conf]) == 1
    err = capsys.readouterr().err
    assert "train: the training processes failed" in err and "resumes after the last finished epoch" in err
    # killed once, in the first epoch after the choice (on every interaction, from the winner's best epoch)
    assert "Traceback" not in err and os.listdir(markers) == ["train-0"]
    failed = last_run_manifest(out)
    assert failed["status"] == "failed" and failed["error"]["stage"] == "train"
    assert not (out / "manifest.json").exists()  # no run has succeeded here yet
    assert not (out / "towers").exists() and not (out / "trained_item_vectors").exists()
    kept = sorted(p.name for p in (out / "_staging" / "checkpoints-train").iterdir())
    assert kept[0].startswith("choice-") and kept[1].startswith("towers-")  # objective auto chose before

    assert cli.main(["train", "--conf", conf]) == 0  # the failed stage again
    resumed = manifest_of(out)
    choice = resumed["stages"]["train"]["objective_choice"]
    # resumed from the checkpoint written after the choice: the winner's best validation epoch
    assert resumed["status"] == "succeeded" and choice[choice["objective"]]["epochs"] >= 1
    assert resumed["stages"]["train"]["resumed_after_epochs"] == choice[choice["objective"]]["epochs"]
    assert (out / "towers" / "towers.safetensors").exists() and (out / "trained_item_vectors").exists()
    assert not (out / "_staging" / "checkpoints-train").exists()  # trained: nothing left to resume

    assert cli.main(["train", "--conf", conf]) == 0  # from scratch, uninterrupted
    whole = manifest_of(out)["stages"]["train"]
    assert whole["resumed_after_epochs"] == 0 and whole["model_id"] == resumed["stages"]["train"]["model_id"]


# long: as the local-mode kill above, on a local-cluster executor
@pytest.mark.long
def test_a_training_task_killed_on_an_executor_stops_the_run_and_the_rerun_resumes(tmp_path, tiny_model_dir):
    """TorchDistributor's barrier task on an executor: Spark never retries a failed barrier result
    stage, so the run stops with the reason and nothing published; the same command resumes it."""
    conf = train_conf(
        tmp_path,
        tiny_model_dir,
        master="local-cluster[1,2,1024]",
        driver_memory="1g",
        conf={"spark.executorEnv.PYSPARK_PYTHON": sys.executable},
    )
    settings = yaml.safe_load(Path(conf).read_text())
    settings["train"]["local_mode"] = "executors"
    Path(conf).write_text(yaml.safe_dump(settings))
    out, markers = tmp_path / "out", tmp_path / "markers"
    markers.mkdir()
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SEGREC_FAULT_DIR=str(markers), SEGREC_FAULT_STAGE="train")
    stages = "import sys; from segrec.jobs.cli import main; sys.exit(main(['validate', '--conf', sys.argv[1]]) or "
    stages += "main(['embed', '--conf', sys.argv[1]]) or main(['train', '--conf', sys.argv[1]]))"
    failed = subprocess.run(
        [sys.executable, "-c", stages, conf], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "train: the training processes failed (Could not recover from a failed barrier ResultStage" in failed.stderr
    assert os.listdir(markers) == ["train-0"]  # the training process really died once
    assert last_run_manifest(out)["error"]["stage"] == "train" and not (out / "trained_item_vectors").exists()
    command = [sys.executable, "-m", "segrec.jobs.cli", "train", "--conf", conf]
    resumed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    figures = manifest_of(out)["stages"]["train"]
    choice = figures["objective_choice"]
    assert figures["resumed_after_epochs"] == choice[choice["objective"]]["epochs"] >= 1
