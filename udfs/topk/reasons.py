"""Why each item was recommended: the item in the user's history most similar to it."""

from __future__ import annotations

import numpy as np

from segrec.udfs.topk.catalogue import SeenItems


def explain_picks(
    rows: np.ndarray, picks: np.ndarray, seen: SeenItems, vectors: np.ndarray, budget: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """For each recommended (user row, catalogue position) pair of ``rows`` and ``picks``: the position
    among the catalogue's unit ``vectors`` (n, d) of the item in that user's ``seen`` history
    most similar to it (ties: the lower position, i.e. the smaller id) and the cosine between
    them; -1 and NaN for a user with no history in this catalogue.

    Users are taken in order of history length, in blocks whose padded (users x longest history) stays
    under ``budget`` vectors, and each block is one batched matrix product: the cost is about one dot
    product per (recommended item, history item) pair, a small part of scoring the whole catalogue.
    The cost is in gathering the vectors, not in the products: small blocks keep a block's gathered
    vectors in cache until its product reads them (the "explain on / off" line of benchmarks/topk.py).
    """
    because = np.full(len(rows), -1, np.int64)
    similarity = np.full(len(rows), np.nan)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    users = np.unique(sorted_rows)
    h_start = np.searchsorted(seen.rows, users, "left")
    h_len = np.searchsorted(seen.rows, users, "right") - h_start
    r_start = np.searchsorted(sorted_rows, users, "left")
    r_len = np.searchsorted(sorted_rows, users, "right") - r_start
    with_history = np.flatnonzero(h_len > 0)
    by_length = with_history[np.argsort(h_len[with_history], kind="stable")]
    h_sorted, r_sorted = h_len[by_length], r_len[by_length]
    at = 0
    while at < len(by_length):
        block = by_length[at : _block_end(h_sorted, r_sorted, at, budget)]
        at += len(block)
        h_max, r_max = int(h_len[block].max()), int(r_len[block].max())
        h_valid = np.arange(h_max) < h_len[block][:, None]
        r_valid = np.arange(r_max) < r_len[block][:, None]
        history = seen.positions[np.where(h_valid, h_start[block][:, None] + np.arange(h_max), 0)]
        out = order[np.where(r_valid, r_start[block][:, None] + np.arange(r_max), 0)]
        sims = np.matmul(vectors[picks[out]], vectors[history].transpose(0, 2, 1))  # (users, picks, history)
        sims[~np.broadcast_to(h_valid[:, None, :], sims.shape)] = -np.inf
        best = sims.argmax(axis=2)  # the first of equal maxima: the lower position
        chosen = np.take_along_axis(history, best, 1)
        value = np.take_along_axis(sims, best[..., None], 2)[..., 0]
        because[out[r_valid]] = chosen[r_valid]
        similarity[out[r_valid]] = value[r_valid]
    return because, similarity


def _block_end(h_len: np.ndarray, r_len: np.ndarray, at: int, budget: int) -> int:
    """The end of the block that starts at ``at`` (users in order of history length ``h_len``, with
    ``r_len`` picks each): as many users as fit in ``budget`` padded vectors (users x the longest
    history or the most picks among them), and at least one."""
    stop = min(len(h_len), at + max(budget, 1))
    ends = np.arange(at + 1, stop + 1)
    width = np.maximum(h_len[at:stop], np.maximum.accumulate(r_len[at:stop]))
    fits = (ends - at) * width <= budget
    return int(ends[fits][-1]) if fits.any() else at + 1
