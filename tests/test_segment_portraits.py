"""Segment portraits cannot single anyone out: terms and engaged items need several users behind them."""

import pytest
from pyspark.sql import functions as F

from segrec.jobs.segment import description, engaged_items, label_terms


@pytest.fixture(scope="module")
def planted(spark):
    """Two segments of six users. In segment 0 everyone writes about trails, and one user writes their
    own name (and e-mail placeholder) more often than anyone writes anything; in segment 1 everyone cooks.
    Items: i1 engaged by all of segment 0, i9 by its one talkative user only."""
    users = [(f"a{n}", "hiking trail boots" + (" zebulon" * 20 + " <email>" if n == 0 else ""))
             for n in range(6)] + [(f"c{n}", "cooking bread recipes") for n in range(6)]
    users = spark.createDataFrame(users, "user_id string, text string")
    segments = users.select("user_id", F.when(F.col("user_id").startswith("a"), 0).otherwise(1).alias("segment_id"))
    items = spark.createDataFrame([("i1", "trail map"), ("i2", "bread oven"), ("i9", "zebulon's own item")],
                                  "item_id string, text string")
    events = [(f"a{n}", "i1", None) for n in range(6)] + [("a0", "i9", None)] + [(f"c{n}", "i2", None) for n in range(6)]
    interactions = spark.createDataFrame(events, "user_id string, item_id string, rating double")
    return segments, users, items, interactions


def terms_of(planted, min_users):
    segments, users, items, interactions = planted
    return {r.segment_id: r.label_terms for r in label_terms(segments, users, items, interactions, 8, min_users).collect()}


def test_a_term_only_one_user_writes_never_labels_a_segment(planted):
    every = terms_of(planted, 1)
    assert every[0][0] == "zebulon"  # without the rule the name would be the segment's first label term
    shown = terms_of(planted, 5)
    assert "zebulon" not in shown[0] and {"hiking", "trail", "boots"} <= set(shown[0])
    assert "email" not in every[0]  # the placeholder of redacted personal data is not a word
    assert {"cooking", "bread"} <= set(shown[1])
    assert terms_of(planted, 7) == {}  # segments smaller than the minimum get no terms


def test_engaged_items_need_as_many_users(planted):
    segments, _, items, interactions = planted
    rows = {r.segment_id: [e.item for e in r.engaged_items]
            for r in engaged_items(segments, interactions, items, 5, 12, 5).collect()}
    assert rows == {0: ["i1: trail map"], 1: ["i2: bread oven"]}


def test_a_segment_is_described_in_one_line(spark):
    row = spark.createDataFrame(
        [(3, 120, 0.25, ["hiking", "trail", "boots", "tent", "maps"], [("i1: trail map", 40, 3.5)])],
        "segment_id int, size long, share double, label_terms array<string>, "
        "engaged_items array<struct<item:string,users:long,lift:double>>",
    ).select(description().alias("d")).first()
    assert row.d == "120 users (25.0%); about hiking, trail, boots, tent; most engaged: i1: trail map (lift 3.5)"
    empty = spark.createDataFrame([(4, 3, 0.01)], "segment_id int, size long, share double") \
        .withColumn("label_terms", F.lit(None).cast("array<string>")) \
        .withColumn("engaged_items", F.lit(None).cast("array<struct<item:string,users:long,lift:double>>"))
    assert empty.select(description().alias("d")).first().d == "3 users (1.0%)"
