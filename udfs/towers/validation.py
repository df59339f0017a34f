"""The validation hold-out that picks the objective and the epoch: each user's newest interaction held out,
NDCG@10 and hit@10 over every trainable item, and early stopping on them."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass
from segrec.udfs.towers.data import TrainingData, inference_history
from segrec.udfs.towers.distributed import sum_array_over_processes, sum_floats_over_processes
from segrec.udfs.towers.model import TowerWeights

VALIDATION_USERS = 4096  # users per process whose newest interaction is held out to choose the objective


class BestEpoch:
    """Early stopping on the validation hold-out, as ``training._train``'s ``after_epoch``: scores the model after
    each epoch (summed over the ``world``'s processes, so every process decides alike), keeps the best
    epoch's per-user gains and a copy of its state, and says stop after ``settings.patience`` epochs
    without a better NDCG@10 (ties keep the earlier epoch)."""

    def __init__(self, settings, data, users, held, id_items, world):
        self.settings, self.world = settings, world
        self.data, self.users, self.held, self.id_items = data, users, held, id_items
        self.by_epoch: list[float] = []
        self.ndcg, self.recall, self.epoch = -1.0, 0.0, 0
        self.gains = np.zeros(0)
        self.state: dict = {}

    def __call__(self, epoch, model, optimiser, curve) -> bool:
        state = {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}
        gains, hits = validation_figures(
            TowerWeights(self.settings, state, self.id_items), self.data, self.users, self.held
        )
        total = sum_floats_over_processes([float(gains.sum()), float(hits.sum()), float(len(self.users))], self.world)
        count = max(total[2], 1.0)
        ndcg = total[0] / count
        self.by_epoch.append(round(ndcg, 6))
        if ndcg > self.ndcg:
            self.ndcg, self.recall, self.epoch, self.gains = ndcg, total[1] / count, epoch, gains
            # On the CPU: the copy waits while the other objective trains, and must not double the GPU's load.
            self.state = {
                "model": _on_cpu(model.state_dict()),
                "optimiser": _on_cpu(optimiser.state_dict()),
                "epochs": epoch,
                "curve": copy.deepcopy(curve),
            }
        return epoch - self.epoch >= self.settings.patience

    def figures(self) -> dict:
        """The best epoch's validation NDCG@10 and recall@10, its number, and NDCG@10 after each epoch."""
        return {
            "ndcg@10": round(self.ndcg, 6),
            "recall@10": round(self.recall, 6),
            "epochs": self.epoch,
            "ndcg@10_by_epoch": self.by_epoch,
        }


def _on_cpu(value):
    """A copy of ``value`` (a state_dict: nested dicts and lists of tensors and plain values) on the CPU."""
    if isinstance(value, dict):
        return {key: _on_cpu(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_on_cpu(item) for item in value]
    if hasattr(value, "detach"):
        return value.detach().to("cpu", copy=True)
    return copy.deepcopy(value)


def hold_out_newest(
    data: TrainingData, seed: int, rank: int = 0, world: int = 1
) -> tuple[TrainingData, np.ndarray, np.ndarray]:
    """(``data`` without the newest interaction of up to ``VALIDATION_USERS`` users with at least two,
    drawn with ``seed`` and ``rank``, those users, their held-out catalogue positions). Item counts lose
    the held-out interactions of every process of ``world`` (summed), so every process keeps the same
    ID-embedding rows."""
    lengths = data.lengths()
    eligible = np.flatnonzero(lengths >= 2)
    rng = np.random.default_rng([seed, rank, 7])
    users = np.sort(rng.permutation(eligible)[:VALIDATION_USERS])
    newest = data.offsets[users + 1] - 1
    keep = np.ones(len(data.flat_items), bool)
    keep[newest] = False
    new_lengths = lengths.copy()
    new_lengths[users] -= 1
    held_counts = np.bincount(data.flat_items[newest], minlength=len(data.item_ids))
    kept = replace(
        data,
        item_counts=data.item_counts - sum_array_over_processes(held_counts, world),
        flat_items=data.flat_items[keep],
        flat_weights=data.flat_weights[keep],
        offsets=np.concatenate([[0], np.cumsum(new_lengths)]),
    )
    return kept, users, data.flat_items[newest]


def validation_figures(
    weights: TowerWeights, data: TrainingData, users: np.ndarray, held: np.ndarray, k: int = 10, chunk: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """(NDCG@k, hit@k) per user of ``users`` (rows of ``data``) for their ``held`` (catalogue positions)
    items under the towers' ``weights``, ranked among every trainable item (training count > 0, or the
    held item itself) with the user's history masked, ``chunk`` items at a time; ties go to the lower
    catalogue position, as the recommend stage breaks them by item id."""
    if len(users) == 0:
        return np.zeros(0), np.zeros(0)
    settings = weights.settings
    pooled = np.zeros((len(users), settings.dim))
    seen_rows, seen_items = [], []
    item_vectors = np.zeros((len(data.item_ids), settings.dim), np.float32)
    for start in range(0, len(data.item_ids), chunk):
        stop = start + chunk
        item_vectors[start:stop] = weights.item_vectors(data.item_text[start:stop], data.item_ids[start:stop])
    for row, u in enumerate(users):
        a, b = data.offsets[u], data.offsets[u + 1]
        hist, w = inference_history(data.flat_items[a:b], data.flat_weights[a:b], settings)
        pooled[row] = (item_vectors[hist] * w[:, None]).sum(0) / max(float(w.sum()), 1e-6)
        seen_items.append(data.flat_items[a:b])
        seen_rows.append(np.full(b - a, row))
    text = np.where(data.has_text[users][:, None], data.user_text[users], np.nan)
    vectors = weights.user_vectors(pooled, text)
    candidate = data.item_counts > 0
    candidate[held] = True
    target = np.einsum("ij,ij->i", vectors, item_vectors[held])
    ahead = np.zeros(len(users), np.int64)  # candidates ranked before the held item
    rows, cols = np.concatenate(seen_rows), np.concatenate(seen_items)
    for start in range(0, len(data.item_ids), chunk):
        stop = min(start + chunk, len(data.item_ids))
        scores = vectors @ item_vectors[start:stop].T
        scores[:, ~candidate[start:stop]] = -np.inf
        inside = (cols >= start) & (cols < stop)
        scores[rows[inside], cols[inside] - start] = -np.inf
        position = np.arange(start, stop)[None, :]
        before = (scores > target[:, None]) | ((scores == target[:, None]) & (position < held[:, None]))
        ahead += before.sum(axis=1)
    hit = ahead < k
    return hit / np.log2(ahead + 2.0), hit.astype(np.float64)
