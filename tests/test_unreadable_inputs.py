"""Inputs Spark cannot read as configured: exit 2 with one paragraph naming the source, no Python
traceback and no Java stack trace on the console."""

import json
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


def items_csv_with_an_unclosed_quote(tmp_path, items, at: int):
    """The items as CSV, the title of row ``at`` opening a quote it never closes."""
    lines = ["item_id,title,description"]
    for i, row in enumerate(items.itertuples()):
        title = f'"{row.title}' if i == at else row.title
        lines.append(f"{row.item_id},{title},{row.description}")
    path = tmp_path / "items.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, at + 2  # the line the quote opens on (the header is line 1)


def validate_csv_items(tmp_path, paths, csv, **items) -> int:
    conf = config_dict(paths, str(tmp_path / "out"))
    conf["inputs"]["items"].update(path=str(csv), format="csv", **items)
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(conf))
    return cli.main(["validate", "--conf", str(tmp_path / "conf.yaml")])


def test_an_unclosed_quote_in_items_is_named_before_the_interactions_it_breaks(spark, tmp_path, data, capfd):
    """Items read short make most interactions unknown_item: the message starts at the quote."""
    generated, paths = data
    csv, line = items_csv_with_an_unclosed_quote(tmp_path, generated.items, at=1)
    swallowed = len(generated.items) - 2
    # the items' own share passes (a tolerant limit), so the interactions are the first to fail
    assert validate_csv_items(tmp_path, paths, csv, max_reject_share=0.9) == 2
    err = capfd.readouterr().err
    first = f"items: line {line} of "
    assert first in err and f"the {swallowed} line(s) after it" in err and quiet(err)
    assert err.index(first) < err.index("interactions:") and "unknown_item" in err


def test_an_unclosed_quote_that_swallows_most_items_stops_at_the_items(spark, tmp_path, data, capfd):
    generated, paths = data
    csv, line = items_csv_with_an_unclosed_quote(tmp_path, generated.items, at=1)
    assert validate_csv_items(tmp_path, paths, csv) == 2
    err = capfd.readouterr().err
    assert f"items: line {line} of " in err and "items: 5 of 6 rows rejected" in err and quiet(err)


def test_an_unclosed_quote_counts_what_it_swallowed_against_the_reject_share(spark, tmp_path, data, caplog):
    generated, paths = data
    csv, line = items_csv_with_an_unclosed_quote(tmp_path, generated.items, at=len(generated.items) - 3)
    assert validate_csv_items(tmp_path, paths, csv) == 0  # 1 row and 2 swallowed lines of 6: under 0.5
    assert f"items: line {line} of {csv} opens a quote" in caplog.text and "the 2 line(s) after it" in caplog.text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (quote,) = manifest["sources"]["items"]["unclosed_quotes"]
    assert quote["line"] == line and quote["lines_swallowed"] == 2 and quote["file"].endswith("items.csv")
