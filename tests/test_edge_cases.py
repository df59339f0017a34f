"""Degenerate inputs through the CLI: one user, k above the number of users or items, empty sources."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from segrec.jobs import cli
from segrec.jobs.bootstrap.synthetic import config_dict, generate, write_parquet


def workspace(tmp_path, tiny_model_dir, n_users, **overrides):
    data = generate(n_users=n_users, items_per_persona=3, personas=["hiker", "cook"], seed=5)
    for name, frame in overrides.items():
        setattr(data, name, frame)
    paths = write_parquet(data, str(tmp_path / "in"))
    conf = config_dict(paths, str(tmp_path / "out"), model_path=tiny_model_dir)
    conf["model"].update({"max_length": 32, "chunk_overlap": 4})
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return str(path), data


def stage_figures(tmp_path, stage):
    return json.loads((tmp_path / "out" / "manifest.json").read_text())["stages"][stage]


def test_one_user_cannot_be_segmented_but_gets_recommendations(spark, tmp_path, tiny_model_dir, capsys):
    conf, _ = workspace(tmp_path, tiny_model_dir, n_users=1)
    for stage in ("validate", "embed", "profile"):
        assert cli.main([stage, "--conf", conf]) == 0
    assert cli.main(["segment", "--conf", conf]) == 2
    assert "1 user vector(s); fitting segments needs at least 3 users" in capsys.readouterr().err
    assert cli.main(["recommend", "--conf", conf]) == 0  # content-only needs no segments
    assert stage_figures(tmp_path, "recommend")["users"] == 1


# long: the caps are check_k_range's (tests/test_segment_choice.py) and the scorer's (a user gets all their
# unseen items when fewer than k: tests/test_topk_udf.py); this runs a whole pipeline with both
@pytest.mark.long
def test_k_above_users_and_items_is_capped(spark, tmp_path, tiny_model_dir):
    conf, data = workspace(tmp_path, tiny_model_dir, n_users=5)
    assert cli.main(["run", "--conf", conf, "--set", "segment.k=10", "--set", "recommend.k=1000"]) == 0
    assert stage_figures(tmp_path, "segment")["k"] == 4
    recs = pd.read_parquet(tmp_path / "out" / "recommendations")
    seen = data.interactions.groupby("user_id")["item_id"].nunique()
    per_user = recs.groupby("user_id").size()
    assert (per_user == len(data.items) - seen.reindex(per_user.index, fill_value=0)).all()


def test_empty_interactions_leave_text_only_users(spark, tmp_path, tiny_model_dir):
    empty = pd.DataFrame(
        {
            "user_id": pd.Series(dtype=str),
            "item_id": pd.Series(dtype=str),
            "rating": pd.Series(dtype=float),
            "timestamp": pd.Series(dtype="int64"),
        }
    )
    conf, data = workspace(tmp_path, tiny_model_dir, n_users=6, interactions=empty)
    for stage in ("validate", "embed", "profile"):
        assert cli.main([stage, "--conf", conf]) == 0
    figures = stage_figures(tmp_path, "profile")
    assert figures["user_vectors"] == 6 and figures["text_only"] == 6


def test_every_text_empty_stops_with_the_counts(spark, tmp_path, tiny_model_dir, capsys):
    blank = pd.DataFrame(
        {"item_id": ["a", "b", "c"], "title": ["", " ", "<p></p>"], "description": [None, "\u200b", ""]}
    )
    conf, _ = workspace(tmp_path, tiny_model_dir, n_users=4, items=blank)
    assert cli.main(["validate", "--conf", conf]) == 2
    assert "items: no valid rows left (3 read; rejected: empty_text=3)" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["", "item_id,title\n"])
def test_an_empty_items_file_is_named(spark, tmp_path, tiny_model_dir, capsys, content):
    conf, _ = workspace(tmp_path, tiny_model_dir, n_users=4)
    settings = yaml.safe_load(Path(conf).read_text())
    csv = tmp_path / "items.csv"
    csv.write_text(content)
    settings["inputs"]["items"] = {"path": str(csv), "format": "csv", "columns": {"id": "item_id", "text": ["title"]}}
    Path(conf).write_text(yaml.safe_dump(settings))
    assert cli.main(["validate", "--conf", conf]) == 2
    err = capsys.readouterr().err
    assert "items:" in err and "Traceback" not in err
