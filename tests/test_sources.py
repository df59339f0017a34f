"""Hostile rows through the source checks: exact kept / rejected counts per reason code."""

import json

import pandas as pd
import pytest

from segrec.jobs.config import config_from_dict
from segrec.jobs.errors import InputError
from segrec.jobs.sources import inputs as sources

TS = "2026-01-01 10:00:00"
ITEMS = [
    ("1", "Toy Story", "Comedy"),  # kept
    (None, "No id", "x"),  # missing_id
    ("  ", "Blank id", "x"),  # missing_id
    ("1", "Toy Story again", "x"),  # duplicate_id (the first valid "1" is kept)
    ("2", "<b></b>", "  "),  # empty_text
    ("3", "東京 🍜", None),  # kept: CJK and emoji are text
    ("4", "long " * 200_000, None),  # kept: a 1 MB text
    ("5", "&lt;b&gt;HTML&lt;/b&gt; <i>title</i>", None),  # kept
    ("6", "\u200b", ""),  # empty_text (zero-width only)
    ("2", "Valid now", "Drama"),  # kept: first *valid* row of id 2
]
USERS = [("u1", "bio one"), ("u2", None), (None, "x"), ("u1", "dup"), ("u3", "🍜🍜")]
INTERACTIONS = [
    ("u1", "1", "5", TS),  # kept
    ("u1", "3", "4.5", "1700000000"),  # kept: epoch seconds in a string
    (None, "1", "3", TS),  # missing_user_id
    ("u2", " ", "3", TS),  # missing_item_id
    ("u2", "1", "NaN", TS),  # invalid_rating
    ("u2", "1", "five", TS),  # invalid_rating
    ("u2", "1", "inf", TS),  # invalid_rating
    ("u2", "1", None, TS),  # invalid_rating
    ("u2", "1", "2", "not a time"),  # invalid_timestamp
    ("u2", "99", "2", TS),  # unknown_item
    ("u9", "1", "2", TS),  # unknown_user
    ("u3", "2", "1", TS),  # kept
    ("u1", "6", "1", TS),  # unknown_item (item 6 was rejected)
]


@pytest.fixture(scope="module")
def config():
    return config_from_dict(
        {
            "inputs": {
                "items": {"path": "-", "columns": {"id": "item_id", "text": ["title", "genres"]}},
                "users": {"path": "-", "columns": {"id": "user_id", "text": ["bio"]}},
                "interactions": {
                    "path": "-",
                    "columns": {"user_id": "user", "item_id": "item", "rating": "stars", "timestamp": "when"},
                },
            }
        }
    )


@pytest.fixture(scope="module")
def annotated(spark, config):
    items_raw = spark.createDataFrame(ITEMS, "item_id string, title string, genres string").coalesce(1)
    users_raw = spark.createDataFrame(USERS, "user_id string, bio string").coalesce(1)
    events_raw = spark.createDataFrame(INTERACTIONS, "user string, item string, stars string, when string")
    items = sources.annotate_items(items_raw, config.inputs.items).cache()
    users = sources.annotate_users(users_raw, config.inputs.users).cache()
    known_items = sources.split(items, "items")[0].select("item_id")
    known_users = sources.split(users, "users")[0].select("user_id")
    events = sources.annotate_interactions(events_raw, config.inputs.interactions, known_items, known_users)
    return {"items": items, "users": users, "interactions": events.cache()}


def test_items_counts_per_reason(annotated):
    counts = sources.count_reasons(annotated["items"])
    assert counts.as_dict() == {
        "rows_in": 10,
        "kept": 5,
        "rejected": 5,
        "rejected_by_reason": {"duplicate_id": 1, "empty_text": 2, "missing_id": 2},
        "pii_redacted": {"url": 0, "email": 0, "id": 0, "iban": 0, "card": 0, "ip": 0, "phone": 0},
    }


def test_first_valid_row_of_a_duplicate_id_is_kept(annotated):
    kept, _ = sources.split(annotated["items"], "items")
    texts = dict(kept.select("item_id", "text").collect())
    assert texts["1"] == "Toy Story. Comedy"
    assert texts["2"] == "Valid now. Drama"
    assert texts["3"] == "東京 🍜"
    assert texts["5"] == "<b>HTML</b> title"
    assert len(texts["4"]) == len("long " * 200_000) - 1


def test_users_keep_textless_users(annotated):
    counts = sources.count_reasons(annotated["users"])
    assert counts.as_dict()["rejected_by_reason"] == {"duplicate_id": 1, "missing_id": 1}
    kept, _ = sources.split(annotated["users"], "users")
    assert dict(kept.collect()) == {"u1": "bio one", "u2": None, "u3": "🍜🍜"}


def test_interactions_counts_per_reason(annotated):
    counts = sources.count_reasons(annotated["interactions"])
    assert counts.rows_in == len(INTERACTIONS)
    assert counts.kept == 3
    assert counts.rejected_by_reason == {
        "invalid_rating": 4,
        "invalid_timestamp": 1,
        "missing_item_id": 1,
        "missing_user_id": 1,
        "unknown_item": 2,
        "unknown_user": 1,
    }


