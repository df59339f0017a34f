"""Top-k scoring on executors: users in blocks against an item matrix, seen items masked.

score = cosine(user, item) + popularity_weight * popularity(user's segment, item)
Items are indexed in item-id order, so "ties broken by item id" is "ties broken by index". The
selection is exact: a fast pass (one matrix product per block, float32 or bfloat16) picks candidates,
an exact float64 pass scores them, and a row is kept only once its error bound proves that no item
left out could beat its k-th item (see "candidate precision" below). Candidates are ordered by
(-score, index), so the same inputs give the same lists and scores whatever the block, shard or
precision.

The item matrix reaches a worker once: from a Spark broadcast (classic Spark) or from a file written
by the driver (Spark Connect, Databricks serverless), and is cached per worker by its key.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from segrec.udfs.errors import WorkerInputError

ARROW_SCHEMA = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()),
                          ("score", pa.float64()), ("similarity", pa.float64()), ("popularity_boost", pa.float64()),
                          ("because_item_id", pa.string()), ("because_similarity", pa.float64())])
OUTPUT_COLUMNS = ARROW_SCHEMA.names
OUTPUT_DTYPES = {f.name: f.type.to_pandas_dtype() for f in ARROW_SCHEMA}  # strings: object


@dataclass
class Catalogue:
    """The items in index order: ids, unit vectors (n, d) float32, popularity (n, segments) or None."""

    item_ids: np.ndarray
    vectors: np.ndarray
    popularity: np.ndarray | None = None
    offset: int = 0  # global index of the first item (a shard's start)
    # Made on first use inside a worker and kept with the cached catalogue: per-device tensor copies
    # (catalogue_tensors), norms, the id index.
    derived: dict = field(default_factory=dict, repr=False, compare=False)


_CACHE: dict[str, Catalogue] = {}  # insertion order is recency order
CACHE_SIZE = 4
# Users selected in this process, and how many of them the first candidate pass could not prove
# (benchmarks/topk_precision.py reports the share).
SELECTION = {"users": 0, "widened": 0}
_LOCK = threading.Lock()
LOADS: dict[str, int] = {}


def cached_catalogue(key: str, load: Callable[[], Catalogue]) -> Catalogue:
    """The worker's catalogue for ``key``, loaded on first use only. A long-lived worker (a notebook,
    evaluate's many models) keeps the ``CACHE_SIZE`` most recently used ones, not every one it met."""
    with _LOCK:
        if key in _CACHE:
            _CACHE[key] = _CACHE.pop(key)  # now the most recent
        else:
            _CACHE[key] = load()
            LOADS[key] = LOADS.get(key, 0) + 1
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
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


