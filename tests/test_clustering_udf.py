"""Bootstrap stability and the silhouette on executors: planted groups come back, arbitrary cuts do not."""

import numpy as np
import pytest

from segrec.udfs.clustering import (
    REFITS,
    StabilitySettings,
    bootstrap_stability,
    cosine_silhouette,
    jaccard_to_best_match,
    nearest,
    score_k,
    segment_sums,
    spherical_bisecting,
    spherical_kmeans,
    stability_word,
)
from segrec.udfs.segments import normalise_rows


def refits(samples: int, seed: int, algorithm: str = "kmeans") -> StabilitySettings:
    return StabilitySettings(algorithm=algorithm, bootstrap=samples, seed=seed, max_iter=40, tol=1e-4)


@pytest.fixture(scope="module")
def planted():
    """Five well-separated groups of 120 unit vectors in 32 dimensions."""
    rng = np.random.default_rng(0)
    centres = normalise_rows(rng.normal(size=(5, 32)))
    vectors = normalise_rows(np.repeat(centres, 120, axis=0) + 0.2 * rng.normal(size=(600, 32)))
    return vectors, np.repeat(np.arange(5), 120)


def test_spherical_kmeans_finds_planted_groups_with_unit_centres(planted):
    vectors, truth = planted
    centres = spherical_kmeans(vectors, 5, 1, 40, 1e-4)
    assert np.allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-5)
    labels = nearest(vectors, centres)
    # every planted group lands whole in one segment, each in its own
    assert all(len(set(labels[truth == g])) == 1 for g in range(5)) and len(set(labels)) == 5


def test_a_planted_k_is_stable_and_a_split_group_is_not(planted):
    vectors, _ = planted
    _, at_planted, silhouette_planted = score_k(vectors, spherical_kmeans(vectors, 5, 1, 40, 1e-4), refits(10, 2))
    _, too_many, silhouette_more = score_k(vectors, spherical_kmeans(vectors, 8, 1, 40, 1e-4), refits(10, 2))
    assert at_planted.min() >= 0.95
    assert too_many.min() < 0.75  # at least one planted group cut arbitrarily in two
    assert silhouette_planted > silhouette_more


def test_segment_sums_add_each_segments_rows_and_leave_an_empty_one_zero():
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((50, 7)).astype(np.float32)
    labels = rng.integers(0, 3, 50)  # segment 3 of 4 gets no row
    expected = np.zeros((4, 7))
    np.add.at(expected, labels, vectors.astype(np.float64))
    sums = segment_sums(vectors, labels, 4)
    assert sums.shape == (4, 7) and sums.dtype == np.float32
    np.testing.assert_allclose(sums, expected, rtol=1e-5, atol=1e-5)
    assert not sums[3].any()


def test_jaccard_to_best_match_on_a_known_table():
    reference = np.array([0, 0, 0, 0, 1, 1, 2])
    other = np.array([1, 1, 1, 0, 0, 0, 0])
    # segment 0: {0..3} vs best {0,1,2} -> 3/4; segment 1: {4,5} vs {3,4,5,6} -> 2/4; segment 2: {6} -> 1/4
    assert jaccard_to_best_match(reference, other, 3, 2).tolist() == [0.75, 0.5, 0.25]
    assert np.isnan(jaccard_to_best_match(np.array([0, 0]), np.array([0, 1]), 2, 2)[1])  # segment 1 is empty here


def test_bootstrap_stability_is_seeded_and_needs_samples(planted):
    vectors, truth = planted
    first = bootstrap_stability(vectors, truth, 5, refits(3, 0), seed=9)
    assert np.array_equal(first, bootstrap_stability(vectors, truth, 5, refits(3, 0), seed=9))
    assert np.isnan(bootstrap_stability(vectors, truth, 5, refits(0, 0), seed=9)).all()


@pytest.fixture(scope="module")
def nested():
    """Two broad groups far apart, each of three tight groups: 6 leaves of 80 unit vectors in 32 dimensions."""
    rng = np.random.default_rng(4)
    broad = normalise_rows(rng.normal(size=(2, 32)))
    leaves = normalise_rows(np.repeat(broad, 3, axis=0) + 0.5 * rng.normal(size=(6, 32)))
    vectors = normalise_rows(np.repeat(leaves, 80, axis=0) + 0.08 * rng.normal(size=(480, 32)))
    return vectors, np.repeat(np.arange(6), 80)


def test_bisecting_refits_divide_until_k_leaves_and_find_planted_groups(nested):
    vectors, truth = nested
    two = spherical_bisecting(vectors, 2, 1, 40, 1e-4)
    assert two.shape == (2, 32) and np.allclose(np.linalg.norm(two, axis=1), 1.0, atol=1e-5)
    halves = nearest(vectors, two)
    assert all(len(set(halves[truth == g])) == 1 for g in range(6))  # the first cut keeps every leaf whole
    assert sorted(np.bincount(halves).tolist()) == [240, 240]  # ... and separates the broad groups
    labels = nearest(vectors, spherical_bisecting(vectors, 6, 1, 40, 1e-4))
    assert all(len(set(labels[truth == g])) == 1 for g in range(6)) and len(set(labels)) == 6
    assert spherical_bisecting(vectors[:3], 5, 1, 40, 1e-4).shape == (3, 32)  # no more leaves than points


def test_stability_refits_the_algorithm_that_shipped(nested, monkeypatch):
    vectors, truth = nested
    called = []
    for name, fit in list(REFITS.items()):
        monkeypatch.setitem(REFITS, name, lambda *a, _n=name, _f=fit: called.append(_n) or _f(*a))
    bisected = bootstrap_stability(vectors, truth, 6, refits(2, 0, "bisecting"), seed=3)
    assert called == ["bisecting", "bisecting"] and bisected.min() >= 0.95
    called.clear()
    bootstrap_stability(vectors, truth, 6, refits(1, 0, "kmeans"), seed=3)
    assert called == ["kmeans"]


def test_cosine_silhouette_matches_the_pairwise_definition():
    rng = np.random.default_rng(3)
    vectors = normalise_rows(rng.normal(size=(60, 8)))
    labels = rng.integers(0, 3, 60)
    distance = 1.0 - vectors @ vectors.T
    scores = []
    for i in range(60):
        own = labels == labels[i]
        a = distance[i, own].sum() / (own.sum() - 1)
        b = min(distance[i, labels == j].mean() for j in range(3) if j != labels[i])
        scores.append((b - a) / max(a, b))
    assert cosine_silhouette(vectors, labels, 3) == pytest.approx(np.mean(scores), abs=1e-5)
    assert cosine_silhouette(vectors, np.zeros(60, dtype=int), 3) is None  # one segment: undefined


@pytest.mark.parametrize(
    "jaccard, word",
    [
        (0.9, "natural"),
        (0.85, "natural"),
        (0.8, "reproducible"),
        (0.75, "reproducible"),
        (0.74, "constructed"),
        (None, "unknown"),
        (float("nan"), "unknown"),
    ],
)
def test_stability_words(jaccard, word):
    assert stability_word(jaccard, 0.75) == word
