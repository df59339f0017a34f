"""The embed stage through Spark with the tiny model: vectors, incremental runs, one load per worker."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import encoder_settings
from pyspark.sql import functions as F

from segrec.jobs import cli
from segrec.jobs.bootstrap.synthetic import config_dict, write_parquet
from segrec.udfs import encoder
from segrec.udfs.encoder import Encoder, cpu_dtype


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, synthetic_data, tiny_model_dir):
    root = tmp_path_factory.mktemp("embed")
    paths = write_parquet(synthetic_data, str(root / "in"))
    conf = config_dict(paths, str(root / "out"), model_path=tiny_model_dir)
    conf["model"].update({"max_length": 32, "chunk_overlap": 4})
    conf_path = root / "conf.yaml"
    conf_path.write_text(yaml.safe_dump(conf))
    return root, str(conf_path), paths


def last_manifest(root):
    return json.loads((root / "out" / "manifest.json").read_text())


def test_first_run_embeds_every_distinct_text(spark, workspace, synthetic_data):
    root, conf, _ = workspace
    assert cli.main(["validate", "--conf", conf]) == 0
    assert cli.main(["embed", "--conf", conf]) == 0
    figures = last_manifest(root)["stages"]["embed"]
    distinct = len(
        set(synthetic_data.items[["title", "description"]].agg(". ".join, axis=1)) | set(synthetic_data.users["bio"])
    )
    assert figures["texts_distinct"] == distinct
    assert figures["embedded"] == distinct and figures["reused"] == 0
    assert figures["item_vectors"] == len(synthetic_data.items)
    assert figures["text_vectors"] == len(synthetic_data.users)

    vectors = spark.read.parquet(str(root / "out" / "item_vectors"))
    assert vectors.columns == ["item_id", "vector", "text_hash", "model_id"]
    norms = vectors.select(F.aggregate("vector", F.lit(0.0), lambda a, x: a + x * x).alias("n2")).toPandas()["n2"]
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert vectors.select(F.size("vector")).distinct().collect()[0][0] == 32


def test_spark_vectors_equal_the_plain_encoder(spark, workspace, tiny_model_dir, synthetic_data):
    root, _, _ = workspace
    rows = spark.read.parquet(str(root / "out" / "item_vectors")).orderBy("item_id").limit(8).toPandas()
    texts = synthetic_data.items.set_index("item_id").loc[rows["item_id"]]
    rendered = (texts["title"] + ". " + texts["description"]).tolist()
    # the stage's default cpu_dtype (auto) in the plain encoder too: bfloat16 on CPUs with native bfloat16
    plain = Encoder(
        encoder_settings(model_path=tiny_model_dir, max_length=32, chunk_overlap=4), dtype=cpu_dtype("auto")
    ).encode(rendered)
    np.testing.assert_allclose(np.stack(rows["vector"].to_numpy()), plain, atol=1e-5)


def test_the_stage_on_onnx_runtime_writes_torchs_vectors(spark, workspace, tmp_path):
    root, conf, _ = workspace
    onnx_out = tmp_path / "out-onnx"
    overrides = [
        "--set",
        f"output.path={onnx_out}",
        "--set",
        "model.runtime=onnx",
        "--set",
        "model.cpu_dtype=float32",
        "--set",
        f"model.onnx_cache_dir={tmp_path / 'onnx'}",
    ]
    assert cli.main(["validate", "--conf", conf, *overrides]) == 0
    assert cli.main(["embed", "--conf", conf, *overrides]) == 0
    assert list((tmp_path / "onnx").glob("*.onnx"))  # exported on the executors, once per model
    torch_run = spark.read.parquet(str(root / "out" / "item_vectors")).toPandas().set_index("item_id")
    onnx_run = spark.read.parquet(str(onnx_out / "item_vectors")).toPandas().set_index("item_id")
    assert set(torch_run.index) == set(onnx_run.index)
    if cpu_dtype("auto") == "float32":  # the torch run's vectors are float32 ones only on such CPUs
        difference = np.abs(np.stack(onnx_run.loc[torch_run.index, "vector"]) - np.stack(torch_run["vector"])).max()
        assert difference < 1e-5
    assert (onnx_run["model_id"] == torch_run["model_id"]).all()  # the same vectors, the same model id


def test_second_run_embeds_nothing_and_ten_new_items_embed_ten(spark, workspace, synthetic_data):
    root, conf, paths = workspace
    before = spark.read.parquet(str(root / "out" / "item_vectors")).toPandas().set_index("item_id")
    assert cli.main(["embed", "--conf", conf]) == 0
    figures = last_manifest(root)["stages"]["embed"]
    assert figures["embedded"] == 0 and figures["reused"] == figures["texts_distinct"]
    after = spark.read.parquet(str(root / "out" / "item_vectors")).toPandas().set_index("item_id")
    np.testing.assert_array_equal(np.stack(after.loc[before.index, "vector"]), np.stack(before["vector"]))

    new = pd.DataFrame(
        {
            "item_id": [f"new{i}" for i in range(10)],
            "title": [f"Brand new gadget {i}" for i in range(10)],
            "description": ["Something nobody has seen."] * 10,
            "category": ["new"] * 10,
        }
    )
    pd.concat([synthetic_data.items, new]).to_parquet(paths["items"], index=False)
    assert cli.main(["validate", "--conf", conf]) == 0
    assert cli.main(["embed", "--conf", conf]) == 0
    figures = last_manifest(root)["stages"]["embed"]
    assert figures["embedded"] == 10
    assert figures["item_vectors"] == len(synthetic_data.items) + 10
    assert not os.listdir(root / "out" / "_staging")


def test_model_is_loaded_once_per_python_worker(spark, tiny_model_dir):
    settings = encoder_settings(model_path=tiny_model_dir, max_length=24)
    from segrec.jobs.vectors.encoding import embedding_udf

    texts = spark.createDataFrame([(f"guitar {i}",) for i in range(400)], "text string").repartition(8)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "10")  # many batches per task
    assert texts.select(embedding_udf(settings)("text").alias("v")).where("v is not null").count() == 400

    key = encoder.cache_key(settings)

    @F.pandas_udf("string")
    def loads(ids: pd.Series) -> pd.Series:
        import os as _os

        from segrec.udfs import encoder as enc

        enc.get_encoder(settings)
        return pd.Series([f"{_os.getpid()}:{enc.ENCODERS.loads[key]}"] * len(ids))

    report = spark.range(0, 64, numPartitions=8).select(loads("id").alias("r")).distinct().collect()
    counts = {r.r.split(":")[1] for r in report}
    assert counts == {"1"}, report


def test_texts_are_encoded_in_as_many_tasks_as_asked(spark, tmp_path, tiny_model_dir):
    # The stage's own path: texts read back from files, de-duplicated by hash (a shuffle on text_hash,
    # which adaptive execution coalesces by size), then spread for the encoder. Without a repartition
    # Spark has to keep, every text went to one task and one core encoded them all.
    from segrec.jobs.stages.embed import distinct_texts, embed_texts, item_texts

    path = str(tmp_path / "items")
    spark.createDataFrame(
        [(f"i{n}", f"text number {n % 150}") for n in range(300)], "item_id string, text string"
    ).write.parquet(path)
    texts = distinct_texts(item_texts(spark.read.parquet(path), "tiny"))
    # As many tasks as the de-duplication's shuffle has: the stage's default (twice the parallelism)
    # is what local sessions set spark.sql.shuffle.partitions to.
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    vectors = embed_texts(texts, encoder_settings(model_path=tiny_model_dir, max_length=24), partitions)
    per_task = vectors.groupBy(F.spark_partition_id().alias("task")).count().orderBy("task").toPandas()
    assert per_task["task"].tolist() == list(range(partitions))
    assert per_task["count"].sum() == 150 and per_task["count"].min() >= 150 / partitions / 2


def test_a_text_without_its_vector_fails_the_stage_naming_both_counts():
    from segrec.jobs.stages.embed import check_reconciled

    check_reconciled({"item_vectors": 5, "text_vectors": 7}, 5, 7)  # reconciled: no error
    with pytest.raises(RuntimeError, match=r"5 item texts -> 4 item vectors, 7 user texts -> 7 text vectors"):
        check_reconciled({"item_vectors": 4, "text_vectors": 7}, 5, 7)
