"""How many tasks the UDF stages ask for on a session without a SparkContext (Spark Connect)."""

import pytest

from segrec.jobs.session import parallelism, udf_partitions


class ConnectLike:
    """What a Spark Connect session offers here: its conf, and no SparkContext."""

    def __init__(self, conf: dict):
        self.conf = self
        self._conf = conf

    def get(self, key, default=None):
        return self._conf.get(key, default)

    @property
    def sparkContext(self):  # noqa: N802 - pyspark's name
        raise RuntimeError("no SparkContext on Spark Connect")


@pytest.mark.parametrize(
    "conf, expected",
    [
        ({"spark.default.parallelism": "16"}, 16),
        ({"spark.sql.shuffle.partitions": "64"}, 64),
        ({"spark.sql.shuffle.partitions": "auto"}, 200),  # Databricks' auto-optimized shuffle
        ({}, 200),
    ],
)
def test_parallelism_without_a_spark_context(conf, expected):
    assert parallelism(ConnectLike(conf)) == expected


def test_udf_stages_ask_twice_the_parallelism_unless_configured():
    session = ConnectLike({"spark.sql.shuffle.partitions": "auto"})
    assert udf_partitions(session, None) == 400
    assert udf_partitions(session, 7) == 7


def test_scoring_tasks_one_per_core_on_a_local_master_twice_the_parallelism_elsewhere(spark):
    from segrec.jobs.recommendations.top_k import scoring_tasks

    cores = spark.sparkContext.defaultParallelism
    assert spark.sparkContext.master.startswith("local")
    assert scoring_tasks(spark, None) == cores
    assert scoring_tasks(spark, 7) == 7
    connect = ConnectLike({"spark.sql.shuffle.partitions": "64"})  # no SparkContext: not a local master
    assert scoring_tasks(connect, None) == 128
    assert scoring_tasks(connect, 3) == 3
