"""Top-k scoring on executors: users in blocks against an item matrix, seen items masked.

score = cosine(user, item) + popularity_weight * popularity(user's segment, item)
Items are indexed in item-id order, so "ties broken by item id" is "ties broken by index". The
selection is exact: every item scoring at least the k-th best score is a candidate, and candidates
are ordered by (-score, index), so the same inputs give the same lists whatever the block or shard.

The item matrix reaches a worker once: from a Spark broadcast (classic Spark) or from a file written
by the driver (Spark Connect, Databricks serverless), and is cached per worker by its key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

OUTPUT_COLUMNS = ["user_id", "rank", "item_id", "score", "similarity", "popularity_boost"]


@dataclass
class Catalogue:
    """The items in index order: ids, unit vectors (n, d) float32, popularity (n, segments) or None."""

    item_ids: np.ndarray
    vectors: np.ndarray
    popularity: np.ndarray | None = None
    offset: int = 0  # global index of the first item (a shard's start)


_CACHE: dict[str, Catalogue] = {}
_LOCK = threading.Lock()
LOADS: dict[str, int] = {}


def cached_catalogue(key: str, load: Callable[[], Catalogue]) -> Catalogue:
    """The worker's catalogue for ``key``, loaded on first use only."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load()
            LOADS[key] = LOADS.get(key, 0) + 1
        return _CACHE[key]


def save_catalogue(path: str, catalogue: Catalogue) -> None:
    arrays = {"item_ids": catalogue.item_ids.astype(str), "vectors": catalogue.vectors}
    if catalogue.popularity is not None:
        arrays["popularity"] = catalogue.popularity
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_catalogue(path: str) -> Catalogue:
    with np.load(path, allow_pickle=False) as data:  # never unpickle
        popularity = data["popularity"] if "popularity" in data.files else None
        return Catalogue(item_ids=data["item_ids"], vectors=data["vectors"], popularity=popularity)


def block_rows(n_items: int, block_mb: float) -> int:
    """Users per block so that the block's score matrices (about 3 of users x items float32) fit."""
    return max(1, int(block_mb * 2**20 // (max(n_items, 1) * 4 * 3)))


def _exact_row(row: np.ndarray, take: int) -> np.ndarray:
    """Local indices of the ``take`` best scores of one row, ordered by (-score, index)."""
    n = len(row)
    threshold = np.partition(row, n - take)[n - take]
    candidates = np.flatnonzero(row >= threshold)
    return candidates[np.lexsort((candidates, -row[candidates]))[:take]]


def top_k(
    users: np.ndarray,
    segments: np.ndarray,
    seen: list[np.ndarray],
    catalogue: Catalogue,
    k: int,
    popularity_weight: float,
    block_mb: float,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per block of users, flat arrays ordered by user row then rank:
    (user rows, global item indices, scores, similarities, boosts).

    ``seen`` holds global item indices per user; ``segments`` the user's segment (-1: none).
    """
    n = len(catalogue.item_ids)
    step = block_rows(n, block_mb)
    use_boost = popularity_weight > 0 and catalogue.popularity is not None
    for start in range(0, len(users), step):
        block = users[start : start + step]
        b = len(block)
        sims = block @ catalogue.vectors.T  # (b, n) float32: BLAS
        boosts = None
        if use_boost:
            seg = segments[start : start + step]
            has = seg >= 0
            boosts = np.zeros_like(sims)
            boosts[has] = popularity_weight * catalogue.popularity[:, seg[has]].T
        # Without a boost the scores are the similarities themselves: seen items are masked in place,
        # which is safe because a masked (seen) item is never chosen, so its similarity is never read.
        scores = sims + boosts if boosts is not None else sims

        local_seen = []
        for s in seen[start : start + step]:
            local = np.unique(s - catalogue.offset)
            local_seen.append(local[(local >= 0) & (local < n)])
        lengths = np.array([len(s) for s in local_seen])
        if lengths.sum():
            scores[np.repeat(np.arange(b), lengths), np.concatenate(local_seen)] = -np.inf
        take = np.minimum(k, n - lengths)

        # Fast path, whole block at once: torch.topk (far cheaper than numpy's argpartition over a
        # block), then the k best per row ordered by (-score, index).
        kk = min(k, n)
        chosen = np.zeros((b, 0), dtype=np.int64)
        if kk > 0:
            chosen = torch.topk(torch.from_numpy(scores), kk, dim=1, sorted=False).indices.numpy()
            values = np.take_along_axis(scores, chosen, axis=1)
            chosen = np.take_along_axis(chosen, np.lexsort((chosen, -values), axis=1), axis=1)
            kth = np.take_along_axis(scores, chosen[:, -1:], axis=1)[:, 0]
            # Rows with a tie at the k-th score, or fewer unseen items than k, take the exact path.
            slow = (take < kk) | (np.count_nonzero(scores >= kth[:, None], axis=1) > kk)
        rows, picks = [], []
        for r in range(b):
            if kk > 0 and not slow[r]:
                picks.append(chosen[r])
            else:
                picks.append(_exact_row(scores[r], int(take[r])) if take[r] > 0 else np.empty(0, np.int64))
            rows.append(np.full(len(picks[-1]), start + r))
        flat_rows = np.concatenate(rows) if rows else np.empty(0, np.int64)
        flat = np.concatenate(picks) if picks else np.empty(0, np.int64)
        local_rows = flat_rows - start
        boost = boosts[local_rows, flat] if boosts is not None else np.zeros(len(flat), np.float32)
        yield (flat_rows, flat + catalogue.offset, scores[local_rows, flat], sims[local_rows, flat], boost)


def recommend_frame(
    batch: pd.DataFrame,
    catalogue: Catalogue,
    k: int,
    popularity_weight: float,
    block_mb: float,
) -> pd.DataFrame:
    """One Arrow batch of users (user_id, vector, segment_id, seen) -> rows of OUTPUT_COLUMNS."""
    if batch.empty:
        return pd.DataFrame(columns=OUTPUT_COLUMNS)
    users = np.stack(batch["vector"].to_numpy()).astype(np.float32)
    segments = pd.to_numeric(batch["segment_id"], errors="coerce").fillna(-1).astype(np.int64).to_numpy()
    seen = [np.asarray(s if s is not None else [], dtype=np.int64) for s in batch["seen"]]
    ids = batch["user_id"].to_numpy()
    parts = {c: [] for c in OUTPUT_COLUMNS}
    for rows, idx, score, sim, boost in top_k(users, segments, seen, catalogue, k, popularity_weight, block_mb):
        parts["user_id"].append(ids[rows])
        parts["rank"].append(_ranks(rows))
        parts["item_id"].append(catalogue.item_ids[idx - catalogue.offset])
        parts["score"].append(score.astype(np.float64))
        parts["similarity"].append(sim.astype(np.float64))
        parts["popularity_boost"].append(boost.astype(np.float64))
    return pd.DataFrame({c: np.concatenate(v) for c, v in parts.items()})[OUTPUT_COLUMNS]


def _ranks(rows: np.ndarray) -> np.ndarray:
    """1, 2, 3... within each run of equal row numbers (rows are grouped, ranks in order)."""
    if len(rows) == 0:
        return np.empty(0, np.int32)
    starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    return (np.arange(len(rows)) - run_start + 1).astype(np.int32)