@dataclass(frozen=True)
class SeenItems:
    """The items a batch's users interacted with: (user row, catalogue position) pairs, each once,
    ordered by row (flat arrays: a per-user list of arrays cost more to build than to mask)."""

    rows: np.ndarray
    positions: np.ndarray

    @classmethod
    def from_pairs(cls, rows: np.ndarray, positions: np.ndarray) -> "SeenItems":
        """Any pairs: sorted by (row, position) and deduplicated (a user may have interacted twice).
        np.sort, not np.unique: numpy's hash-based unique was far slower on these int64 keys
        (benchmarks/topk_parts.py)."""
        rows, positions = rows.astype(np.int64), positions.astype(np.int64)
        base = int(positions.max(initial=0)) + 1  # any base above every position keys (row, position)
        keys = np.sort(rows * base + positions)
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
        return cls(keys // base, keys % base)

    @classmethod
    def from_lists(cls, lists: list[np.ndarray]) -> "SeenItems":
        """Per user row, an array of catalogue positions."""
        lengths = np.array([len(s) for s in lists], dtype=np.int64)
        rows = np.repeat(np.arange(len(lists), dtype=np.int64), lengths)
        positions = np.concatenate(lists).astype(np.int64) if lengths.sum() else np.empty(0, np.int64)
        return cls.from_pairs(rows, positions)

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(row - start, position) pairs of rows start..stop-1."""
        lo, hi = np.searchsorted(self.rows, [start, stop])
        return self.rows[lo:hi] - start, self.positions[lo:hi]


def block_rows(n_items: int, block_mb: float, depth: int = 0, dim: int = 0) -> int:
    """Users per block so that the block's memory stays under ``block_mb``: per user, about 3 score
    rows of n_items float32, plus its first candidates' vectors gathered for the exact pass (float32,
    and float64 working copies: 12 bytes per value)."""
    per_user = max(n_items, 1) * 4 * 3 + candidate_count(depth, n_items) * dim * 12
    return max(1, int(block_mb * 2**20 // per_user))


# Extra candidates in the first pass, beyond depth + depth // 2. benchmarks/topk_precision.py --margins
# compares margins: 8 widened 0.4-1.2% of the demo's users and was faster than 16 (fewer candidates to
# rescore exactly); with no depth // 2 term, 44% of them needed widening at k = 50.
CANDIDATE_MARGIN = 8


def candidate_count(depth: int, n_items: int) -> int:
    """Candidates per user in the first selection pass: enough beyond ``depth`` that the proof below
    usually holds at once (rows where it does not are widened)."""
    return min(n_items, depth + depth // 2 + CANDIDATE_MARGIN) if depth > 0 else 0


# ------------------------------------------------------------------------------ candidate precision
#
# Scores are computed twice. A fast pass over every item (one matrix product per block of users, in
# float32, or in bfloat16 on CPUs with native bfloat16 dot products, whose rate benchmarks/topk.py's two
# floors put at 2.7-4.1x float32's on this project's machine) picks each user's best candidates; an
# exact pass recomputes the candidates' scores in float64 from the float32 vectors, orders them by
# (-score, item index) and keeps the best. The fast pass's error is bounded (excluded_score_bound), so
# a row is proven exact when the best fast score left out plus the bound is below its k-th exact score:
# no item left out can reach the list. Rows where that fails are widened and checked again, so the
# lists and scores do not depend on the precision, the device or the block size.

PRECISIONS = ("float32", "bfloat16")


def native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX), which make
    bfloat16 matrix products several times faster than float32 ones; without them they are slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def candidate_precision(setting: str, device: str) -> str:
    """The fast pass's precision: ``auto`` is bfloat16 on CPUs with native bfloat16, float32 otherwise.
    A GPU's pass is float32 (its products are far from the bottleneck, and cuBLAS may reduce bfloat16
    products in reduced precision, which would void the error bound)."""
    if device != "cpu":
        return "float32"
    if setting == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    return setting


@dataclass(frozen=True)
class ItemNorms:
    """The catalogue's largest norms (float64): of its vectors, of their bfloat16 roundings, and of the
    rounding errors (vector - its bfloat16 rounding), which the error bound is built from."""

    vector: float
    rounded: float
    rounding_error: float


def bfloat16_rounded(x: np.ndarray) -> np.ndarray:
    """float32 rows rounded to bfloat16 (to nearest, as the fast pass does), as float64."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).bfloat16().double().numpy()


def item_norms(vectors: np.ndarray, rows: int = 2048) -> ItemNorms:
    """In chunks of ``rows``, so that the float64 working copies stay small beside the catalogue."""
    largest = np.zeros(3)
    for start in range(0, len(vectors), rows):
        exact = vectors[start : start + rows].astype(np.float64)
        rounded = bfloat16_rounded(vectors[start : start + rows])
        norms = [np.linalg.norm(m, axis=1).max(initial=0.0) for m in (exact, rounded, rounded - exact)]
        largest = np.maximum(largest, norms)
    return ItemNorms(*(float(x) for x in largest))


