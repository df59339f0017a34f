"""The towers' layers (torch, for training) and the same model applied with numpy (``TowerWeights``, for
inference in pandas UDFs without torch's start-up cost)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass
from segrec.udfs.towers.settings import TowerSettings


def build_model(text_dim: int, n_ids: int, settings: TowerSettings):
    """The towers as a torch module for text vectors of ``text_dim`` values and ``n_ids`` ID-embedding
    rows, shaped by ``settings`` (torch is imported here so that importing this file needs no torch)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class TwoTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text_skip = nn.Linear(text_dim, settings.dim, bias=False)
            self.text_mlp = nn.Sequential(
                nn.Linear(text_dim, settings.hidden), nn.GELU(), nn.Linear(settings.hidden, settings.dim)
            )
            self.item_id = nn.Embedding(n_ids + 1, settings.dim, padding_idx=0)
            nn.init.normal_(self.item_id.weight, std=0.01)
            with torch.no_grad():
                self.item_id.weight[0].zero_()
            self.user_text = nn.Linear(text_dim, settings.dim, bias=False)
            if settings.history_map:
                # starts as the identity: the pooled history as it is, then learns what to weigh
                self.history_map = nn.Linear(settings.dim, settings.dim, bias=False)
                with torch.no_grad():
                    self.history_map.weight.copy_(torch.eye(settings.dim))

        def items(self, text: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            z = self.text_skip(text) + self.text_mlp(text) + self.item_id(rows)
            return F.normalize(z, dim=-1)

        def users(self, pooled: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
            z = self.history_map(pooled) if settings.history_map else pooled
            if settings.user_text:
                z = z + self.user_text(text) * has_text[:, None]
            return F.normalize(z, dim=-1)

        def forward(self, text, rows, history, weights, user_text, has_text):
            """(user vectors (B, dim), every item's vector (n, dim)) for one batch of examples."""
            vectors = self.items(text, rows)
            return self.users(pool(vectors, history, weights), user_text, has_text), vectors

    return TwoTower()


def pool(item_vectors, items, weights):
    """(B, dim) the ``weights`` (B, H)-weighted mean of ``item_vectors`` (n, dim) at the history positions
    ``items`` (B, H) (torch; TEXT_FREE slots weigh nothing); an empty history pools to zero."""
    import torch
    from torch.nn import functional as F

    valid = items >= 0
    weights = torch.where(valid, weights, 0.0)
    # embedding_bag sums without materialising the (B, H, dim) gather, and its backward is one fused
    # deterministic kernel instead of a scatter-add over every history slot.
    summed = F.embedding_bag(torch.where(valid, items, 0), item_vectors, per_sample_weights=weights, mode="sum")
    return summed / weights.sum(dim=1, keepdim=True).clamp_min(1e-6)


@dataclass(frozen=True)
class TowerWeights:
    """A trained model's weights as numpy arrays, with what is needed to apply them in a worker:
    the settings, and the ids of the items that have a learned embedding (sorted; row i+1)."""

    settings: TowerSettings
    state: dict
    id_items: np.ndarray

    def item_vectors(self, text: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """(n, dim) float32 unit vectors for items with these ``text`` vectors (n, t) and ``item_ids`` (an id without a
        learned embedding, a cold item, goes through the text path alone)."""
        return self.item_parts(text, item_ids)[0]

    def item_parts(self, text: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For items with these ``text`` vectors (n, t) and ``item_ids``: (unit vectors (n, dim), their
        learned parts (n, dim), which items have a learned embedding (n,)). A vector is
        (text path + learned embedding) / its norm, so vector = text part + learned part with both
        divided by that one norm, and a user's score u . vector splits the same way: u . learned part
        is what the item's interactions added to its text. The learned part is 0 for a cold item."""
        s = self.state
        x = np.asarray(text, np.float32)
        hidden = _gelu(x @ s["text_mlp.0.weight"].T + s["text_mlp.0.bias"])
        z = x @ s["text_skip.weight"].T + hidden @ s["text_mlp.2.weight"].T + s["text_mlp.2.bias"]
        learned = np.zeros_like(z)
        found = np.zeros(len(z), dtype=bool)
        if len(self.id_items):
            at = np.searchsorted(self.id_items, item_ids)
            at = np.minimum(at, len(self.id_items) - 1)
            found = self.id_items[at] == item_ids
            learned = np.where(found[:, None], s["item_id.weight"][at + 1], 0.0)
        z = z + learned
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        scale = np.where(norm > 1e-12, 1.0 / np.maximum(norm, 1e-12), 0.0)
        return (z * scale).astype(np.float32), (learned * scale).astype(np.float32), found

    def user_vectors(self, pooled: np.ndarray, text: np.ndarray | None) -> np.ndarray:
        """(n, dim) unit vectors from pooled history vectors (zeros when none) and the user's text
        vector (None or NaN rows: no text); an all-zero result (no signal) stays zero."""
        z = np.asarray(pooled, np.float64)
        if self.settings.history_map:
            z = z @ self.state["history_map.weight"].T.astype(np.float64)
        if self.settings.user_text and text is not None:
            t = np.nan_to_num(np.asarray(text, np.float64), nan=0.0)
            z = z + t @ self.state["user_text.weight"].T.astype(np.float64)
        return _normalise(z)


def _gelu(x: np.ndarray) -> np.ndarray:
    # torch's default GELU (the exact erf form)
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _normalise(z: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return np.where(norm > 1e-12, z / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
