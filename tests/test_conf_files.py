"""Every YAML config under conf/ validates; the Spark snippets ask for GPUs consistently."""

from pathlib import Path

import pytest

from jobs.config import load_config

CONF = Path(__file__).resolve().parent.parent / "conf"


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path, monkeypatch):
    monkeypatch.setenv("SEGREC_INPUT", "/data/in")
    config = load_config(path)
    assert config.inputs.items.columns.id


@pytest.mark.parametrize("path", sorted((CONF / "spark").glob("gpu-*.conf")), ids=lambda p: p.name)
def test_gpu_snippets_share_each_gpu_between_tasks(path):
    settings = dict(
        line.split(None, 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    )
    task, executor = float(settings["spark.task.resource.gpu.amount"]), float(settings["spark.executor.resource.gpu.amount"])
    cores = int(settings["spark.executor.cores"])
    # tasks per executor by GPU == tasks per executor by cores: neither resource idles
    assert executor / task == cores
    assert settings["spark.python.worker.reuse"].strip() == "true"


def test_airflow_dag_compiles():
    import py_compile

    py_compile.compile(str(CONF / "airflow" / "segrec_nightly.py"), doraise=True)


def test_databricks_job_runs_every_stage_in_order_on_the_stage_notebook():
    import json

    job = json.loads((CONF / "databricks" / "job.json").read_text())
    stages = [t["notebook_task"]["base_parameters"]["stage"] for t in job["tasks"]]
    assert stages == ["validate", "embed", "train", "profile", "segment", "recommend"]
    for before, task in zip(job["tasks"], job["tasks"][1:]):
        assert task["depends_on"] == [{"task_key": before["task_key"]}]
    notebook = CONF.parent / (job["tasks"][0]["notebook_task"]["notebook_path"].split("/segrec/", 1)[1] + ".py")
    assert notebook.read_text().startswith("# Databricks notebook source")
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    assert float(clusters["gpu"]["spark_conf"]["spark.task.resource.gpu.amount"]) == 0.25
