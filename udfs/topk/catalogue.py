"""The item catalogue a worker scores against, and the worker's cache of catalogues.

Items are held in item-id order, so "ties broken by item id" is "ties broken by position". The
catalogue reaches a worker once: from a Spark broadcast (classic Spark) or from a file written by the
driver (Spark Connect, Databricks serverless), and is cached per worker by its key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from segrec.udfs.worker_cache import WorkerCache


@dataclass(frozen=True)
class IvfIndex:
    """A trained and filled IVF-Flat index of a catalogue's vectors (faiss.serialize_index's bytes,
    uint8), its number of ``lists`` and the ``probes`` (lists searched per user) the workers use."""

    data: np.ndarray
    lists: int
    probes: int


@dataclass
class Catalogue:
    """The items in index order: ids, unit vectors (n, d) float32, popularity (n, segments) or None,
    for trained towers' vectors each vector's learned part (n, d) float32 (zero rows for cold items) or
    None, and the IVF index the approximate search uses, or None (exact search)."""

    item_ids: np.ndarray
    vectors: np.ndarray
    popularity: np.ndarray | None = None
    learned_part: np.ndarray | None = None
    offset: int = 0  # global index of the first item (a shard's start)
    ivf: IvfIndex | None = None  # with recommend.search ivf: the index its candidates come from
    # Made on first use inside a worker and kept with the cached catalogue: per-device tensor copies
    # (catalogue_tensors), norms, the id index.
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        # What is derived stays with the process that made it: tensors may be on its GPU, and a faiss
        # index object does not pickle (the broadcast and the driver's recall check share a catalogue).
        return {**self.__dict__, "derived": {}}


CATALOGUES: WorkerCache[Catalogue] = WorkerCache(size=4)


def cached_catalogue(key: str, load: Callable[[], Catalogue]) -> Catalogue:
    """The worker's catalogue for ``key`` (a broadcast id or a file path), from ``load()`` on first use only."""
    return CATALOGUES.get(key, load)


def save_catalogue(path: str, catalogue: Catalogue) -> None:
    """Write ``catalogue`` (ids, vectors, and popularity, learned parts and IVF index where present) to ``path`` as
    an uncompressed .npz: numpy arrays only, no pickle."""
    arrays: dict[str, Any] = {"item_ids": catalogue.item_ids.astype(str), "vectors": catalogue.vectors}
    for name in ("popularity", "learned_part"):
        if getattr(catalogue, name) is not None:
            arrays[name] = getattr(catalogue, name)
    if catalogue.ivf is not None:
        arrays["ivf_index"] = catalogue.ivf.data
        arrays["ivf_shape"] = np.array([catalogue.ivf.lists, catalogue.ivf.probes], np.int64)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_catalogue(path: str) -> Catalogue:
    """The catalogue :func:`save_catalogue` wrote to ``path`` (loaded without unpickling anything)."""
    with np.load(path, allow_pickle=False) as data:  # never unpickle
        optional = {name: data[name] for name in ("popularity", "learned_part") if name in data.files}
        if "ivf_index" in data.files:
            lists, probes = (int(x) for x in data["ivf_shape"])
            optional["ivf"] = IvfIndex(data=data["ivf_index"], lists=lists, probes=probes)
        return Catalogue(item_ids=data["item_ids"], vectors=data["vectors"], **optional)


def catalogue_tensors(catalogue: Catalogue, device: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The catalogue's vectors (n, d) and popularity (n, segments) as tensors on ``device``.

    Copied to a GPU once per worker and catalogue (kept on the catalogue object, which the worker
    caches); on the CPU they share the numpy arrays' memory.
    """
    if device not in catalogue.derived:
        vectors = torch.from_numpy(catalogue.vectors).to(device)
        popularity = torch.from_numpy(catalogue.popularity).to(device) if catalogue.popularity is not None else None
        catalogue.derived[device] = (vectors, popularity)
    return catalogue.derived[device]


def _cached(catalogue: Catalogue, key: str, make: Callable):
    if key not in catalogue.derived:
        catalogue.derived[key] = make()
    return catalogue.derived[key]


@dataclass(frozen=True)
class SeenItems:
    """The items a batch's users interacted with: (user row, catalogue position) pairs, each once,
    ordered by row (flat arrays: a per-user list of arrays cost more to build than to mask)."""

    rows: np.ndarray
    positions: np.ndarray

    @classmethod
    def from_pairs(cls, rows: np.ndarray, positions: np.ndarray) -> SeenItems:
        """Any (user row, catalogue position) pairs ``rows`` and ``positions``: sorted by (row, position)
        and deduplicated (a user may have interacted twice).
        np.sort, not np.unique: numpy's hash-based unique was far slower on these int64 keys
        (benchmarks/topk_parts.py)."""
        rows, positions = rows.astype(np.int64), positions.astype(np.int64)
        base = int(positions.max(initial=0)) + 1  # any base above every position keys (row, position)
        keys = np.sort(rows * base + positions)
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
        return cls(keys // base, keys % base)

    @classmethod
    def from_lists(cls, lists: list[np.ndarray]) -> SeenItems:
        """From ``lists``: per user row, an array of catalogue positions."""
        lengths = np.array([len(s) for s in lists], dtype=np.int64)
        rows = np.repeat(np.arange(len(lists), dtype=np.int64), lengths)
        positions = np.concatenate(lists).astype(np.int64) if lengths.sum() else np.empty(0, np.int64)
        return cls.from_pairs(rows, positions)

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(row - start, position) pairs of rows start..stop-1."""
        lo, hi = np.searchsorted(self.rows, [start, stop])
        return self.rows[lo:hi] - start, self.positions[lo:hi]


def seen_positions(seen_ids: np.ndarray, counts: np.ndarray, catalogue: Catalogue) -> SeenItems:
    """The positions in ``catalogue`` of the users' ``seen_ids`` (flat, ``counts`` per user); ids it does
    not hold (items without a vector, another shard's items) mask nothing here."""
    if not len(seen_ids):
        return SeenItems(np.empty(0, np.int64), np.empty(0, np.int64))
    index = _cached(catalogue, "id_index", lambda: pd.Index(catalogue.item_ids.astype(object)))
    positions = index.get_indexer(seen_ids)
    rows = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    held = positions >= 0
    return SeenItems.from_pairs(rows[held], positions[held])
