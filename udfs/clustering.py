"""Segment reproducibility on executors: refits on bootstrap samples, each reference segment's Jaccard
stability (Hennig 2007, R ``fpc::clusterboot``), and the cosine silhouette.

Everything here takes numpy arrays and gives numpy arrays back, so it runs inside a Spark task (one
task per candidate k) and is unit-tested without Spark. The reference segments come from the driver's
MLlib fit (cosine); each refit runs the algorithm that shipped (``REFITS``: spherical k-means for
``kmeans``, spherical bisecting k-means for ``bisecting``), optimising the same objective (cosine to unit
centres), so a segment that comes back in the refits is one MLlib would find again on other users.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from segrec.udfs.config_keys import from_config
from segrec.udfs.segments import normalise_rows


@dataclass(frozen=True)
class StabilitySettings:
    """How each candidate cut is scored: ``bootstrap`` refits with the ``algorithm`` that fitted it, each
    seeded from ``seed`` and stopped after ``max_iter`` iterations or when no centre moves more than
    ``tol`` (cosine)."""

    algorithm: str = from_config("segment.algorithm")
    bootstrap: int = from_config("segment.bootstrap")
    seed: int = from_config("segment.seed")
    max_iter: int = from_config("segment.max_iter")
    tol: float = from_config("segment.tol")


def nearest(vectors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """For unit ``vectors`` (n, d) and unit ``centres`` (k, d): (n,) the index of each vector's most
    similar centre (ties: the lowest index)."""
    return np.argmax(vectors @ centres.T, axis=1)


def _seed_centres(vectors: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with cosine distance: each next centre drawn in proportion to its distance."""
    first = int(rng.integers(len(vectors)))
    centres = [vectors[first]]
    closest = 1.0 - vectors @ vectors[first]
    for _ in range(1, k):
        weights = np.maximum(closest, 0.0)
        total = weights.sum()
        pick = int(rng.choice(len(vectors), p=weights / total)) if total > 0 else int(rng.integers(len(vectors)))
        centres.append(vectors[pick])
        closest = np.minimum(closest, 1.0 - vectors @ vectors[pick])
    return np.stack(centres)


def spherical_kmeans(
    vectors: np.ndarray, k: int, seed: int, max_iter: int, tol: float, restarts: int = 3
) -> np.ndarray:
    """Unit centres (k, d) of a cosine k-means fit of unit ``vectors`` (n, d), n >= k: the best (highest
    total cosine to the centres) of ``restarts`` runs seeded from ``seed``, as MLlib's k-means|| seeding
    is more robust than one k-means++ draw and a poor local optimum would read as instability. Each run
    stops after ``max_iter`` iterations or when no centre moves by more than ``tol`` (cosine)."""
    rng = np.random.default_rng(seed)
    runs = [_lloyd(vectors, _seed_centres(vectors, k, rng), max_iter, tol) for _ in range(max(restarts, 1))]
    fits = [float(np.max(vectors @ centres.T, axis=1).sum()) for centres in runs]
    return runs[int(np.argmax(fits))]  # the first of equal fits, as before


def _lloyd(vectors: np.ndarray, centres: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Lloyd's iterations with the centres re-normalised each step (what MLlib's cosine KMeans does); an
    emptied segment is re-seeded at the vectors worst served by their centres. Stops when no centre
    moves by more than ``tol`` (cosine) or after ``max_iter`` iterations."""
    k = len(centres)
    for _ in range(max_iter):
        sims = vectors @ centres.T
        labels = np.argmax(sims, axis=1)
        sums = segment_sums(vectors, labels, k)
        counts = np.bincount(labels, minlength=k)
        empties = np.flatnonzero(counts == 0)
        if len(empties):
            served = sims[np.arange(len(vectors)), labels]
            sums[empties] = vectors[np.argsort(served, kind="stable")[: len(empties)]]
        updated = normalise_rows(sums)
        moved = 1.0 - np.sum(updated * centres, axis=1)
        centres = updated
        if moved.max() <= tol:
            break
    return centres


def spherical_bisecting(
    vectors: np.ndarray, k: int, seed: int, max_iter: int, tol: float, restarts: int = 3
) -> np.ndarray:
    """Unit centres (k, d) of a bisecting cosine k-means fit of unit ``vectors`` (n, d), n >= k, as MLlib's
    BisectingKMeans divides: from one segment of everyone, each round splits every divisible leaf in two
    (the largest first when fewer splits are needed than leaves can take) until there are ``k`` leaves.
    Each split is ``spherical_kmeans`` with k = 2 (``restarts`` seedings from ``seed``, ``max_iter``, ``tol``)."""
    rng = np.random.default_rng(seed)
    leaves = [np.arange(len(vectors))]
    while len(leaves) < k:
        divisible = sorted((i for i, members in enumerate(leaves) if len(members) > 1), key=lambda i: -len(leaves[i]))
        if not divisible:
            break
        chosen = set(divisible[: k - len(leaves)])
        grown = []
        for i, members in enumerate(leaves):
            if i not in chosen:
                grown.append(members)
                continue
            halves = spherical_kmeans(vectors[members], 2, int(rng.integers(2**31)), max_iter, tol, restarts)
            side = nearest(vectors[members], halves)
            parts = [members[side == 0], members[side == 1]]
            grown.extend(part for part in parts if len(part)) if all(len(p) for p in parts) else grown.append(members)
        if len(grown) == len(leaves):  # no leaf could be split further
            break
        leaves = grown
    return normalise_rows(np.stack([vectors[members].sum(axis=0) for members in leaves]))


# The refit each shipped algorithm is scored with (segment.algorithm -> fit(vectors, k, seed, max_iter, tol)).
REFITS: dict[str, Callable[..., np.ndarray]] = {"kmeans": spherical_kmeans, "bisecting": spherical_bisecting}


def segment_sums(vectors: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(k, d) the sum of the ``vectors`` (n, d) in each of the ``k`` segments that ``labels`` (n,) give, as
    one (k, n) x (n, d) product of the membership matrix (``np.add.at`` adds row by row, unbuffered, and
    took most of each Lloyd iteration of the bootstrap refits)."""
    members = np.zeros((k, len(vectors)), dtype=vectors.dtype)
    members[labels, np.arange(len(vectors))] = 1.0
    return members @ vectors


