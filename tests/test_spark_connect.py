"""The whole pipeline and (with --long) evaluate on a Spark Connect session (Databricks serverless and shared
clusters, any sc:// client): no SparkContext, JVM handle, RDD or broadcast on that path, and the
same lists, segments and metrics as a classic session's on the same data and config.

The Connect side runs as users run it, ``segrec ... --remote local[2]`` in its own process (which
starts a local Spark Connect server from pyspark's own jars); the classic side in this session.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import small_config

pytest.importorskip("grpc", reason="Spark Connect's client needs pip install 'segrec[connect]'")
pytestmark = pytest.mark.slow


def connect(command: str, conf: str, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    done = subprocess.run(
        [sys.executable, "-m", "segrec.jobs.cli", command, "--conf", conf, "--remote", "local[2]", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    print(f"segrec {command} --remote local[2]: exit {done.returncode}\n{done.stdout[-2000:]}")
    return done


def rows(spark, path: str, columns: list[str]) -> list[tuple]:
    return sorted(tuple(r) for r in spark.read.parquet(path).select(*columns).collect())


@pytest.fixture(scope="module")
def both(small_run, tmp_path_factory, tiny_model_dir):
    """One data set and config, run on the classic session (``small_run``: root/out) and on Spark Connect
    (root/remote), with MLflow logging to a sqlite store."""
    root = tmp_path_factory.mktemp("connect")
    mlflow = {
        "tracking_uri": f"sqlite:///{root}/mlflow.db",
        "experiment": "connect",
        "artifact_location": str(root / "mlartifacts"),
    }
    remote = small_config(root, tiny_model_dir, "remote", mlflow=mlflow)
    run = connect("run", remote)
    assert run.returncode == 0, run.stderr[-5000:]
    return {"classic": small_run[0] / "out", "remote": root / "remote", "root": root, "conf": remote, "run": run}


@pytest.fixture(scope="module")
def remote_evaluation(both):
    """``segrec evaluate`` on Spark Connect over the remote run's outputs: every file of them by hash
    before and after, and the command's result."""
    before = files(both["remote"])
    evaluated = connect("evaluate", both["conf"])
    assert evaluated.returncode == 0, evaluated.stderr[-5000:]
    return {"run_outputs": (before, files(both["remote"])), "done": evaluated}


