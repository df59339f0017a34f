"""One training process's interactions as flat arrays, and the histories the user tower reads from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass
from segrec.udfs.towers.settings import TEXT_FREE, TowerSettings


@dataclass
class TrainingData:
    """Everything one training process needs, as flat arrays.

    item_ids: the catalogue, sorted (position = row of ``item_text``); item_text (n, t) float32;
    item_counts (n,) training interactions per item. Users' histories as one flat array of catalogue
    positions (``flat_items``, oldest first within a user) with their feedback weights, cut by
    ``offsets`` (n_users + 1); user_text (n_users, t) float32 with ``has_text`` (n_users,) bool.
    """

    item_ids: np.ndarray
    item_text: np.ndarray
    item_counts: np.ndarray
    flat_items: np.ndarray
    flat_weights: np.ndarray
    offsets: np.ndarray
    user_text: np.ndarray
    has_text: np.ndarray

    @property
    def n_users(self) -> int:
        """Users with a history (rows of ``offsets`` minus one)."""
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        """(n_users,) the length of each user's history."""
        return np.diff(self.offsets)


def id_rows(item_counts: np.ndarray, settings: TowerSettings) -> np.ndarray:
    """(n,) the row of each catalogue item in the ID-embedding table, from ``item_counts`` (n,) training
    interactions per item: 1.. for items with at least ``settings.id_min_interactions``, 0 (no embedding,
    text path only) for the rest, and 0 for every item without ``settings.id_embeddings``."""
    if not settings.id_embeddings:
        return np.zeros(len(item_counts), np.int64)
    has_id = item_counts >= settings.id_min_interactions
    rows = np.zeros(len(item_counts), np.int64)
    rows[has_id] = np.arange(1, int(has_id.sum()) + 1)
    return rows


def example_positions(data: TrainingData, settings: TowerSettings) -> np.ndarray:
    """Flat positions in ``data`` of the interactions to predict under ``settings.objective``. Sequential: every
    interaction with something before it, and a user's first one where the user has text. Order-free: every
    interaction of a user with at least one other, or with text."""
    lengths = data.lengths()
    user = np.repeat(np.arange(data.n_users), lengths)
    step = np.arange(len(data.flat_items)) - data.offsets[user]
    if settings.objective == "sequential":
        usable = (step >= 1) | data.has_text[user]
    else:
        usable = (lengths[user] >= 2) | data.has_text[user]
    return np.flatnonzero(usable)


def user_of(data: TrainingData, positions: np.ndarray) -> np.ndarray:
    """(len(positions),) the user of each flat position in ``data``'s histories."""
    return np.searchsorted(data.offsets, positions, side="right") - 1


def histories(
    data: TrainingData, positions: np.ndarray, settings: TowerSettings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(items (B, H) catalogue positions or TEXT_FREE, weights (B, H)) of the history of each example at
    flat ``positions`` (B,) in ``data``, H = ``settings.history``: the interactions before it
    (sequential, decayed) or the user's others (order-free, sampled with ``rng``)."""
    h = settings.history
    users = user_of(data, positions)
    start = data.offsets[users]
    if settings.objective == "sequential":
        # The h interactions before the target, newest in the last column.
        flat = positions[:, None] - np.arange(h, 0, -1)[None, :]
        valid = flat >= start[:, None]
        steps_back = np.arange(h - 1, -1, -1)[None, :]
        decay = settings.decay**steps_back
    else:
        # The user's other interactions: all of them when they fit, else h drawn at random.
        length = data.offsets[users + 1] - start
        others = length - 1
        target = positions - start
        fixed = np.broadcast_to(np.arange(h)[None, :], (len(positions), h))
        drawn = (rng.random((len(positions), h)) * np.maximum(others, 1)[:, None]).astype(np.int64)
        j = np.where((others > h)[:, None], drawn, fixed)
        valid = j < others[:, None]
        j = j + (j >= target[:, None])  # skip the target itself
        flat = start[:, None] + j
        decay = np.ones((1, h))
    flat = np.where(valid, flat, 0)
    items = np.where(valid, data.flat_items[flat], TEXT_FREE)
    weights = np.where(valid, data.flat_weights[flat] * decay, 0.0).astype(np.float32)
    return items, weights


def inference_history(items: np.ndarray, weights: np.ndarray, settings: TowerSettings) -> tuple[np.ndarray, np.ndarray]:
    """One user's whole history, ``items`` with their ``weights`` (oldest first) -> the pooling inputs the
    towers were trained with under ``settings``:
    the newest ``history`` items, weighted by feedback x decay per step back (order-free: no decay)."""
    items, weights = items[-settings.history :], weights[-settings.history :]
    if settings.objective == "sequential":
        weights = weights * settings.decay ** np.arange(len(items) - 1, -1, -1)
    return items, weights.astype(np.float32)