def excluded_score_bound(
    precision: str, users: np.ndarray, items: ItemNorms, fast_cut: np.ndarray, boost_max: float
) -> np.ndarray:
    """Per user row, B such that every item whose fast score is at most ``fast_cut`` has an exact score
    of at most fast_cut + B (so no item left out of the candidates can beat an exact score above it).

    Let s = u.v exactly and s' the fast pass's product, c = 2^-8 / (1 - 2^-8).
    - float32: |s' - s| <= gamma_d sum|u_i v_i| <= (d + 1) 2^-23 |u| |v| for any summation order.
    - bfloat16: the inputs are rounded to nearest (u~, v~), so |u~.v~ - u.v| <= |u~| |v~ - v| + |u~ - u| |v|
      (Cauchy-Schwarz, with the rounding errors' actual norms); products of bfloat16 are exact and summed
      in float32 (gamma_d |u~| |v~|); the sum is rounded to bfloat16 (2^-8 of it), so s <= g(s') + the
      rest with g(x) = x + c |x|. g is increasing: without a boost, an item with s' <= cut has
      s <= cut + c |cut| + the rest; with a boost, c |s'| <= c |u~| |v~| (1 + gamma_d) instead.
    - The boost (lambda * popularity, <= boost_max) and its sum with s' are float32 operations:
      2^-22 (|cut| + boost_max) covers both, and 2^-40 (|u| |v| + 1) the float64 exact pass.
    """
    d = users.shape[1]
    exact = users.astype(np.float64)
    norm = np.linalg.norm(exact, axis=1)
    gamma = (d + 1) * 2.0**-23
    cut = np.where(np.isfinite(fast_cut), np.abs(fast_cut), 0.0)
    if precision == "bfloat16":
        rounded = bfloat16_rounded(users)
        rounded_norm = np.linalg.norm(rounded, axis=1)
        inputs = rounded_norm * items.rounding_error + np.linalg.norm(rounded - exact, axis=1) * items.vector
        product = rounded_norm * items.rounded
        c = 2.0**-8 / (1 - 2.0**-8)
        output = c * (cut if boost_max == 0 else product * (1 + gamma))
        bound = inputs + gamma * product + output
    else:
        bound = gamma * norm * items.vector
    return bound + 2.0**-22 * (cut + boost_max) + 2.0**-40 * (norm * items.vector + 1)


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


def fast_similarities(block: np.ndarray, catalogue: Catalogue, device: str, precision: str) -> torch.Tensor:
    """(b, n) similarities of a block of users to every item, from the fast pass, in its precision
    (bfloat16 values convert to float32 exactly; the selection reads them as they are)."""
    if precision == "bfloat16":
        vectors = _cached(catalogue, f"{device}:bfloat16", lambda: catalogue_tensors(catalogue, device)[0].bfloat16())
        return torch.from_numpy(block).to(device).bfloat16() @ vectors.T
    # torch's product, not numpy's: numpy's BLAS threads keep spinning after a product, and a profile
    # showed them slowing the torch steps that follow (selection, exact pass) on the CPU.
    vectors, _ = catalogue_tensors(catalogue, device)
    # "highest": true float32 products whatever the process set (TF32 on a GPU, or bfloat16 inside
    # oneDNN on a CPU, would void the float32 error bound).
    prior = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        return torch.from_numpy(block).to(device) @ vectors.T
    finally:
        torch.set_float32_matmul_precision(prior)


