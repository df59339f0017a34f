"""Submitted by test_spark_submit with the built zip in --py-files: where do the driver and the
executors import segrec's packages from? Prints one line ``RESULT <json>``.

The test environment has segrec installed in editable mode, whose import hook would answer first; the
probe removes it on both sides, so it sees what a cluster without segrec installed sees."""

import json
import sys

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

spark = SparkSession.builder.getOrCreate()


def without_editable_install() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
    sys.path[:] = [p for p in sys.path if not p.startswith("__editable__")]


@F.pandas_udf("string")
def where(ids: pd.Series) -> pd.Series:
    without_editable_install()
    import segrec.jobs
    import segrec.udfs.topk.exact

    return pd.Series([json.dumps([segrec.jobs.__file__, segrec.udfs.topk.exact.__file__])] * len(ids))


without_editable_install()
import segrec.jobs  # noqa: E402

executor = {r.w for r in spark.range(0, 4, numPartitions=2).select(where("id").alias("w")).collect()}
print("RESULT " + json.dumps({"driver": segrec.jobs.__file__, "executors": sorted(executor)}))
spark.stop()
