"""Ranking metrics against values computed by hand on a three-user example."""

import math

import pytest

from segrec.jobs.evaluation.ranking import per_user_metrics, ranking_metrics

L2 = math.log2
# u1: relevant {a, c}; recommended a (1), b (2), c (3)      -> hits at ranks 1 and 3
# u2: relevant {x};    recommended y (1), z (2), w (3)      -> no hit
# u3: relevant {p, q, r, s}; recommended q (1), t (2)       -> hit at rank 1, only 2 recommendations
RECS = [
    ("u1", 1, "a"),
    ("u1", 2, "b"),
    ("u1", 3, "c"),
    ("u2", 1, "y"),
    ("u2", 2, "z"),
    ("u2", 3, "w"),
    ("u3", 1, "q"),
    ("u3", 2, "t"),
]
RELEVANT = [("u1", "a"), ("u1", "c"), ("u2", "x"), ("u3", "p"), ("u3", "q"), ("u3", "r"), ("u3", "s")]

EXPECTED_AT_3 = {
    "u1": {
        "precision": 2 / 3,
        "recall": 1.0,
        "ndcg": (1 + 1 / L2(4)) / (1 + 1 / L2(3)),
        "map": (1 / 1 + 2 / 3) / 2,
        "mrr": 1.0,
        "hit_rate": 1.0,
    },
    "u2": {"precision": 0.0, "recall": 0.0, "ndcg": 0.0, "map": 0.0, "mrr": 0.0, "hit_rate": 0.0},
    "u3": {
        "precision": 1 / 3,
        "recall": 1 / 4,
        "ndcg": 1 / (1 + 1 / L2(3) + 1 / L2(4)),
        "map": (1 / 1) / 3,
        "mrr": 1.0,
        "hit_rate": 1.0,
    },
}


@pytest.fixture(scope="module")
def frames(spark):
    recs = spark.createDataFrame(RECS, "user_id string, rank int, item_id string")
    relevant = spark.createDataFrame(RELEVANT, "user_id string, item_id string")
    return recs, relevant


def test_per_user_values_at_3(frames):
    rows = {r.user_id: r.asDict() for r in per_user_metrics(*frames, k=3).collect()}
    assert set(rows) == {"u1", "u2", "u3"}
    for user, expected in EXPECTED_AT_3.items():
        for metric, value in expected.items():
            assert rows[user][metric] == pytest.approx(value), (user, metric)


def test_means_over_users_and_a_smaller_k(frames):
    results = ranking_metrics(*frames, ks=[1, 3])
    for metric in EXPECTED_AT_3["u1"]:
        assert results[3][metric] == pytest.approx(sum(EXPECTED_AT_3[u][metric] for u in EXPECTED_AT_3) / 3)
    # at k=1: u1 and u3 hit at rank 1, u2 misses
    assert results[1] == pytest.approx(
        {
            "precision": 2 / 3,
            "recall": (1 / 2 + 0 + 1 / 4) / 3,
            "ndcg": 2 / 3,
            "map": 2 / 3,
            "mrr": 2 / 3,
            "hit_rate": 2 / 3,
        }
    )


def test_users_with_no_recommendations_score_zero(spark, frames):
    recs, _ = frames
    relevant = spark.createDataFrame([("nobody", "a")], "user_id string, item_id string")
    assert ranking_metrics(recs, relevant, ks=[3])[3] == dict.fromkeys(EXPECTED_AT_3["u2"], 0.0)
