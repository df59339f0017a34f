"""Which k does ``segment.k: auto`` ship where no k gives segments that all come back?

Compares the rule in ``jobs.segments.stability.choose_k`` (where no k is wholly reproducible: the k whose
reproducible segments hold the most users) with the earlier one (the k with the most reproducible
segments), on unit vectors with and without planted structure, scored exactly as the segment stage
scores them (``udfs.clustering.score_k``: bootstrap Jaccard of spherical k-means refits). Prints, per
data set, each rule's k, its reproducible segments, the share of users they hold, and how pure they
are (share of their members from one planted group; "-" without planted groups).

    .venv/bin/python benchmarks/segment_k_rule.py
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (puts the repository on sys.path)
import numpy as np

from segrec.jobs.config import Segment
from segrec.jobs.segments.stability import choose_k, stability_point
from segrec.udfs.clustering import StabilitySettings, nearest, score_k, spherical_kmeans
from segrec.udfs.segments import normalise_rows

MIN_STABILITY = 0.75


def previous_rule(curve: dict[int, dict]) -> int:
    """The rule before: the largest wholly reproducible k, else the most reproducible segments."""
    whole = [k for k, c in curve.items() if c["reproducible"] == len(c["stability"])]
    if whole:
        return max(whole)
    return min(curve, key=lambda k: (-curve[k]["reproducible"], -curve[k]["mean_stability"], k))


def planted(rng, n: int, dim: int, groups: list[tuple[float, float]], noise_share: float):
    """Unit vectors: for each (share, spread) a group around a random centre, then ``noise_share`` of
    uniform noise (label -1)."""
    vectors, labels = [], []
    for g, (share, spread) in enumerate(groups):
        m = int(n * share)
        centre = normalise_rows(rng.standard_normal((1, dim)))[0]
        vectors.append(normalise_rows(centre + spread * rng.standard_normal((m, dim))))
        labels += [g] * m
    rest = n - sum(len(v) for v in vectors)
    if rest > 0 and noise_share > 0:
        vectors.append(normalise_rows(rng.standard_normal((rest, dim))))
        labels += [-1] * rest
    return np.vstack(vectors).astype(np.float32), np.array(labels)


def curve_of(vectors: np.ndarray, ks: range, samples: int, seed: int) -> tuple[dict, dict]:
    curve, cuts = {}, {}
    for k in ks:
        segment = Segment()  # the stage's defaults
        centres = spherical_kmeans(vectors, k, seed + k, segment.max_iter, segment.tol)
        refits = StabilitySettings("kmeans", samples, seed, segment.max_iter, segment.tol)
        sizes, stability, silhouette = score_k(vectors, centres, refits)  # refits seeded from seed + k
        jaccard = [None if np.isnan(j) else float(j) for j in stability]
        good = [i for i, j in enumerate(jaccard) if j is not None and j >= MIN_STABILITY]
        curve[k] = stability_point(jaccard, [int(n) for n in sizes], MIN_STABILITY, silhouette)
        cuts[k] = (nearest(vectors, centres), good)
    return curve, cuts


def purity(labels: np.ndarray, truth: np.ndarray, good: list[int]) -> str:
    if (truth < 0).all() or not good:
        return "-"
    members = np.isin(labels, good)
    pure = sum(np.bincount(truth[(labels == g) & (truth >= 0)]).max(initial=0) for g in good)
    return f"{pure / max(members.sum(), 1):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--bootstrap", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sets = {
        "five planted groups": planted(rng, args.users, args.dim, [(0.2, 0.12)] * 5, 0.0),
        "one large group + noise": planted(rng, args.users, args.dim, [(0.5, 0.12)], 0.5),
        "large + 5 small + noise": planted(rng, args.users, args.dim, [(0.45, 0.15)] + [(0.05, 0.08)] * 5, 0.3),
        "three groups + 40% noise": planted(rng, args.users, args.dim, [(0.3, 0.12), (0.2, 0.12), (0.1, 0.12)], 0.4),
        "no structure": planted(rng, args.users, args.dim, [], 1.0),
    }
    print(f"{args.users} unit vectors of {args.dim} dims, k 4..12, {args.bootstrap} bootstrap refits per k")
    print(f"{'data':<26} {'rule':<9} {'k':>3} {'reproducible':>12} {'users in them':>14} {'purity':>7}")
    for name, (vectors, truth) in sets.items():
        curve, cuts = curve_of(vectors, range(4, 13), args.bootstrap, args.seed)
        for rule, k in (("previous", previous_rule(curve)), ("shipped", choose_k(curve))):
            labels, good = cuts[k]
            point = curve[k]
            print(
                f"{name:<26} {rule:<9} {k:>3} {point['reproducible']:>8} / {k:<3} "
                f"{point['reproducible_share']:>13.0%} {purity(labels, truth, good):>7}"
            )


if __name__ == "__main__":
    main()
