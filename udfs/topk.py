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
from dataclasses import dataclass, field

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
    # Per-device tensor copies, made on first use inside a worker (see catalogue_tensors).
    tensors: dict = field(default_factory=dict, repr=False, compare=False)


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


def catalogue_tensors(catalogue: Catalogue, device: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The catalogue's vectors (n, d) and popularity (n, segments) as tensors on ``device``.

    Copied to a GPU once per worker and catalogue (kept on the catalogue object, which the worker
    caches); on the CPU they share the numpy arrays' memory.
    """
    if device not in catalogue.tensors:
        vectors = torch.from_numpy(catalogue.vectors).to(device)
        popularity = torch.from_numpy(catalogue.popularity).to(device) if catalogue.popularity is not None else None
        catalogue.tensors[device] = (vectors, popularity)
    return catalogue.tensors[device]


def block_scores(block: np.ndarray, catalogue: Catalogue, device: str) -> torch.Tensor:
    """(b, n) float32 cosine scores of a block of users against every item, on ``device``."""
    if device == "cpu":
        # numpy's BLAS measured faster than torch's CPU matmul on the same arrays (benchmarks/topk.py).
        return torch.from_numpy(block @ catalogue.vectors.T)
    vectors, _ = catalogue_tensors(catalogue, device)
    return torch.from_numpy(block).to(device) @ vectors.T  # fp32 (TF32 matmul is off by default in torch)


def top_k(
    users: np.ndarray,
    segments: np.ndarray,
    seen: list[np.ndarray],
    catalogue: Catalogue,
    k: int,
    popularity_weight: float,
    block_mb: float,
    device: str = "cpu",
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per block of users, flat arrays ordered by user row then rank:
    (user rows, global item indices, scores, similarities, boosts).

    ``seen`` holds global item indices per user; ``segments`` the user's segment (-1: none). Scores,
    masking and the top-k selection run on ``device`` (a CUDA device, or "cpu"); only the k winners per
    user (and the rows with a tie at the k-th score) come back to host memory.
    """
    n = len(catalogue.item_ids)
    step = block_rows(n, block_mb)
    use_boost = popularity_weight > 0 and catalogue.popularity is not None
    for start in range(0, len(users), step):
        block = users[start : start + step]
        b = len(block)
        sims = block_scores(block, catalogue, device)
        boosts = None
        if use_boost:
            _, popularity = catalogue_tensors(catalogue, device)
            seg = torch.from_numpy(segments[start : start + step]).to(device)
            has = seg >= 0
            boosts = torch.zeros_like(sims)
            boosts[has] = popularity_weight * popularity[:, seg[has]].T
        # Without a boost the scores are the similarities themselves: seen items are masked in place,
        # which is safe because a masked (seen) item is never chosen, so its similarity is never read.
        scores = sims + boosts if boosts is not None else sims

        local_seen = []
        for s in seen[start : start + step]:
            local = np.unique(s - catalogue.offset)
            local_seen.append(local[(local >= 0) & (local < n)])
        lengths = np.array([len(s) for s in local_seen])
        if lengths.sum():
            rows_t = torch.from_numpy(np.repeat(np.arange(b), lengths)).to(device)
            scores[rows_t, torch.from_numpy(np.concatenate(local_seen)).to(device)] = -np.inf
        take = np.minimum(k, n - lengths)

        # Fast path, whole block at once: torch.topk of k + 1, then the k best per row ordered by
        # (-score, index). A row whose (k+1)-th score equals its k-th has a tie at the cut (which of
        # the tied items make the list is decided by id), and a row with fewer unseen items than k
        # cannot fill its list: both take the exact path. (Comparing the k+1-th value replaces a
        # count of scores >= the k-th over the whole row, which cost more than the top-k itself.)
        kk = min(k, n)
        if kk > 0:
            values, chosen = torch.topk(scores, min(kk + 1, n), dim=1, sorted=True)
            values, chosen = values.cpu().numpy(), chosen.cpu().numpy()
            tie = values[:, kk] == values[:, kk - 1] if values.shape[1] > kk else np.zeros(b, dtype=bool)
            values, chosen = values[:, :kk], chosen[:, :kk]
            chosen = np.take_along_axis(chosen, np.lexsort((chosen, -values), axis=1), axis=1)
            slow = (take < kk) | tie
        rows, picks = [], []
        for r in range(b):
            if kk > 0 and not slow[r]:
                picks.append(chosen[r])
            else:
                picks.append(_exact_row(scores[r].cpu().numpy(), int(take[r])) if take[r] > 0 else np.empty(0, np.int64))
            rows.append(np.full(len(picks[-1]), start + r))
        flat_rows = np.concatenate(rows) if rows else np.empty(0, np.int64)
        flat = np.concatenate(picks) if picks else np.empty(0, np.int64)
        at = (torch.from_numpy(flat_rows - start).to(device), torch.from_numpy(flat).to(device))
        boost = boosts[at].cpu().numpy() if boosts is not None else np.zeros(len(flat), np.float32)
        yield (flat_rows, flat + catalogue.offset, scores[at].cpu().numpy(), sims[at].cpu().numpy(), boost)


def candidate_depth(k: int, mmr: tuple[float, int] | None) -> int:
    """How many best items per user to select: k, or the MMR pool when re-ranking."""
    return max(k, mmr[1]) if mmr else k


def mmr_order(relevance: np.ndarray, vectors: np.ndarray, k: int, trade_off: float) -> np.ndarray:
    """Positions of at most k candidates in maximal-marginal-relevance order.

    Candidates come ordered by (-relevance, item id). Each step takes the candidate with the highest
    trade_off * relevance - (1 - trade_off) * (its largest cosine to those already taken); the first
    candidate in that order wins a tie, so the result is deterministic. trade_off 1 keeps the order.
    """
    n = len(relevance)
    similarity = vectors @ vectors.T
    closest = np.zeros(n)  # largest similarity to a taken candidate (none taken yet: no penalty)
    open_ = np.ones(n, dtype=bool)
    order = []
    for step in range(min(k, n)):
        value = trade_off * relevance - (1.0 - trade_off) * closest
        value[~open_] = -np.inf
        pick = int(np.argmax(value))
        order.append(pick)
        open_[pick] = False
        closest = similarity[pick] if step == 0 else np.maximum(closest, similarity[pick])
    return np.asarray(order, dtype=np.int64)


def rerank_mmr(frame: pd.DataFrame, vectors: np.ndarray, k: int, trade_off: float) -> pd.DataFrame:
    """One user's candidate rows, in rank order, with their item vectors in the same order -> their
    k rows in MMR order, ranks renumbered."""
    order = mmr_order(frame["score"].to_numpy(np.float64), vectors, k, trade_off)
    picked = frame.iloc[order].copy()
    picked["rank"] = np.arange(1, len(picked) + 1, dtype=np.int32)
    return picked[OUTPUT_COLUMNS]


def recommend_frame(
    batch: pd.DataFrame,
    catalogue: Catalogue,
    k: int,
    popularity_weight: float,
    block_mb: float,
    device: str = "cpu",
    mmr: tuple[float, int] | None = None,
) -> pd.DataFrame:
    """One Arrow batch of users (user_id, vector, segment_id, seen) -> rows of OUTPUT_COLUMNS.

    ``mmr`` (trade-off, pool): the best ``pool`` items per user are re-ranked by MMR and k kept.
    """
    if batch.empty:
        return pd.DataFrame(columns=OUTPUT_COLUMNS)
    users = np.stack(batch["vector"].to_numpy()).astype(np.float32)
    segments = pd.to_numeric(batch["segment_id"], errors="coerce").fillna(-1).astype(np.int64).to_numpy()
    seen = [np.asarray(s if s is not None else [], dtype=np.int64) for s in batch["seen"]]
    ids = batch["user_id"].to_numpy()
    depth = candidate_depth(k, mmr)
    parts = {c: [] for c in OUTPUT_COLUMNS}
    local_index = []
    for rows, idx, score, sim, boost in top_k(users, segments, seen, catalogue, depth, popularity_weight, block_mb, device):
        parts["user_id"].append(ids[rows])
        parts["rank"].append(_ranks(rows))
        parts["item_id"].append(catalogue.item_ids[idx - catalogue.offset])
        parts["score"].append(score.astype(np.float64))
        parts["similarity"].append(sim.astype(np.float64))
        parts["popularity_boost"].append(boost.astype(np.float64))
        local_index.append(idx - catalogue.offset)
    frame = pd.DataFrame({c: np.concatenate(v) for c, v in parts.items()})[OUTPUT_COLUMNS]
    if not mmr:
        return frame
    local = np.concatenate(local_index)
    lists = [rerank_mmr(group, catalogue.vectors[local[group.index]], k, mmr[0])
             for _, group in frame.groupby("user_id", sort=False)]
    return pd.concat(lists, ignore_index=True) if lists else frame


def _ranks(rows: np.ndarray) -> np.ndarray:
    """1, 2, 3... within each run of equal row numbers (rows are grouped, ranks in order)."""
    if len(rows) == 0:
        return np.empty(0, np.int32)
    starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    return (np.arange(len(rows)) - run_start + 1).astype(np.int32)