def exact_scores(
    users: np.ndarray, candidates: np.ndarray, segments: np.ndarray, catalogue: Catalogue, device: str, weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """float64 (similarity, boost) of each user (p, d) with its candidates (p, m) item indices.

    A similarity is the float64 sum of exact float32 products, summed the same way whatever the number
    of rows and candidates (a batched matrix product switches kernels with the shape, and its last bits
    with them), so a user's scores do not depend on its block, shard or precision.
    """
    if device == "cpu":
        sims = np.einsum("pmd,pd->pm", catalogue.vectors[candidates], users, dtype=np.float64)
    else:
        vectors, _ = catalogue_tensors(catalogue, device)
        gathered = vectors[torch.from_numpy(candidates).to(device)].double()
        sims = (gathered * torch.from_numpy(users).to(device).double().unsqueeze(1)).sum(dim=2).cpu().numpy()
    boosts = np.zeros_like(sims)
    if weight > 0 and catalogue.popularity is not None:
        has = segments >= 0
        boosts[has] = weight * catalogue.popularity[candidates[has], segments[has][:, None]].astype(np.float64)
    return sims, boosts


def top_k(
    users: np.ndarray,
    segments: np.ndarray,
    seen: SeenItems,
    catalogue: Catalogue,
    k: int,
    popularity_weight: float,
    block_mb: float,
    device: str = "cpu",
    precision: str = "float32",
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per block of users, flat arrays ordered by user row then rank:
    (user rows, global item indices, scores, similarities, boosts), scores exact in float64.

    ``seen``: the users' seen items, as positions in this catalogue (SeenItems.from_lists builds it from
    an array per user);
    ``segments`` the user's segment (-1: none). The fast pass (``precision``), masking and candidate
    selection run on ``device`` (a CUDA device, or "cpu"); only candidates come back to host memory.
    """
    n, dim = catalogue.vectors.shape
    step = block_rows(n, block_mb, k, dim)
    _, popularity = catalogue_tensors(catalogue, device)
    use_boost = popularity_weight > 0 and popularity is not None
    norms = _cached(catalogue, "norms", lambda: item_norms(catalogue.vectors))
    boost_max = popularity_weight * float(catalogue.popularity.max(initial=0.0)) if use_boost else 0.0
    for start in range(0, len(users), step):
        block = users[start : start + step]
        b = len(block)
        block_segments = segments[start : start + step]
        scores = fast_similarities(block, catalogue, device, precision)
        if use_boost:
            scores = scores.float()  # the boost is added in float32 (the error bound counts that sum)
            on_device = torch.from_numpy(block_segments).to(device)
            has = on_device >= 0
            scores[has] += popularity_weight * popularity[:, on_device[has]].T

        seen_rows, seen_items = seen.block(start, start + b)
        if len(seen_rows):
            scores[torch.from_numpy(seen_rows).to(device), torch.from_numpy(seen_items).to(device)] = -np.inf
        unseen = n - np.bincount(seen_rows, minlength=b)
        take = np.minimum(k, unseen)

        picks: list = [None] * b
        pending = np.flatnonzero(take > 0)
        for r in np.flatnonzero(take == 0):
            picks[r] = (np.empty(0, np.int64), np.empty(0), np.empty(0))
        m = candidate_count(k, n)
        SELECTION["users"] += len(pending)
        while len(pending):
            chunk = max(1, int(block_mb * 2**20 // (m * dim * 12)))  # gathered vectors stay under the cap
            unproven, needed = [], []
            for at in range(0, len(pending), chunk):
                rows = pending[at : at + chunk]
                bound = functools.partial(excluded_score_bound, precision, block[rows], norms, boost_max=boost_max)
                proven, need = _select(rows, scores, block, block_segments, catalogue, device, popularity_weight,
                                       m, take, unseen, bound, picks)
                unproven.append(rows[~proven])
                needed.append(need[~proven])
            pending = np.concatenate(unproven)
            if m == candidate_count(k, n):  # after the first pass
                SELECTION["widened"] += len(pending)
            if len(pending):
                # Widen to what the bound says the unproven rows need, and at least double.
                m = min(n, max(2 * m, int(np.concatenate(needed).max()) + 1))

        flat_rows = np.repeat(np.arange(start, start + b), [len(p[0]) for p in picks])
        idx, sims, boosts = (np.concatenate([p[j] for p in picks]) for j in range(3))
        yield flat_rows, idx + catalogue.offset, sims + boosts, sims, boosts


GROUP = 16  # columns per group in best_fast_scores (the fastest of 8, 16 and 32 at 20K items, k=10)


def best_fast_scores(scores: torch.Tensor, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``count`` best scores (float32, best first) and their columns, on the host.

    On the CPU, torch.topk over every column took over half as long as the bfloat16 product, so the columns
    are first cut into GROUP strided groups (group j: columns j, j + w, j + 2w, ... with w = n // GROUP)
    and only the ``count`` groups with the highest maxima, plus the few columns past GROUP * w, are
    searched. That keeps the same values: a column outside them, with score x, has a group maximum
    below ``count`` other groups' maxima, so ``count`` searched scores are >= x and x is not needed.
    Among equal scores, which column comes back is arbitrary (as with torch.topk); the exact pass
    breaks ties. A GPU's topk is fast: it is used there as it is.
    """
    n = scores.shape[1]
    w = n // GROUP
    if scores.device.type != "cpu" or w < 4 * count:
        values, columns = torch.topk(scores, count, dim=1, sorted=True)
        return values.float().cpu().numpy(), columns.cpu().numpy()
    b = scores.shape[0]
    maxima = scores[:, : GROUP * w].unflatten(1, (GROUP, w)).amax(dim=1).float().numpy()
    groups = np.argpartition(maxima, w - count, axis=1)[:, w - count :]
    columns = (groups[:, None, :] + w * np.arange(GROUP)[:, None]).reshape(b, -1)
    if n > GROUP * w:
        columns = np.hstack([columns, np.broadcast_to(np.arange(GROUP * w, n), (b, n - GROUP * w))])
    values = scores.gather(1, torch.from_numpy(columns)).float().numpy()
    best = np.argpartition(values, values.shape[1] - count, axis=1)[:, values.shape[1] - count :]
    values, columns = np.take_along_axis(values, best, axis=1), np.take_along_axis(columns, best, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(columns, order, axis=1)


def _select(rows, scores, block, block_segments, catalogue, device, weight, m, take, unseen, bound, picks):
    """The best ``take`` items of each of ``rows`` (block rows) from their ``m`` best fast scores,
    rescored exactly. Fills ``picks[row]`` where that is proven exact; returns (proven per row, and per
    row the candidate count the bound says could prove it). ``bound(fast_cut=...)``: excluded_score_bound
    for these rows."""
    # rows is an ordered subset of the block's rows: all of them needs no copy.
    row_scores = scores if len(rows) == len(scores) else scores[torch.from_numpy(rows).to(scores.device)]
    n = scores.shape[1]
    fast, candidates = best_fast_scores(row_scores, min(m + 1, n))
    # The best fast score left out (the (m+1)-th); none when every item is a candidate.
    cut = fast[:, m] if m < n else np.full(len(rows), -np.inf, np.float32)
    fast, candidates = fast[:, :m], candidates[:, :m]
    sims, boosts = exact_scores(block[rows], candidates, block_segments[rows], catalogue, device, weight)
    exact = np.where(np.isneginf(fast), -np.inf, sims + boosts)  # masked (seen) items are never picked
    order = np.lexsort((candidates, -exact), axis=1)
    candidates, exact, sims, boosts = (np.take_along_axis(a, order, axis=1) for a in (candidates, exact, sims, boosts))
    want = take[rows]
    kth = exact[np.arange(len(rows)), want - 1]
    # Every unseen item is a candidate, or no item left out can reach the k-th exact score.
    proven = (unseen[rows] <= m) | (cut + bound(fast_cut=cut) < kth)
    for j in np.flatnonzero(proven):
        t = want[j]
        picks[rows[j]] = (candidates[j, :t], sims[j, :t], boosts[j, :t])
    needed = np.zeros(len(rows), np.int64)
    if not proven.all():
        reach = torch.from_numpy(kth - bound(fast_cut=kth)).to(device=device, dtype=torch.float32)
        open_rows = torch.from_numpy(~proven).to(device)
        counts = (row_scores[open_rows].float() >= reach[open_rows].unsqueeze(1)).sum(dim=1).cpu().numpy()
        needed[~proven] = counts
    return proven, needed


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
    return picked[[c for c in OUTPUT_COLUMNS if c in picked.columns]]


@dataclass(frozen=True)
class UserBatch:
    """One batch of users as arrays: ids, vectors (p, d) float32, segments (-1: none), and the ids of
    the items each interacted with, flat, with a count per user."""

    ids: np.ndarray
    vectors: np.ndarray
    segments: np.ndarray
    seen_ids: np.ndarray
    seen_counts: np.ndarray

    @classmethod
    def from_arrow(cls, batch: pa.RecordBatch, dim: int) -> "UserBatch":
        """From mapInArrow's batches: the vectors and seen ids are read from Arrow's flat buffers (no
        per-user Python objects)."""
        ids = batch.column("user_id").to_numpy(zero_copy_only=False)
        vector = batch.column("vector")
        _check_vectors(ids, pc.fill_null(pc.list_value_length(vector), -1).to_numpy(), dim)
        seen = batch.column("seen")
        return cls(
            ids=ids,
            # writable (a copy of Arrow's read-only buffer, ~3 ms per 10K users): torch warns on read-only arrays
            vectors=np.require(vector.flatten().to_numpy(zero_copy_only=False), np.float32, "W").reshape(-1, dim),
            segments=pc.fill_null(batch.column("segment_id"), -1).to_numpy(zero_copy_only=False).astype(np.int64),
            seen_ids=seen.flatten().to_numpy(zero_copy_only=False),
            seen_counts=pc.fill_null(pc.list_value_length(seen), 0).to_numpy().astype(np.int64),
        )

    @classmethod
    def from_pandas(cls, batch: pd.DataFrame, dim: int) -> "UserBatch":
        """From a pandas batch (the sharded plan's, tests): a numpy array or None per vector and seen list."""
        ids = batch["user_id"].to_numpy()
        vectors = batch["vector"].to_numpy()
        _check_vectors(ids, np.fromiter((-1 if v is None else len(v) for v in vectors), np.int64, len(vectors)), dim)
        seen = batch["seen"].to_numpy()
        counts = np.fromiter((0 if a is None else len(a) for a in seen), np.int64, len(seen))
        flat = [a for a in seen if a is not None and len(a)]
        return cls(
            ids=ids,
            vectors=np.stack(vectors).astype(np.float32, copy=False) if len(vectors) else np.empty((0, dim), np.float32),
            segments=pd.to_numeric(batch["segment_id"], errors="coerce").fillna(-1).astype(np.int64).to_numpy(),
            seen_ids=np.concatenate(flat) if flat else np.empty(0, object),
            seen_counts=counts,
        )


def _check_vectors(ids: np.ndarray, lengths: np.ndarray, dim: int) -> None:
    """Every user needs a vector of the catalogue's dimension (lengths: -1 for a missing vector)."""
    bad = np.flatnonzero(lengths != dim)
    if len(bad):
        row = bad[0]
        found = "no vector" if lengths[row] < 0 else f"a vector of {lengths[row]} values"
        raise WorkerInputError(f"recommend: user {ids[row]!r} has {found}; the item vectors have {dim} "
                         f"({len(bad)} such user(s) in this batch)")


def seen_positions(seen_ids: np.ndarray, counts: np.ndarray, catalogue: Catalogue) -> SeenItems:
    """The positions in this catalogue of the users' seen ids (flat, ``counts`` per user); ids it does
    not hold (items without a vector, another shard's items) mask nothing here."""
    if not len(seen_ids):
        return SeenItems(np.empty(0, np.int64), np.empty(0, np.int64))
    index = _cached(catalogue, "id_index", lambda: pd.Index(catalogue.item_ids.astype(object)))
    positions = index.get_indexer(seen_ids)
    rows = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    held = positions >= 0
    return SeenItems.from_pairs(rows[held], positions[held])


def recommend_users(
    users: UserBatch,
    catalogue: Catalogue,
    k: int,
    popularity_weight: float,
    block_mb: float,
    device: str = "cpu",
    mmr: tuple[float, int] | None = None,
    precision: str = "float32",
    explain: bool = False,
) -> dict[str, np.ndarray]:
    """A batch of users -> the OUTPUT_COLUMNS, as arrays.

    ``mmr`` (trade-off, pool): the best ``pool`` items per user are re-ranked by MMR and k kept.
    ``precision``: the fast pass's (see top_k); the lists and scores do not depend on it.
    ``explain``: fill because_item_id / because_similarity (see ``explain_picks``); else they are null.
    """
    seen = seen_positions(users.seen_ids, users.seen_counts, catalogue)
    depth = candidate_depth(k, mmr)
    parts = {c: [np.empty(0, t)] for c, t in OUTPUT_DTYPES.items()}
    positions, user_rows = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for rows, idx, score, sim, boost in top_k(
        users.vectors, users.segments, seen, catalogue, depth, popularity_weight, block_mb, device, precision
    ):
        positions.append(idx - catalogue.offset)
        user_rows.append(rows)
        parts["user_id"].append(users.ids[rows])
        parts["rank"].append(_ranks(rows))
        parts["item_id"].append(catalogue.item_ids[positions[-1]])
        parts["score"].append(score)
        parts["similarity"].append(sim)
        parts["popularity_boost"].append(boost)
    columns = {c: np.concatenate(v) for c, v in parts.items() if c not in EXPLANATION}
    if mmr and len(columns["user_id"]):
        frame, local = pd.DataFrame(columns), np.concatenate(positions)
        lists = [rerank_mmr(group, catalogue.vectors[local[group.index]], k, mmr[0])
                 for _, group in frame.groupby("user_id", sort=False)]
        columns = {c: v.to_numpy() for c, v in pd.concat(lists, ignore_index=True).items()}
    because = np.full(len(columns["user_id"]), -1, np.int64)
    similarity = np.full(len(because), np.nan)
    if explain and len(because) and len(seen.rows):
        if mmr:  # re-ranked: the rows' users and items found again by id
            index = _cached(catalogue, "id_index", lambda: pd.Index(catalogue.item_ids.astype(object)))
            rows = pd.Index(users.ids.astype(object)).get_indexer(columns["user_id"])
            picks = index.get_indexer(columns["item_id"])
        else:  # in the order top_k gave them
            rows, picks = np.concatenate(user_rows), np.concatenate(positions)
        because, similarity = explain_picks(rows, picks, seen, catalogue.vectors)
    ids = np.full(len(because), None, object)
    ids[because >= 0] = catalogue.item_ids[because[because >= 0]]
    return {**columns, "because_item_id": ids, "because_similarity": similarity}


EXPLANATION = ("because_item_id", "because_similarity")


def explain_picks(
    rows: np.ndarray, picks: np.ndarray, seen: SeenItems, vectors: np.ndarray, budget: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """For each recommended (user row, catalogue position): the position of the item in that user's
    history most similar to it (ties: the lower position, i.e. the smaller id) and the cosine between
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
    at = 0
    while at < len(by_length):
        end = at + 1
        while end < len(by_length) and (end + 1 - at) * max(h_len[by_length[end]], r_len[by_length[at:end + 1]].max()) <= budget:
            end += 1
        block = by_length[at:end]
        at = end
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


def recommend_frame(
    batch: pd.DataFrame,
    catalogue: Catalogue,
    k: int,
    popularity_weight: float,
    block_mb: float,
    device: str = "cpu",
    mmr: tuple[float, int] | None = None,
    precision: str = "float32",
    explain: bool = False,
) -> pd.DataFrame:
    """One pandas batch of users (user_id, vector, segment_id, seen item ids) -> rows of OUTPUT_COLUMNS."""
    users = UserBatch.from_pandas(batch, catalogue.vectors.shape[1])
    return pd.DataFrame(recommend_users(users, catalogue, k, popularity_weight, block_mb, device, mmr, precision,
                                        explain))


def recommend_batch(
    batch: pa.RecordBatch,
    catalogue: Catalogue,
    k: int,
    popularity_weight: float,
    block_mb: float,
    device: str = "cpu",
    mmr: tuple[float, int] | None = None,
    precision: str = "float32",
    explain: bool = False,
) -> pa.RecordBatch:
    """recommend_frame for mapInArrow: Arrow in, Arrow out, no pandas conversion either way."""
    users = UserBatch.from_arrow(batch, catalogue.vectors.shape[1])
    columns = recommend_users(users, catalogue, k, popularity_weight, block_mb, device, mmr, precision, explain)
    # from_pandas: a NaN similarity (no history to explain with) is written as null
    return pa.RecordBatch.from_arrays([pa.array(columns[f.name], type=f.type, from_pandas=True) for f in ARROW_SCHEMA],
                                      schema=ARROW_SCHEMA)


def _ranks(rows: np.ndarray) -> np.ndarray:
    """1, 2, 3... within each run of equal row numbers (rows are grouped, ranks in order)."""
    if len(rows) == 0:
        return np.empty(0, np.int32)
    starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    return (np.arange(len(rows)) - run_start + 1).astype(np.int32)
