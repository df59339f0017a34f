"""Segment portraits: what sets a segment apart, never anyone singled out."""

import pytest
from pyspark.sql import functions as F

from segrec.jobs.segments.portraits import description, engaged_items, label_terms, user_interests, user_terms


@pytest.fixture(scope="module")
def planted(spark):
    """Two segments of six users. In segment 0 everyone writes about trails, and one user writes their
    own name (and e-mail placeholder) more often than anyone writes anything; in segment 1 everyone cooks.
    Everyone writes 'weekend' (a word both segments share). Items: i1 engaged by all of segment 0, i2
    by all of segment 1, i5 by everyone, i9 by segment 0's talkative user only."""
    users = [
        (f"a{n}", "hiking trail boots weekend" + (" zebulon" * 20 + " <email>" if n == 0 else "")) for n in range(6)
    ] + [(f"c{n}", "cooking bread recipes weekend") for n in range(6)]
    users = spark.createDataFrame(users, "user_id string, text string")
    segments = users.select("user_id", F.when(F.col("user_id").startswith("a"), 0).otherwise(1).alias("segment_id"))
    items = spark.createDataFrame(
        [("i1", "trail map"), ("i2", "bread oven"), ("i5", "weekend newspaper"), ("i9", "zebulon's own item")],
        "item_id string, text string",
    )
    events = (
        [(f"a{n}", "i1", None) for n in range(6)]
        + [("a0", "i9", None)]
        + [(f"c{n}", "i2", None) for n in range(6)]
        + [(u, "i5", None) for u in users.toPandas().user_id]
    )
    interactions = spark.createDataFrame(events, "user_id string, item_id string, rating double")
    return segments, users, items, interactions


def terms_of(planted, min_users, min_lift=1.2):
    segments, users, items, interactions = planted
    terms = user_terms(users, items, interactions, min_users)
    return {
        r.segment_id: [t.term for t in r.terms]
        for r in label_terms(terms, segments, 8, min_users, 12, min_lift).collect()
    }


def test_a_term_only_one_user_writes_never_labels_a_segment(planted):
    every = terms_of(planted, 1)
    assert "zebulon" in every[0]  # without the rule the name would label the segment
    shown = terms_of(planted, 5)
    assert "zebulon" not in shown[0] and {"hiking", "trail", "boots"} <= set(shown[0])
    assert "email" not in every[0]  # the placeholder of redacted personal data is not a word
    assert {"cooking", "bread"} <= set(shown[1])
    assert terms_of(planted, 7) == {}  # segments smaller than the minimum get no terms


def test_words_every_segment_shares_drop_out(planted):
    shown = terms_of(planted, 5)
    assert all("weekend" not in terms and "newspaper" not in terms for terms in shown.values())
    # lift exactly 1: the talkative user's name, left out, does not dilute their other words
    assert all("weekend" not in terms for terms in terms_of(planted, 5, min_lift=1.0).values())


def test_engaged_items_are_what_sets_the_segment_apart(planted):
    segments, _, items, interactions = planted
    rows = {
        r.segment_id: [(e.item, e.users, e.lift) for e in r.engaged_items]
        for r in engaged_items(segments, interactions, items, 5, 12, 5).collect()
    }
    # i5 (everyone) has lift 1 and i9 a single user: neither portrays a segment
    assert rows == {0: [("i1: trail map", 6, 2.0)], 1: [("i2: bread oven", 6, 2.0)]}


def test_interest_tags_are_a_users_own_and_never_single_them_out(planted, spark):
    segments, users, items, interactions = planted
    tags = {
        r.user_id: [(t.term, t.weight) for t in r.interests]
        for r in user_interests(user_terms(users, items, interactions, 5), 3, 5).collect()
    }
    assert set(tags) == {f"a{n}" for n in range(6)} | {f"c{n}" for n in range(6)}
    assert {t for t, _ in tags["c3"]} <= {"cooking", "bread", "recipes", "oven"} and len(tags["c3"]) == 3
    assert all("zebulon" not in [t for t, _ in v] and "weekend" not in [t for t, _ in v] for v in tags.values())
    assert all(abs(sum(w for _, w in v) - 1) < 1e-3 for v in tags.values())
    assert tags["a0"] == tags["a1"]  # the name a0 writes 20 times neither shows nor drowns their hiking
    assert (
        user_interests(user_terms(users, items, interactions, 1), 3, 13).where("user_id = 'a1'").first().interests == []
    )


def test_a_segment_is_described_in_one_line(spark):
    row = (
        spark.createDataFrame(
            [
                (
                    3,
                    None,
                    120,
                    0.25,
                    0.91,
                    "natural",
                    [("hiking", 40, 3.21), ("trail", 30, 2.0)],
                    [("i1: trail map", 40, 3.5)],
                )
            ],
            "segment_id int, parent_id int, size long, share double, stability double, stability_class string, "
            "terms array<struct<term:string,users:long,lift:double>>, "
            "engaged_items array<struct<item:string,users:long,lift:double>>",
        )
        .select(description().alias("d"))
        .first()
    )
    assert row.d == (
        "120 users (25.0%); natural (stability 0.91); sets apart: hiking 3.2x, trail 2.0x; "
        "engages more than most with i1: trail map 3.5x"
    )
    empty = (
        spark.createDataFrame([(4, 2, 3, 0.01)], "segment_id int, parent_id int, size long, share double")
        .withColumn("stability", F.lit(None).cast("double"))
        .withColumn("stability_class", F.lit(None).cast("string"))
        .withColumn("terms", F.lit(None).cast("array<struct<term:string,users:long,lift:double>>"))
        .withColumn("engaged_items", F.lit(None).cast("array<struct<item:string,users:long,lift:double>>"))
    )
    assert empty.select(description().alias("d")).first().d == "3 users (1.0%); within broad segment 2"
