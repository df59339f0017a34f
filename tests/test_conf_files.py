"""Every YAML config under conf/ validates; the Spark snippets ask for GPUs consistently."""

from pathlib import Path

import pytest
import yaml

from segrec.jobs.config import load_config

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
    task, executor = (
        float(settings["spark.task.resource.gpu.amount"]),
        float(settings["spark.executor.resource.gpu.amount"]),
    )
    cores = int(settings["spark.executor.cores"])
    # tasks per executor by GPU == tasks per executor by cores: neither resource idles
    assert executor / task == cores
    assert settings["spark.python.worker.reuse"].strip() == "true"


def test_airflow_dag_compiles():
    import py_compile

    py_compile.compile(str(CONF / "airflow" / "segrec_nightly.py"), doraise=True)


def bundle() -> dict:
    return yaml.safe_load((CONF / "databricks" / "databricks.yml").read_text())


STAGES = ["validate", "embed", "train", "profile", "segment", "recommend"]


@pytest.mark.parametrize("path", sorted(p for p in (CONF / "databricks").glob("*.yaml")), ids=lambda p: p.name)
def test_databricks_configs_validate_for_spark_connect(path):
    config = load_config(path)
    assert config.spark.master is None and config.output.path.startswith("/Volumes/")


def test_the_bundle_runs_every_stage_in_order_with_the_run_date_on_serverless():
    job = bundle()["resources"]["jobs"]["segrec_nightly"]
    assert [t["task_key"] for t in job["tasks"]] == STAGES
    for before, task in zip(job["tasks"], job["tasks"][1:], strict=False):
        assert task["depends_on"] == [{"task_key": before["task_key"]}]
    assert {p["name"]: p["default"] for p in job["parameters"]}["run_date"] == "{{job.start_time.iso_date}}"
    (environment,) = job["environments"]
    assert "../../dist/*.whl" in environment["spec"]["dependencies"]
    for task in job["tasks"]:
        assert task["environment_key"] == environment["environment_key"] and "job_cluster_key" not in task
        wheel = task["python_wheel_task"]
        assert (wheel["package_name"], wheel["entry_point"]) == ("segrec", "segrec")
        assert wheel["parameters"][:3] == [task["task_key"], "--conf", "{{job.parameters.config}}"]
        assert "output.run_date={{job.parameters.run_date}}" in wheel["parameters"]
    # the config the job reads by default is the one synced beside the bundle
    assert bundle()["variables"]["config"]["default"] == "${workspace.file_path}/serverless.yaml"


def test_the_bundle_builds_the_wheel_the_tasks_run_and_its_entry_point_exists():
    import tomllib

    artifact = bundle()["artifacts"]["segrec_wheel"]
    assert artifact["type"] == "whl" and (CONF / "databricks" / artifact["path"] / "pyproject.toml").is_file()
    project = tomllib.loads((CONF.parent / "pyproject.toml").read_text())
    assert project["project"]["name"] == "segrec" and "segrec" in project["project"]["scripts"]


def test_the_gpu_target_puts_embed_and_train_on_the_gpu_cluster():
    job = bundle()["targets"]["gpu"]["resources"]["jobs"]["segrec_nightly_gpu"]
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    placed = {t["task_key"]: t["job_cluster_key"] for t in job["tasks"]}
    assert [t["task_key"] for t in job["tasks"]] == STAGES
    assert placed["embed"] == placed["train"] == "gpu" and placed["validate"] == "cpu"
    assert float(clusters["gpu"]["spark_conf"]["spark.task.resource.gpu.amount"]) == 0.25
    assert "gpu" in clusters["gpu"]["spark_version"]
    for task in job["tasks"]:
        assert {"whl": "../../dist/*.whl"} in task["libraries"]
        assert task["python_wheel_task"]["parameters"][0] == task["task_key"]
    default_config = {p["name"]: p["default"] for p in job["parameters"]}["config"]
    assert (CONF / "databricks" / default_config.rsplit("/", 1)[1]).is_file()
