"""Segment assignment on executors: cosine to the centroids, nearest segment, soft memberships."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segrec.udfs.config_keys import from_config


@dataclass(frozen=True)
class AssignSettings:
    """How users are placed: the softmax ``temperature`` over cosine, and how many soft ``memberships``
    (the highest) each user keeps."""

    temperature: float = from_config("segment.temperature")
    memberships: int = from_config("segment.memberships")


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` (n, d) as float32 with each row scaled to unit length (an all-zero row stays zero)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def assign(
    vectors: np.ndarray, centroids: np.ndarray, settings: AssignSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For unit ``vectors`` (n, d) and ``centroids`` (k, d), with ``settings``:

    segment (n,) the most similar centroid (ties: the lowest segment id), distance (n,) = 1 - cosine to
    it, and the top ``settings.memberships`` soft memberships: segment ids (n, top) and weights (n, top),
    a softmax over cosine / ``settings.temperature``, highest first (ties: lowest id).
    """
    temperature, top = settings.temperature, settings.memberships
    centres = normalise_rows(centroids)
    sims = np.asarray(vectors, dtype=np.float32) @ centres.T
    segment = np.argmax(sims, axis=1)
    distance = 1.0 - sims[np.arange(len(sims)), segment]
    logits = sims / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    top = min(top, centres.shape[0])
    order = np.argsort(-weights, axis=1, kind="stable")[:, :top]
    return segment, distance.astype(np.float64), order, np.take_along_axis(weights, order, axis=1).astype(np.float64)
