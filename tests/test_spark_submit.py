"""spark-submit in local mode against the built artifact, from outside the source tree."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyspark
import pytest
import yaml

from segrec.jobs.bootstrap.package import build
from segrec.jobs.bootstrap.synthetic import config_dict, generate, write_parquet

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SPARK_SUBMIT = str(Path(pyspark.__file__).parent / "bin" / "spark-submit")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return build(tmp_path_factory.mktemp("dist"))


def submit(args, cwd):
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [SPARK_SUBMIT, "--master", "local[2]", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_driver_and_executors_import_segrec_from_the_artifact(artifact, tmp_path):
    done = submit(["--py-files", str(artifact["py_files"]), str(ROOT / "tests" / "spark_submit_probe.py")], tmp_path)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT ") :])
    zip_name = artifact["py_files"].name
    assert zip_name in result["driver"]
    for paths in result["executors"]:
        assert all(zip_name in p for p in json.loads(paths)), paths


# long: the artifact test above proves driver and executors import segrec from it
@pytest.mark.long
def test_the_whole_run_through_spark_submit(artifact, tmp_path, tiny_model_dir):
    data = generate(n_users=40, items_per_persona=6, seed=4)
    paths = write_parquet(data, str(tmp_path / "in"))
    conf = config_dict(paths, str(tmp_path / "out"), model_path=tiny_model_dir)
    conf["spark"] = {"master": None, "driver_memory": None}  # whatever spark-submit says
    conf["model"].update({"max_length": 32, "chunk_overlap": 4})
    conf["segment"] = {"k": 3}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(conf))
    done = submit(
        ["--py-files", str(artifact["py_files"]), str(artifact["main"]), "run", "--conf", "job.yaml"], tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["command"] == "run"
    assert set(manifest["stages"]) == {"validate", "embed", "train", "profile", "segment", "recommend"}
    assert manifest["stages"]["train"]["model_id"].startswith("towers-")  # TorchDistributor found udfs in the zip
    recs = pd.read_parquet(tmp_path / "out" / "recommendations")
    assert recs["user_id"].nunique() == len(data.users) and recs.groupby("user_id").size().max() == 10