def files(out: Path) -> dict[str, str]:
    """Every file under ``out`` but evaluate's own, by path, with its content's hash."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in out.rglob("*")
        if p.is_file() and "evaluation" not in p.parts
    }


def test_connect_run_gives_the_classic_sessions_lists_and_segments(spark, both):
    manifest = json.loads((both["remote"] / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    stages = {"validate", "embed", "train", "profile", "segment", "recommend", "audience"}
    assert set(manifest["stages"]) == stages
    recs = ["user_id", "rank", "item_id", "because_item_id"]
    classic = rows(spark, str(both["classic"] / "recommendations"), recs)
    remote = rows(spark, str(both["remote"] / "recommendations"), recs)
    assert len(classic) == manifest["stages"]["recommend"]["rows"] > 24 and remote == classic
    scores = {
        (r[0], r[1]): r[2] for r in rows(spark, str(both["classic"] / "recommendations"), ["user_id", "rank", "score"])
    }
    for user, rank, score in rows(spark, str(both["remote"] / "recommendations"), ["user_id", "rank", "score"]):
        assert score == pytest.approx(scores[(user, rank)], abs=1e-5)
    segments = ["user_id", "segment_id"]
    assert rows(spark, str(both["remote"] / "segments"), segments) == rows(
        spark, str(both["classic"] / "segments"), segments
    )
    # the bootstrap stability tasks, the term tokenizer and the interest tags run there too, alike
    portrait = ["segment_id", "stability", "stability_class", "label_terms"]
    assert rows(spark, str(both["remote"] / "segment_summary"), portrait) == rows(
        spark, str(both["classic"] / "segment_summary"), portrait
    )
    assert spark.read.parquet(str(both["remote"] / "user_interests")).count() == 24
    # audiences: the same users for every request, with the same reasons
    audience = ["request_id", "user_id", "rank", "because_item_id", "segment_id"]
    classic_audiences = rows(spark, str(both["classic"] / "audiences"), audience)
    assert (
        len(classic_audiences) == 15 and rows(spark, str(both["remote"] / "audiences"), audience) == classic_audiences
    )
    # the item matrix reached the workers as a file under the run's staging area, removed afterwards
    assert not list((both["remote"] / "_staging").glob("catalogue*"))
    # no stage moves all rows into one task (Spark warns once per such window)
    assert "No Partition Defined for Window operation" not in both["run"].stderr


# long: evaluate's every step is tested on the classic session (test_evaluate.py), and the run above
# proves the Connect path of the stages evaluate rebuilds; this runs evaluate itself there
@pytest.mark.long
def test_connect_evaluate_scores_every_model(both, remote_evaluation):
    doc = json.loads((both["remote"] / "evaluation" / "metrics.json").read_text())
    assert set(doc["models"]) >= {"als", "most_popular", "hybrid", "content", "trained", "random"}
    for model, figures in doc["models"].items():
        assert 0.0 <= figures["ranking"]["3"]["ndcg"] <= 1.0, model
    assert not list((both["remote"] / "evaluation" / "_staging").glob("eval-*"))


@pytest.mark.long
def test_evaluate_leaves_the_outputs_of_run_untouched_and_reuses_their_vectors(both, remote_evaluation):
    before, after = remote_evaluation["run_outputs"]
    assert after == before  # not one byte of run's outputs or manifests changed
    evaluation = json.loads((both["remote"] / "evaluation" / "manifest.json").read_text())
    assert evaluation["stages"]["embed"]["embedded"] == 0  # every vector reused from run's outputs
    doc = json.loads((both["remote"] / "evaluation" / "metrics.json").read_text())
    # sampled (evaluate.sample_users): 10 of the 24 users scored
    assert doc["split"]["users_evaluated"] == 10 and doc["split"]["users_with_held_out_rows"] == 24
    assert doc["split"]["held_out_rows"] == 10
    report = (both["remote"] / "evaluation" / "report.md").read_text()
    assert "the lists of 10 of the 24 users with held-out rows" in report
    # no step of evaluate moves all rows into one task (Spark warns once per such window)
    assert "No Partition Defined for Window operation" not in remote_evaluation["done"].stderr


def test_connect_run_logs_the_towers_and_segments_to_mlflow(both):
    mlflow = pytest.importorskip("mlflow")
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{both['root']}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("connect").experiment_id])
    by_command = {r.data.tags["segrec.command"]: r for r in runs}
    assert "run" in by_command and all(r.info.status == "FINISHED" for r in runs)
    run = by_command["run"]
    manifest = json.loads((both["remote"] / "manifest.json").read_text())
    assert run.info.run_id == manifest["mlflow_run_id"]
    losses = client.get_metric_history(run.info.run_id, "train.loss")
    # epochs: 1 with objective auto: the winner's one validation epoch, then one on every row
    assert [m.step for m in losses] == [1, 2] == [p["epoch"] for p in manifest["train_curve"]]
    assert [m.value for m in losses] == pytest.approx([p["loss"] for p in manifest["train_curve"]])
    assert run.data.metrics["segment.k"] == 2 and run.data.params["train.dim"] == "8"
    towers = {a.path for a in client.list_artifacts(run.info.run_id, "models/towers")}
    assert towers == {f"models/towers/{name}" for name in ("towers.safetensors", "towers.json", "id_items.json")}
    centroids = json.loads(
        Path(client.download_artifacts(run.info.run_id, "models/segment_model/centroids.json")).read_text()
    )
    assert len(centroids["centroids"]) == 2 and len(centroids["centroids"][0]) == 8
    assert client.list_artifacts(run.info.run_id, "models/segment_model/spark")  # the Spark ML model directory


def test_an_object_store_output_on_connect_is_refused_before_any_write(tmp_path, tiny_model_dir):
    conf = small_config(tmp_path, tiny_model_dir, "out")
    done = connect("validate", conf, "--set", "output.path=s3a://bucket/segrec")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "s3a://bucket/segrec" in done.stderr and "/Volumes/" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s3a:").exists()