def jaccard_to_best_match(reference: np.ndarray, other: np.ndarray, k: int, k_other: int) -> np.ndarray:
    """(k,) for each of the ``k`` segments of ``reference``, the Jaccard index of its members with the
    best-matching of the ``k_other`` segments of ``other`` (both (n,) label arrays over the same points);
    NaN for a segment with no member here."""
    table = np.zeros((k, k_other))
    np.add.at(table, (reference, other), 1.0)
    sizes, other_sizes = table.sum(axis=1), table.sum(axis=0)
    union = sizes[:, None] + other_sizes[None, :] - table
    with np.errstate(invalid="ignore", divide="ignore"):
        best = np.max(np.where(union > 0, table / union, 0.0), axis=1)
    return np.where(sizes > 0, best, np.nan)


def bootstrap_stability(
    vectors: np.ndarray, labels: np.ndarray, k: int, settings: StabilitySettings, seed: int
) -> np.ndarray:
    """(k,) the mean Jaccard stability of each of the ``k`` reference segments (``labels`` (n,) over unit
    ``vectors`` (n, d)) over ``settings.bootstrap`` refits drawn from ``seed`` (each refit the
    ``settings.algorithm``'s, with its ``max_iter`` and ``tol``).

    For each bootstrap: draw n vectors with replacement, refit with the same k, place
    the distinct drawn vectors in the refit's segments, and score each reference segment (restricted to
    the drawn vectors) by its Jaccard index with the best-matching refit segment. 1 means it came back
    whole every time; Hennig reads below 0.5 as dissolved, 0.75 and above as stable.
    """
    refit, samples = REFITS[settings.algorithm], settings.bootstrap
    rng = np.random.default_rng(seed)
    scores = np.zeros((samples, k))
    for b in range(samples):
        drawn = rng.integers(0, len(vectors), len(vectors))
        centres = refit(vectors[drawn], k, int(rng.integers(2**31)), settings.max_iter, settings.tol)
        distinct = np.unique(drawn)
        scores[b] = jaccard_to_best_match(labels[distinct], nearest(vectors[distinct], centres), k, k)
    with np.errstate(invalid="ignore"):
        return np.nanmean(scores, axis=0) if samples else np.full(k, np.nan)


def cosine_silhouette(vectors: np.ndarray, labels: np.ndarray, k: int) -> float | None:
    """The cosine silhouette of unit ``vectors`` (n, d) cut into ``k`` segments by ``labels`` (n,), as
    MLlib's ClusteringEvaluator computes it: a point's mean distance to a segment is 1 - x . (sum of the
    segment) / size, so the cost is O(n k d). None when fewer than two segments have members."""
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    if np.count_nonzero(sizes) < 2:
        return None
    sums = np.zeros((k, vectors.shape[1]))
    np.add.at(sums, labels, vectors)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_distance = 1.0 - (vectors @ sums.T) / sizes[None, :]
    rows = np.arange(len(vectors))
    own_size = sizes[labels]
    # a point's own segment holds the point itself: its distance to itself (0) is left out of the mean
    a = np.where(own_size > 1, mean_distance[rows, labels] * own_size / np.maximum(own_size - 1, 1), 0.0)
    others = np.where(sizes[None, :] > 0, mean_distance, np.inf)
    others[rows, labels] = np.inf
    b = others.min(axis=1)
    score = np.where(own_size > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(score.mean())


def stability_word(jaccard: float | None, reproducible: float) -> str:
    """A plain word for a segment's stability ``jaccard`` (Dolnicar & Leisch 2010): natural (>= 0.85,
    comes back nearly whole), reproducible (>= ``reproducible``), constructed (below: one way of cutting
    the users), unknown (None or NaN)."""
    if jaccard is None or np.isnan(jaccard):
        return "unknown"
    if jaccard >= max(0.85, reproducible):
        return "natural"
    return "reproducible" if jaccard >= reproducible else "constructed"


def score_k(
    vectors: np.ndarray, centres: np.ndarray, settings: StabilitySettings
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """For reference unit ``centres`` (k, d) over unit ``vectors`` (n, d): (sizes (k,), Jaccard
    stability (k,) over ``settings``' bootstrap refits, silhouette) of the segments the centres cut. The
    refits are seeded from ``settings.seed`` + k, so each candidate k draws its own samples."""
    k = len(centres)
    labels = nearest(vectors, normalise_rows(centres))
    stability = bootstrap_stability(vectors, labels, k, settings, settings.seed + k)
    return np.bincount(labels, minlength=k), stability, cosine_silhouette(vectors, labels, k)
