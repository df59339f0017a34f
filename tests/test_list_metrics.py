"""List metrics, Davies-Bouldin and the baselines, against values worked out by hand."""

import math

import numpy as np
import pytest

from segrec.jobs.evaluation.baselines import draw_for_user, most_popular, random_lists
from segrec.jobs.evaluation.list_quality import davies_bouldin, list_metrics, long_tail_items, reference

# Catalogue a, b, c, d with 2-d unit vectors; three users' lists of two; training rows below.
VECTORS = [("a", [1.0, 0.0]), ("b", [0.0, 1.0]), ("c", [0.6, 0.8]), ("d", [-1.0, 0.0])]
RECS = [("u1", 1, "a"), ("u1", 2, "b"), ("u2", 1, "a"), ("u2", 2, "c"), ("u3", 1, "b"), ("u3", 2, "c")]
TRAIN = [("u1", "d"), ("u2", "d"), ("u3", "d"), ("u3", "a")]  # d: 3 users, a: 1, b and c: none


@pytest.fixture(scope="module")
def frames(spark):
    return {
        "vectors": spark.createDataFrame(VECTORS, "item_id string, vector array<float>"),
        "recs": spark.createDataFrame(RECS, "user_id string, rank int, item_id string"),
        "train": spark.createDataFrame(TRAIN, "user_id string, item_id string"),
    }


def test_list_metrics_at_2_match_hand_computed_values(frames):
    ref = reference(frames["train"], frames["vectors"], head_share=0.5)  # head: d (3 users), a (1)
    assert sorted(r.item_id for r in long_tail_items(ref).collect()) == ["b", "c"]
    got = list_metrics(frames["recs"], ref, k=2)
    # coverage: a, b, c of four items. novelty: p(a) = (1+1)/(3+1), p(b) = p(c) = 1/4 -> 1 bit, 2 bits
    # diversity: 1 - cos per list: (a,b) 1, (a,c) 0.4, (b,c) 0.2. personalisation: every pair shares
    # one of two items. long tail: b and c are 4 of the 6 rows.
    expected = {
        "coverage": 3 / 4,
        "novelty": (2 * 1 + 4 * 2) / 6,
        "diversity": (1 + 0.4 + 0.2) / 3,
        "personalisation": 1 - 1 / 2,
        "long_tail_share": 4 / 6,
    }
    assert got == pytest.approx(expected, abs=1e-6)


def test_list_metrics_at_1_have_no_diversity_and_less_personalisation(frames):
    ref = reference(frames["train"], frames["vectors"], head_share=0.25)  # head: d only
    got = list_metrics(frames["recs"], ref, k=1)
    # lists a, a, b: only u1 and u2 overlap (1 of 3 pairs)
    assert got["coverage"] == pytest.approx(2 / 4)
    assert got["diversity"] is None  # a list of one item has no pairs
    assert got["personalisation"] == pytest.approx(1 - (1 / 3) / 1)
    assert got["novelty"] == pytest.approx((1 + 1 + 2) / 3)
    assert got["long_tail_share"] == pytest.approx(1.0)


def test_davies_bouldin_by_hand():
    centroids = np.array([[2.0, 0.0], [0.0, 3.0]])  # normalised inside: distance sqrt(2)
    assert davies_bouldin(centroids, {0: 0.2, 1: 0.4}) == pytest.approx(0.6 / math.sqrt(2))
    three = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # segment 0: worst is with 1 (0.1+0.3)/sqrt2 vs with 2 (0.1+0.5)/2; segment 2 likewise.
    scatter = {0: 0.1, 1: 0.3, 2: 0.5}
    worst = [
        max(0.4 / math.sqrt(2), 0.6 / 2),
        max(0.4 / math.sqrt(2), 0.8 / math.sqrt(2)),
        max(0.6 / 2, 0.8 / math.sqrt(2)),
    ]
    assert davies_bouldin(three, scatter) == pytest.approx(sum(worst) / 3)
    assert davies_bouldin(centroids[:1], {0: 0.2}) is None


def test_most_popular_masks_seen_items_and_breaks_ties_by_id(spark):
    train = spark.createDataFrame(
        [("u1", "c"), ("u2", "c"), ("u3", "c"), ("u1", "b"), ("u2", "a"), ("u3", "d")], "user_id string, item_id string"
    )
    items = spark.createDataFrame([(i, [0.0]) for i in "abcde"], "item_id string, vector array<float>")
    recs = most_popular(spark, train, items, k=3).toPandas().sort_values(["user_id", "rank"])
    lists = recs.groupby("user_id")["item_id"].apply(list).to_dict()
    # c (3 users) first; a, b, d tie at one user each (id order); e has none
    assert lists == {"u1": ["a", "d", "e"], "u2": ["b", "d", "e"], "u3": ["a", "b", "e"]}
    assert recs["rank"].tolist() == [1, 2, 3] * 3


def test_random_lists_are_seeded_unseen_and_cover_the_catalogue(spark):
    catalogue = np.array([f"i{j:02d}" for j in range(20)], dtype=object)
    first = draw_for_user("u1", ["i00", "i05"], catalogue, 5, seed=3)
    assert first == draw_for_user("u1", ["i05", "i00"], catalogue, 5, seed=3)
    assert first != draw_for_user("u1", ["i00", "i05"], catalogue, 5, seed=4)
    assert [r[1] for r in first] == [1, 2, 3, 4, 5] and not {"i00", "i05"} & {r[2] for r in first}
    assert len(draw_for_user("u2", list(catalogue[:18]), catalogue, 5, seed=3)) == 2  # only two unseen
    # Over many users every item turns up at a similar rate (a uniform draw, not a fixed list).
    counts = {}
    for u in range(400):
        for row in draw_for_user(f"user{u}", [], catalogue, 5, seed=1):
            counts[row[2]] = counts.get(row[2], 0) + 1
    assert len(counts) == 20 and max(counts.values()) < 2 * min(counts.values())

    train = spark.createDataFrame([("u1", "i00"), ("u1", "i05"), ("u2", "i01")], "user_id string, item_id string")
    items = spark.createDataFrame([(i, [0.0]) for i in catalogue], "item_id string, vector array<float>")
    recs = random_lists(train, items, 5, seed=3).toPandas().sort_values(["user_id", "rank"])
    assert recs[recs.user_id == "u1"].item_id.tolist() == [r[2] for r in first]
    assert len(recs[recs.user_id == "u2"]) == 5


def test_the_head_cut_inside_a_popularity_tie_goes_by_item_id(spark):
    # popularity: z 3 users; b, a, c 1 user each; e, f none. A head of 3 takes z, then a and b by id.
    train = spark.createDataFrame(
        [("u1", "z"), ("u2", "z"), ("u3", "z"), ("u1", "b"), ("u2", "a"), ("u3", "c")], "user_id string, item_id string"
    )
    vectors = spark.createDataFrame([(i, [1.0]) for i in "zbacef"], "item_id string, vector array<float>")
    ref = reference(train, vectors, head_share=0.5)
    assert sorted(r.item_id for r in long_tail_items(ref).collect()) == ["c", "e", "f"]
    everything = reference(train, vectors, head_share=0.99)  # rounds to all 6 items: no long tail
    assert long_tail_items(everything).count() == 0