def test_kept_interactions_are_parsed(annotated):
    kept, _ = sources.split(annotated["interactions"], "interactions")
    rows = {(r.user_id, r.item_id): r for r in kept.collect()}
    assert rows[("u1", "1")].rating == 5.0
    assert rows[("u1", "3")].rating == 4.5
    assert str(rows[("u1", "3")].timestamp) == "2023-11-14 22:13:20"
    assert str(rows[("u1", "1")].timestamp) == "2026-01-01 10:00:00"


def test_rejects_carry_source_id_reason_and_raw_json(annotated):
    _, rejects = sources.split(annotated["interactions"], "interactions")
    row = rejects.where("reason = 'invalid_timestamp'").collect()[0]
    assert row.source == "interactions"
    assert row.id == "user=u2 item=1"
    assert json.loads(row.raw) == {"user": "u2", "item": "1", "stars": "2", "when": "not a time"}
    _, item_rejects = sources.split(annotated["items"], "items")
    assert sorted(r.reason for r in item_rejects.where("id is null").collect()) == ["missing_id"] * 2


def test_numeric_ratings_nan_inf_rejected_negative_kept(spark, config):
    raw = spark.createDataFrame(
        pd.DataFrame(
            {
                "user": ["a", "a", "a", "a"],
                "item": ["1", "1", "1", "1"],
                "stars": [float("nan"), float("inf"), -2.0, 3.0],
                "when": [TS] * 4,
            }
        )
    )
    known = spark.createDataFrame([("1",)], "item_id string")
    frame = sources.annotate_interactions(raw, config.inputs.interactions, known, None)
    counts = sources.count_reasons(frame)
    assert (counts.kept, counts.rejected_by_reason) == (2, {"invalid_rating": 2})


def test_missing_column_is_named_with_what_was_found(spark, config):
    df = spark.createDataFrame([("1", "t")], "ItemId string, title string")
    with pytest.raises(InputError) as err:
        sources.check_columns(df, "items", config.inputs.items, sources.roles_for("items", config.inputs.items))
    assert "items: mapped id column 'item_id' is not in - (found: ItemId, title)" in str(err.value)


def test_wrong_column_types_are_named(spark, config):
    df = spark.createDataFrame([(1.5, "t", "g")], "item_id double, title string, genres string")
    with pytest.raises(InputError, match=r"items: column 'item_id' \(id\) has type double, expected string or integer"):
        sources.check_columns(df, "items", config.inputs.items, sources.roles_for("items", config.inputs.items))
    df = spark.createDataFrame([("1", ("a",), "g")], "item_id string, title struct<x:string>, genres string")
    with pytest.raises(InputError, match=r"column 'title' \(text\) has type struct<x:string>"):
        sources.check_columns(df, "items", config.inputs.items, sources.roles_for("items", config.inputs.items))


def test_array_text_columns_are_joined(spark):
    config = config_from_dict(
        {
            "inputs": {
                "items": {"path": "-", "columns": {"id": "id", "text": ["title", "tags"]}},
                "interactions": {"path": "-", "columns": {"user_id": "u", "item_id": "i"}},
            }
        }
    )
    df = spark.createDataFrame([(7, "Boots", ["outdoor", "hiking"])], "id long, title string, tags array<string>")
    kept, _ = sources.split(sources.annotate_items(df, config.inputs.items), "items")
    assert kept.collect()[0].asDict() == {"item_id": "7", "text": "Boots. outdoor, hiking"}


def test_missing_path_is_named(spark, config, tmp_path):
    source = config.inputs.items.model_copy(update={"path": str(tmp_path / "nope.parquet")})
    with pytest.raises(InputError, match=r"items: input path not found: .*nope\.parquet"):
        sources.read_source(spark, "items", source)


def test_a_catalog_table_is_a_source(spark, config):
    spark.createDataFrame(
        [("t1", "Tent", "Camping")], "item_id string, title string, genres string"
    ).createOrReplaceTempView("catalog_items")
    source = config.inputs.items.model_copy(update={"path": None, "table": "catalog_items"})
    raw = sources.read_source(spark, "items", source)
    kept, _ = sources.split(sources.annotate_items(raw, source), "items")
    assert kept.collect()[0].asDict() == {"item_id": "t1", "text": "Tent. Camping"}
    with pytest.raises(InputError, match="items: table not found: no_such_table"):
        sources.read_source(spark, "items", source.model_copy(update={"table": "no_such_table"}))


def test_personal_data_is_redacted_before_anything_reads_the_text_and_counted_by_kind(spark, config):
    rows = [("1", "Boots, ask bob@example.com", "call +44 20 7946 0958 or bob@example.com"), ("2", "Tent", None)]
    raw = spark.createDataFrame(rows, "item_id string, title string, genres string")
    annotated = sources.annotate_items(raw, config.inputs.items)
    kept, _ = sources.split(annotated, "items")
    assert {r.item_id: r.text for r in kept.collect()} == {
        "1": "Boots, ask <email>. call <phone> or <email>",
        "2": "Tent",
    }
    counts = sources.count_reasons(annotated).as_dict()
    assert counts["pii_redacted"] == {"url": 0, "email": 2, "id": 0, "iban": 0, "card": 0, "ip": 0, "phone": 1}
    kept_as_written, _ = sources.split(sources.annotate_items(raw, config.inputs.items, pii="keep"), "items")
    assert "bob@example.com" in kept_as_written.where("item_id = '1'").first().text
