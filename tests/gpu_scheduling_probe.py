"""Run in a subprocess by test_gpu_scheduling: a local-cluster whose worker reports fake GPUs.

Prints one line ``RESULT <json>`` with what each task saw and the vectors it produced.
"""

import json
import os
import sys

import pandas as pd

os.environ["PYSPARK_PYTHON"] = sys.executable
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from segrec.jobs.config import executor_settings  # noqa: E402
from segrec.jobs.vectors.encoding import embedding_udf  # noqa: E402
from segrec.udfs.encoder import EncoderSettings  # noqa: E402

model_dir, script = sys.argv[1], sys.argv[2]
builder = SparkSession.builder.master("local-cluster[1,2,1024]").appName("gpu-probe")
for key, value in {
    "spark.ui.enabled": "false",
    "spark.worker.resource.gpu.amount": "2",
    "spark.worker.resource.gpu.discoveryScript": script,
    "spark.executor.resource.gpu.amount": "2",
    "spark.executor.resource.gpu.discoveryScript": script,
    "spark.task.resource.gpu.amount": "1",
    "spark.python.worker.reuse": "true",
    "spark.executorEnv.PYSPARK_PYTHON": sys.executable,
}.items():
    builder = builder.config(key, value)
spark = builder.getOrCreate()
spark.sparkContext.setLogLevel("ERROR")


@F.pandas_udf("string")
def slot(ids: pd.Series) -> pd.Series:
    from segrec.udfs.device import choose_device, current_slot

    s = current_slot()
    return pd.Series([json.dumps({"gpus": list(s.gpu_addresses), "device": choose_device(s)})] * len(ids))


settings = executor_settings(EncoderSettings, cpu_dtype="float32", model_path=model_dir, max_length=32)
df = spark.createDataFrame([(i, f"guitar piano {i}") for i in range(40)], "id int, text string").repartition(4)
rows = df.select("id", "text", slot("id").alias("slot"), embedding_udf(settings)("text").alias("v")).collect()
print("RESULT " + json.dumps([{"id": r.id, "text": r.text, "slot": json.loads(r.slot), "v": list(r.v)} for r in rows]))
spark.stop()
