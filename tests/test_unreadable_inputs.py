"""Inputs Spark cannot read as configured: exit 2 with one paragraph naming the source, no Python
traceback and no Java stack trace on the console."""

import os

import pytest
import yaml

from segrec.jobs import cli
from segrec.jobs.bootstrap.synthetic import config_dict, generate, write_parquet


@pytest.fixture
def data(tmp_path):
    generated = generate(n_users=10, items_per_persona=3, personas=["hiker", "cook"], seed=1)
    return generated, write_parquet(generated, str(tmp_path / "in"))


def validate(tmp_path, paths, **overrides) -> int:
    conf = config_dict({**paths, **overrides}, str(tmp_path / "out"))
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(conf))
    return cli.main(["validate", "--conf", str(tmp_path / "conf.yaml")])


def quiet(err: str) -> bool:
    return "Traceback" not in err and "at org.apache" not in err


def test_a_file_in_another_format_than_configured(spark, tmp_path, data, capfd):
    generated, paths = data
    generated.items.to_csv(tmp_path / "items.csv", index=False)
    assert validate(tmp_path, paths, items=str(tmp_path / "items.csv")) == 2
    err = capfd.readouterr().err
    assert "items: cannot read" in err and "as parquet" in err and quiet(err)


def test_parquet_files_with_conflicting_schemas(spark, tmp_path, data, capfd):
    generated, paths = data
    folder = tmp_path / "items_dir"
    folder.mkdir()
    generated.items.to_parquet(folder / "a.parquet", index=False)
    generated.items.assign(item_id=range(len(generated.items))).to_parquet(folder / "b.parquet", index=False)
    assert validate(tmp_path, paths, items=str(folder)) == 2
    err = capfd.readouterr().err
    assert "items: cannot read" in err and "item_id" in err and quiet(err)


def test_parquet_files_that_differ_in_columns_are_merged(spark, tmp_path, data):
    """One file written before `description` existed: its rows keep their title, the others' keep both."""
    generated, paths = data
    folder = tmp_path / "items_dir"
    folder.mkdir()
    wide, narrow = generated.items.iloc[:3], generated.items.iloc[3:]
    narrow.drop(columns=["description"]).to_parquet(folder / "a.parquet", index=False)  # read first
    wide.to_parquet(folder / "b.parquet", index=False)
    assert validate(tmp_path, paths, items=str(folder)) == 0
    texts = dict(spark.read.parquet(str(tmp_path / "out" / "items")).select("item_id", "text").collect())
    assert len(texts) == len(generated.items)
    for row in generated.items.itertuples():
        if row.Index < 3:
            assert texts[row.item_id] == f"{row.title}. {row.description}"
        else:
            assert texts[row.item_id] == row.title


def test_a_missing_input_path_is_named_without_a_stack_trace(spark, tmp_path, data, capfd):
    _, paths = data
    assert validate(tmp_path, paths, items=os.path.join(str(tmp_path), "nope")) == 2
    err = capfd.readouterr().err
    assert "items: input path not found" in err and quiet(err)
