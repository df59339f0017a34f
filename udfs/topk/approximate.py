"""Approximate top-k: an inverted-file index (faiss IVF-Flat, inner product) finds each user's candidates
among the items of the lists nearest to it, and the exact pass scores them.

The index is trained once per catalogue on the driver (``build_index``), travels with the catalogue as
its serialized bytes (in the broadcast, or in the catalogue file on Spark Connect), and is searched in
the scoring worker in ``probes`` lists per user. Seen items are removed after the search, so a user is
searched for its candidates plus its seen items; a user whose probed lists hold too few unseen items is
searched again in twice the lists, up to all of them. Scores are the exact pass's (float64 cosine + boost)
and ties are broken by item index, as in the exact selection: an approximate list differs from the exact
one only by items its probed lists did not hold. The probe count is chosen on the driver from a sample
of users (``recall_at_k``: the share of the exact lists' items the approximate lists keep).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from segrec.udfs.topk.catalogue import Catalogue, IvfIndex, SeenItems, _cached
from segrec.udfs.topk.exact import candidate_count, exact_scores

if TYPE_CHECKING:
    from segrec.udfs.topk.settings import TopKSettings

# faiss warns below 39 training points per list; 64 per list (sampled) keeps training time bounded on a
# large catalogue while every list gets enough points to place its centroid.
TRAINING_POINTS_PER_LIST = 64
USERS_PER_SEARCH = 4096  # users searched in one faiss call (their candidate lists stay small beside the index)


def default_lists(n_items: int) -> int:
    """Lists for a catalogue of ``n_items``: about 4 sqrt(n) (faiss's guideline is 4 to 16 sqrt(n)), and
    at most n / 39 so that every list has the training points faiss asks for."""
    return max(1, min(round(4 * math.sqrt(n_items)), n_items // 39))


def build_index(vectors: np.ndarray, lists: int | None = None, seed: int = 0) -> IvfIndex:
    """An IVF-Flat inner-product index of ``vectors`` (n, d) float32 unit rows, ids = their positions,
    with ``lists`` lists (None: ``default_lists``), its k-means trained on at most
    TRAINING_POINTS_PER_LIST points per list drawn with ``seed``; ``probes`` starts at 1."""
    import faiss

    n, dim = vectors.shape
    lists = default_lists(n) if lists is None else max(1, min(lists, n))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    points = np.ascontiguousarray(vectors, dtype=np.float32)
    if n > TRAINING_POINTS_PER_LIST * lists:
        drawn = np.sort(np.random.default_rng(seed).choice(n, TRAINING_POINTS_PER_LIST * lists, replace=False))
        index.train(points[drawn])
    else:
        index.train(points)
    index.add(points)
    return IvfIndex(data=faiss.serialize_index(index), lists=lists, probes=1)


def ivf_top_k(
    users: np.ndarray, segments: np.ndarray, seen: SeenItems, catalogue: Catalogue, settings: TopKSettings
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``exact.top_k``'s output from the catalogue's IVF index (``catalogue.ivf``): per block of users,
    flat (user rows, global item indices, scores, similarities, boosts) ordered by user row then rank,
    the best ``settings.depth`` unseen items of each user among those its probed lists hold, for the unit
    vectors ``users`` (p, d), their ``segments`` (p,) (-1: none) and ``seen`` items (catalogue positions),
    as ``top_k`` takes them. The search runs on the CPU with the task's cores, the exact pass on
    ``settings.device``."""
    import faiss

    from segrec.udfs.device import current_slot

    if catalogue.ivf is None:
        raise ValueError("ivf_top_k needs a catalogue with an IVF index (build_index)")
    index = _cached(catalogue, "ivf", lambda: _load_index(catalogue))
    faiss.omp_set_num_threads(current_slot().cpus)
    for start in range(0, len(users), USERS_PER_SEARCH):
        block = np.ascontiguousarray(users[start : start + USERS_PER_SEARCH], dtype=np.float32)
        seen_rows, seen_items = seen.block(start, start + len(block))
        picked = _search_block(
            index, block, segments[start : start + len(block)], seen_rows, seen_items, catalogue, settings
        )
        rows, positions, sims, boosts = picked
        yield rows + start, positions + catalogue.offset, sims + boosts, sims, boosts


def _load_index(catalogue: Catalogue):
    """The catalogue's faiss index, deserialized; its serialized bytes are then dropped from this process's
    catalogue (the index holds its own copy of the vectors, so keeping both would cost a third copy)."""
    import faiss

    assert catalogue.ivf is not None
    index = faiss.deserialize_index(catalogue.ivf.data)
    catalogue.ivf = replace(catalogue.ivf, data=np.empty(0, np.uint8))
    return index


def _search_block(
    index,
    users: np.ndarray,
    segments: np.ndarray,
    seen_rows: np.ndarray,
    seen_items: np.ndarray,
    catalogue: Catalogue,
    settings: TopKSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One block's (rows, positions, similarities, boosts), by row then rank. A row is searched for
    ``candidate_count(depth)`` + its seen items; rows whose probed lists held fewer unseen items than
    they keep are searched again in twice the lists (at most all: then every unseen item is reachable)."""
    import faiss

    assert catalogue.ivf is not None
    n, depth = len(catalogue.item_ids), settings.depth
    seen_count = np.bincount(seen_rows, minlength=len(users))
    take = np.minimum(depth, n - seen_count)
    wanted = np.minimum(n, candidate_count(depth, n) + seen_count)
    seen_keys = seen_rows * n + seen_items  # sorted: SeenItems orders pairs by (row, position)
    found: list[tuple[np.ndarray, ...]] = []
    pending, probes = np.flatnonzero(take > 0), min(catalogue.ivf.probes, catalogue.ivf.lists)
    while len(pending):
        params = faiss.SearchParametersIVF()
        params.nprobe = probes
        short = []
        # Rows searched together share a depth: the next power of two of what each wants, so a few
        # heavy users do not widen every row's search.
        widths = 2 ** np.ceil(np.log2(np.maximum(wanted[pending], 1))).astype(np.int64)
        for width in np.unique(widths):
            rows = pending[widths == width]
            _, labels = index.search(users[rows], int(min(width, n)), params=params)
            keys = rows[:, None] * n + labels
            at = np.minimum(np.searchsorted(seen_keys, keys), max(len(seen_keys) - 1, 0))
            hidden = (labels < 0) | ((seen_keys[at] == keys) if len(seen_keys) else False)
            enough = (~hidden).sum(axis=1) >= take[rows]
            if probes < catalogue.ivf.lists:
                short.append(rows[~enough])
                rows, labels, hidden = rows[enough], labels[enough], hidden[enough]
            if len(rows):
                found.append(_score(users, segments, rows, labels, hidden, take, catalogue, settings))
        pending = np.concatenate(short) if short else np.empty(0, np.int64)
        probes = min(catalogue.ivf.lists, probes * 2)
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0)
    rows, positions, sims, boosts = (np.concatenate([f[j] for f in found]) for j in range(4))
    order = np.argsort(rows, kind="stable")  # each row is scored once, its items already in rank order
    return rows[order], positions[order], sims[order], boosts[order]


def _score(
    users: np.ndarray,
    segments: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray,
    hidden: np.ndarray,
    take: np.ndarray,
    catalogue: Catalogue,
    settings: TopKSettings,
) -> tuple[np.ndarray, ...]:
    """The best ``take`` of each of ``rows`` among its search results ``labels`` (positions; ``hidden``:
    seen or empty), scored exactly and ordered by (-score, position): flat (rows, positions, sims, boosts)."""
    candidates = np.where(hidden, 0, labels)
    sims, boosts = exact_scores(
        users[rows], candidates, segments[rows], catalogue, settings.device, settings.popularity_weight
    )
    exact = np.where(hidden, -np.inf, sims + boosts)
    order = np.lexsort((candidates, -exact), axis=1)
    candidates, sims, boosts = (np.take_along_axis(a, order, axis=1) for a in (candidates, sims, boosts))
    keep = np.arange(candidates.shape[1]) < take[rows][:, None]
    return np.broadcast_to(rows[:, None], keep.shape)[keep], candidates[keep], sims[keep], boosts[keep]


def recall_at_k(approximate: dict[str, np.ndarray], exact: dict[str, np.ndarray]) -> float:
    """The mean, over users with a non-empty exact list, of the share of its items the approximate list
    also holds; lists as columns (user_id, item_id) of RECOMMENDATIONS. 1.0 when no user has a list."""
    truth = {(u, i) for u, i in zip(exact["user_id"], exact["item_id"], strict=True)}
    if not truth:
        return 1.0
    sizes: dict[object, int] = {}
    for user in exact["user_id"]:
        sizes[user] = sizes.get(user, 0) + 1
    hits = dict.fromkeys(sizes, 0)
    for user, item in zip(approximate["user_id"], approximate["item_id"], strict=True):
        if (user, item) in truth:
            hits[user] += 1
    return float(np.mean([hits[u] / sizes[u] for u in sizes]))
