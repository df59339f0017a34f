"""Audience scoring on executors: each user of a partition against every request's target vector,
keeping per request only its best users so far (ties to the lower user id)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from segrec.udfs.segments import normalise_rows


@dataclass(frozen=True)
class RequestTargets:
    """The requests as the workers see them: unit target ``vectors`` (requests, dim), each request's
    ``depth`` (users to keep; -1: every user at or above its ``min_score``) and ``min_score`` (NaN: no
    threshold)."""

    vectors: np.ndarray
    depth: np.ndarray
    min_score: np.ndarray


def scores_of(batch: pd.DataFrame, targets: RequestTargets) -> np.ndarray:
    """(users, requests) cosine of each user of ``batch`` (user_id, vector, owned) with each target of
    ``targets``; -inf where the user owns the request (already has a target item) or has no vector."""
    n, dim = len(batch), targets.vectors.shape[1]
    present = batch["vector"].notna().to_numpy()
    users = np.zeros((n, dim), dtype=np.float32)
    if present.any():
        users[present] = np.stack(batch["vector"][present].to_numpy()).astype(np.float32)
    scores = normalise_rows(users) @ normalise_rows(targets.vectors).T
    scores[~present] = -np.inf
    for row, owned in enumerate(batch["owned"]):
        if owned is not None and len(owned):
            scores[row, np.asarray(owned, dtype=np.int64)] = -np.inf
    return scores


def best_users(batches: Iterable[pd.DataFrame], targets: RequestTargets) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per request of ``targets``, (user ids, scores) of the best users over every batch of ``batches``
    (user_id, vector, owned): at most its depth, best first, ties to the lower user id; or, for a
    request with depth -1, every user at or above its min_score. A user is never kept below a request's
    min_score, nor for a request they own."""
    requests = len(targets.depth)
    kept_ids: list[np.ndarray] = [np.array([], dtype=object)] * requests
    kept_scores: list[np.ndarray] = [np.array([], dtype=np.float64)] * requests
    for batch in batches:
        if batch.empty:
            continue
        scores = scores_of(batch, targets)
        ids = batch["user_id"].to_numpy(dtype=object)
        for r in range(requests):
            column = scores[:, r].astype(np.float64)
            eligible = np.isfinite(column)
            if not np.isnan(targets.min_score[r]):
                eligible &= column >= targets.min_score[r]
            depth = int(targets.depth[r])
            if depth >= 0 and len(kept_scores[r]) >= depth and depth > 0:
                eligible &= column >= kept_scores[r][-1]  # below the current last place: cannot enter
            if depth == 0 or not eligible.any():
                continue
            merged_ids = np.concatenate([kept_ids[r], ids[eligible]])
            merged_scores = np.concatenate([kept_scores[r], column[eligible]])
            order = np.lexsort((merged_ids.astype(str), -merged_scores))
            if depth > 0:
                order = order[:depth]
            kept_ids[r], kept_scores[r] = merged_ids[order], merged_scores[order]
    return list(zip(kept_ids, kept_scores, strict=True))
