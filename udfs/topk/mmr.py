"""Maximal-marginal-relevance re-ranking of each user's best candidates (``recommend.mmr_trade_off``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from segrec.udfs.schemas import RECOMMENDATION_COLUMNS


def mmr_order(relevance: np.ndarray, vectors: np.ndarray, k: int, trade_off: float) -> np.ndarray:
    """Positions of at most k candidates, given their ``relevance`` (m,) and unit ``vectors`` (m, d), in
    maximal-marginal-relevance order.

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
    """One user's candidate rows ``frame`` (RECOMMENDATIONS columns), in rank order, with their item
    ``vectors`` (m, d) in the same order -> their k rows in MMR order (:func:`mmr_order` at ``trade_off``),
    ranks renumbered."""
    order = mmr_order(frame["score"].to_numpy(np.float64), vectors, k, trade_off)
    picked = frame.iloc[order].copy()
    picked["rank"] = np.arange(1, len(picked) + 1, dtype=np.int32)
    return picked[[c for c in RECOMMENDATION_COLUMNS if c in picked.columns]]
