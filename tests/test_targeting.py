"""Targeting lift: members' response to their segment's top items against everyone's, and chance's."""

import pytest
from pyspark.sql import functions as F

from segrec.jobs.bootstrap.synthetic import generate
from segrec.jobs.config import Segment
from segrec.jobs.evaluation.split import holdout_split
from segrec.jobs.evaluation.targeting import random_segments, targeting_lift, targeting_report


def test_open_pairs_and_responses_are_counted_by_hand(spark):
    """Segment 0 = {a, b, c, d, e}, segment 1 = {x, y, z, v, w}. Item i1 engaged in training by all of
    segment 0 except e (a, b, c, d) and by x: i1 is segment 0's top item (min 3 users, lift 1.6). On the
    held-out rows, e and y take i1. Open (user, i1) pairs: segment 0 has e only -> 1 response of 1;
    everyone: e, y, z, v, w -> 2 responses of 5. Lift = 1 / 0.4 = 2.5. Segment 1 has no top item."""
    segments = spark.createDataFrame(
        [(u, 0) for u in "abcde"] + [(u, 1) for u in "xyzvw"], "user_id string, segment_id int"
    )
    train = spark.createDataFrame(
        [(u, "i1", None) for u in "abcdx"] + [(u, "i2", None) for u in "abcdexyzvw"],
        "user_id string, item_id string, rating double",
    )
    held = spark.createDataFrame(
        [
            ("e", "i1"),
            ("y", "i1"),
            ("a", "i9"),
            ("b", "i9"),
            ("c", "i9"),
            ("d", "i9"),
            ("x", "i9"),
            ("z", "i9"),
            ("v", "i9"),
            ("w", "i9"),
        ],
        "user_id string, item_id string",
    )
    result = targeting_lift(segments, train, held, Segment(min_term_users=3, top_items=5))
    assert result["segments"] == [
        {"segment_id": 0, "members": 5, "top_items": 1, "member_rate": 1.0, "everyone_rate": 0.4, "lift": 2.5},
        {"segment_id": 1, "members": 5, "top_items": 0, "member_rate": 0.0, "everyone_rate": 0.0, "lift": None},
    ]
    assert result["mean_lift"] == 2.5


@pytest.fixture(scope="module")
def personas(spark):
    data = generate(n_users=300, items_per_persona=20, seed=5)
    events = spark.createDataFrame(data.interactions).withColumn("timestamp", F.col("timestamp").cast("timestamp"))
    train, held = holdout_split(events, 2, 42)
    names = sorted(set(data.user_persona))
    segments = spark.createDataFrame(
        [(u, names.index(p)) for u, p in data.user_persona.items()], "user_id string, segment_id int"
    )
    return segments, train, held


def test_planted_segments_pay_and_random_ones_do_not(personas):
    segments, train, held = personas
    report = targeting_report(segments, train, held, Segment(), seed=42)
    assert report["segments"]["mean_lift"] > 3.0  # each persona keeps ~85% of its picks on its own items
    assert all(row["lift"] > 2.0 for row in report["segments"]["segments"])
    assert 0.7 < report["random"]["mean_lift"] < 1.3 and len(report["random"]["draws"]) == 5


def test_random_segments_keep_the_sizes_in_expectation(personas):
    segments, _, _ = personas
    sizes = {r.segment_id: r["count"] for r in random_segments(segments, 42).groupBy("segment_id").count().collect()}
    assert sorted(sizes) == [0, 1, 2, 3, 4] and sum(sizes.values()) == 300
    assert all(abs(n - 60) <= 20 for n in sizes.values())
    assert random_segments(segments, 42).collect() == random_segments(segments, 42).collect()  # seeded
