"""Outputs partitioned by run date: a re-run replaces its date only; other dates stay as they were."""

import os

import yaml

from segrec.jobs import cli
from segrec.jobs.bootstrap.synthetic import config_dict, write_parquet


def files(directory):
    return sorted((p.name, p.stat().st_mtime_ns) for p in directory.iterdir())


def test_same_date_twice_leaves_one_copy_and_another_date_leaves_it_alone(spark, tmp_path, synthetic_data):
    paths = write_parquet(synthetic_data, str(tmp_path / "in"))
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(config_dict(paths, str(tmp_path / "out"))))
    items = tmp_path / "out" / "items"

    assert cli.main(["validate", "--conf", str(conf), "--set", "output.run_date=2026-11-22"]) == 0
    assert cli.main(["validate", "--conf", str(conf), "--set", "output.run_date=2026-11-22"]) == 0
    assert sorted(os.listdir(items)) == ["run_date=2026-11-22"]
    first_date = files(items / "run_date=2026-11-22")

    assert cli.main(["validate", "--conf", str(conf), "--set", "output.run_date=2026-11-23"]) == 0
    assert sorted(os.listdir(items)) == ["run_date=2026-11-22", "run_date=2026-11-23"]
    assert files(items / "run_date=2026-11-22") == first_date  # untouched

    whole = spark.read.parquet(str(items))
    counts = {r.run_date.isoformat(): r["count"] for r in whole.groupBy("run_date").count().collect()}
    assert counts == {"2026-11-22": len(synthetic_data.items), "2026-11-23": len(synthetic_data.items)}


def test_run_date_must_be_a_date():
    import pytest

    from segrec.jobs.config import config_from_dict
    from segrec.jobs.errors import ConfigError

    with pytest.raises(ConfigError, match=r"output\.run_date: String should match pattern"):
        config_from_dict(
            {
                "inputs": {
                    "items": {"path": "x", "columns": {"id": "i"}},
                    "interactions": {"path": "y", "columns": {"user_id": "u", "item_id": "i"}},
                }
            },
            ["output.run_date=yesterday"],
        )
