"""Outputs as catalog tables (the local catalog): whole-table swaps, and per-date partition overwrites."""

import pytest
import yaml

from segrec.jobs import cli
from segrec.jobs.bootstrap.synthetic import config_dict, write_parquet


@pytest.fixture
def conf(spark, tmp_path, synthetic_data, tiny_model_dir):
    spark.sql("DROP DATABASE IF EXISTS segrec_t CASCADE")
    spark.sql(f"CREATE DATABASE segrec_t LOCATION '{tmp_path / 'warehouse'}'")
    settings = config_dict(write_parquet(synthetic_data, str(tmp_path / "in")), str(tmp_path / "out"), tiny_model_dir)
    settings["output"].update({"format": "table", "database": "segrec_t"})
    settings["model"].update({"max_length": 32, "chunk_overlap": 4})
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(settings))
    yield str(path)
    spark.sql("DROP DATABASE IF EXISTS segrec_t CASCADE")


def test_stages_write_and_read_catalog_tables(spark, conf, synthetic_data):
    for stage in ("validate", "embed", "validate", "embed"):
        assert cli.main([stage, "--conf", conf]) == 0
    tables = {t.name for t in spark.catalog.listTables("segrec_t")}
    assert {"items", "interactions", "users", "rejects", "item_vectors", "text_vectors"} <= tables
    assert not [t for t in tables if "__new_" in t or "__old_" in t]  # no staging tables left
    assert spark.table("segrec_t.items").count() == len(synthetic_data.items)  # replaced, not appended
    assert spark.table("segrec_t.item_vectors").count() == len(synthetic_data.items)


def test_a_dated_run_overwrites_its_partition_only(spark, conf, synthetic_data):
    for date in ("2026-11-22", "2026-11-22", "2026-11-23"):
        assert cli.main(["validate", "--conf", conf, "--set", f"output.run_date={date}"]) == 0
    counts = {
        r.run_date.isoformat(): r["count"] for r in spark.table("segrec_t.items").groupBy("run_date").count().collect()
    }
    assert counts == {"2026-11-22": len(synthetic_data.items), "2026-11-23": len(synthetic_data.items)}
    assert cli.main(["embed", "--conf", conf, "--set", "output.run_date=2026-11-23"]) == 0
    assert spark.table("segrec_t.item_vectors").select("run_date").distinct().count() == 1


def test_models_stay_files_that_a_dated_night_finds_with_catalog_table_outputs(spark, tmp_path):
    from segrec.jobs.config import Output
    from segrec.jobs.io.store import OutputStore

    spark.sql("DROP DATABASE IF EXISTS segrec_m CASCADE")
    spark.sql(f"CREATE DATABASE segrec_m LOCATION '{tmp_path / 'warehouse'}'")
    try:
        output = Output(path=str(tmp_path / "out"), format="table", database="segrec_m", run_date="2026-12-03")
        store = OutputStore(spark, output, "run-3")
        model = tmp_path / "out" / "segment_model" / "run_date=2026-12-01"
        model.mkdir(parents=True)
        (model / "segment_ids.json").write_text("{}")
        assert not store.exists("segment_model")  # tonight's has not been written
        assert store.latest("segment_model").path("segment_model") == str(model)  # the fit's night, a file
        assert store.previous("towers") is None
        spark.createDataFrame([("u1", 0, "2026-12-02")], "user_id string, segment_id int, run_date string").selectExpr(
            "user_id", "segment_id", "cast(run_date as date) run_date"
        ).write.partitionBy("run_date").saveAsTable("segrec_m.segments")
        assert store.previous_date("segments") == "2026-12-02"  # a dataset: its catalog table's partitions
        assert store.previous("segments").read("segments").collect()[0]["user_id"] == "u1"
    finally:
        spark.sql("DROP DATABASE IF EXISTS segrec_m CASCADE")
