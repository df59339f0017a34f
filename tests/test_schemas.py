"""Every dataset's columns are declared once (udfs/schemas.py): the outputs of a run match them, and a
frame that drifts from them is refused before it is written."""

import pytest
from pyspark.sql import types as T

from segrec.udfs.schemas import DATASETS, RECOMMENDATIONS, schema_differences, spark_schema


def test_every_dataset_a_run_writes_has_the_declared_columns_and_types(spark, small_run):
    root, _ = small_run
    written = sorted(p.name for p in (root / "out").iterdir() if p.is_dir() and (p / "_SUCCESS").exists())
    assert set(written) == set(DATASETS)  # the small run has suppressions and audience requests too
    for name in written:
        schema = spark.read.parquet(str(root / "out" / name)).schema
        assert schema_differences(name, schema) == [], name


def test_a_drifted_frame_is_described_column_by_column():
    declared = spark_schema(DATASETS["user_vectors"])
    renamed = T.StructType([T.StructField("user", T.StringType())] + declared.fields[1:])
    retyped = T.StructType(
        [declared.fields[0], T.StructField("vector", T.ArrayType(T.DoubleType()))] + declared.fields[2:]
    )
    assert schema_differences("user_vectors", declared) == []
    assert schema_differences("user_vectors", renamed) == ["user_id: missing", "user: not declared"]
    assert schema_differences("user_vectors", retyped) == ["vector: expected array<float>, found array<double>"]
    assert schema_differences("user_vectors", T.StructType(declared.fields[::-1]))[0].startswith("column order")
    assert schema_differences("some_scratch_frame", renamed) == []  # only declared datasets are checked


def test_the_store_refuses_to_write_a_frame_that_does_not_match(spark, tmp_path):
    from segrec.jobs.config import Output
    from segrec.jobs.io.store import OutputStore

    store = OutputStore(spark, Output(path=str(tmp_path / "out")), "run-1")
    frame = spark.createDataFrame([("u1", 1)], "user_id string, rank long")
    with pytest.raises(RuntimeError, match="recommendations does not match.*rank: expected int, found bigint"):
        store.write(frame, "recommendations")
    assert not (tmp_path / "out" / "recommendations").exists()


def test_the_udf_output_schemas_are_the_datasets_own():
    # the workers' lists, and the stage's flag of new items (jobs/stages/recommend.py) after them
    assert DATASETS["recommendations"].names == [*RECOMMENDATIONS.names, "new_item"]
    assert DATASETS["segments"].names == [
        "user_id",
        "segment_id",
        "distance",
        "top_segments",
        "top_weights",
        "previous_segment_id",
    ]
