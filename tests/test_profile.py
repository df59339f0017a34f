"""User vectors: rating weights, one-sided users, no_signal, mixing and recency, on hand-made vectors."""

import numpy as np
import pytest

from segrec.jobs.config import Profile
from segrec.jobs.stages import profile
from segrec.jobs.vectors import text_profiles

E = np.eye(4, dtype=np.float32).tolist()  # orthogonal unit vectors e0..e3
TS = "2026-01-10 00:00:00"


@pytest.fixture(scope="module")
def frames(spark):
    item_vectors = spark.createDataFrame([("A", E[0]), ("B", E[1]), ("C", E[2])], "item_id string, vector array<float>")
    text_vectors = spark.createDataFrame(
        [("text_only", "profile", None, E[3]), ("mixed", "profile", None, E[3])],
        "user_id string, kind string, item_id string, vector array<float>",
    )
    users = spark.createDataFrame(
        [("rater", None), ("text_only", "bio"), ("mixed", "bio"), ("silent", None)], "user_id string, text string"
    )
    interactions = spark.sql(
        """SELECT * FROM VALUES
           ('rater', 'A', 5.0, TIMESTAMP'2026-01-01 00:00:00'),
           ('rater', 'B', 1.0, TIMESTAMP'2026-01-01 00:00:00'),
           ('mixed', 'A', 4.0, TIMESTAMP'2026-01-01 00:00:00'),
           ('recent', 'A', NULL, TIMESTAMP'2026-01-01 00:00:00'),
           ('recent', 'B', NULL, TIMESTAMP'2026-01-10 00:00:00'),
           ('equal', 'A', 3.0, TIMESTAMP'2026-01-01 00:00:00'),
           ('equal', 'C', 3.0, TIMESTAMP'2026-01-01 00:00:00')
           AS t(user_id, item_id, rating, timestamp)"""
    )
    return users, interactions, item_vectors, text_vectors


def vectors(frames, **settings):
    rows = text_profiles.user_vectors(*frames, Profile(**settings)).collect()
    return {r.user_id: (None if r.vector is None else np.array(r.vector)) for r in rows}, rows


def test_a_five_outweighs_a_one(frames):
    got, _ = vectors(frames)
    # mean 3, largest deviation 2: weights 1 + 2/2 = 2 for the 5 and 1 - 2/2 = 0 for the 1
    np.testing.assert_allclose(got["rater"], E[0], atol=1e-6)


def test_weights_scale_between_zero_and_two(spark):
    events = spark.createDataFrame(
        [("u", "a", 5.0), ("u", "b", 4.0), ("u", "c", 2.0), ("v", "a", None)],
        "user_id string, item_id string, rating double",
    ).withColumn("timestamp", text_profiles.F.lit(None).cast("timestamp"))
    weights = {(r.user_id, r.item_id): r.weight for r in text_profiles.interaction_weights(events, Profile()).collect()}
    # mean 11/3; deviations 4/3, 1/3, -5/3; largest 5/3
    assert weights[("u", "a")] == pytest.approx(1 + 0.8)
    assert weights[("u", "b")] == pytest.approx(1 + 0.2)
    assert weights[("u", "c")] == pytest.approx(0.0)
    assert weights[("v", "a")] == 1.0


def test_equal_ratings_fall_back_to_equal_weights(frames):
    got, _ = vectors(frames)
    np.testing.assert_allclose(got["equal"], np.array(E[0]) / 2**0.5 + np.array(E[2]) / 2**0.5, atol=1e-6)


def test_one_sided_users_use_their_side_and_silent_users_have_no_vector(frames):
    got, rows = vectors(frames)
    np.testing.assert_allclose(got["text_only"], E[3], atol=1e-6)
    assert got["silent"] is None
    counts = {r.user_id: (r.n_items, r.n_texts) for r in rows}
    assert counts["text_only"] == (0, 1) and counts["rater"] == (2, 0) and counts["silent"] == (0, 0)


def test_text_weight_mixes_the_two_sides(frames):
    got, _ = vectors(frames, text_weight=0.3)
    expected = 0.3 * np.array(E[3]) + 0.7 * np.array(E[0])
    np.testing.assert_allclose(got["mixed"], expected / np.linalg.norm(expected), atol=1e-6)
    only_items, _ = vectors(frames, text_weight=0.0)
    np.testing.assert_allclose(only_items["mixed"], E[0], atol=1e-6)


def test_recency_half_life_favours_recent_items(frames):
    flat, _ = vectors(frames)
    np.testing.assert_allclose(flat["recent"] @ E[0], flat["recent"] @ E[1], atol=1e-6)
    decayed, _ = vectors(frames, recency_half_life_days=3.0)
    ratio = (decayed["recent"] @ E[0]) / (decayed["recent"] @ E[1])
    np.testing.assert_allclose(ratio, 0.5**3, rtol=1e-4)  # 9 days older = 3 half-lives


def test_no_signal_rows_for_rejects(frames, spark):
    _, rows = vectors(frames)
    df = spark.createDataFrame(rows)
    rejects = profile.no_signal_rejects(df).collect()
    assert [(r.source, r.id, r.reason) for r in rejects] == [("users", "silent", "no_signal")]


def test_implicit_counts_weigh_log1p_or_one(spark):
    events = spark.createDataFrame(
        [("u", "a", 0.0), ("u", "b", 9.0), ("u", "c", None), ("v", "a", 1e308), ("v", "b", 1e308)],
        "user_id string, item_id string, rating double",
    ).withColumn("timestamp", text_profiles.F.lit(None).cast("timestamp"))
    implicit = {
        (r.user_id, r.item_id): r.weight
        for r in text_profiles.interaction_weights(events, Profile(), "implicit", "log1p").collect()
    }
    assert implicit[("u", "a")] == 0.0 and implicit[("u", "b")] == pytest.approx(np.log(10.0))
    assert implicit[("u", "c")] == 1.0  # no count: the interaction itself counts once
    binary = {r.weight for r in text_profiles.interaction_weights(events, Profile(), "implicit", "binary").collect()}
    assert binary == {1.0}
    # explicit ratings whose mean overflows: every weight stays finite (1) instead of NaN
    explicit = {
        (r.user_id, r.item_id): r.weight for r in text_profiles.interaction_weights(events, Profile()).collect()
    }
    assert explicit[("v", "a")] == 1.0 and explicit[("v", "b")] == 1.0
