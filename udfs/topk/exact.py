"""Exact top-k selection: a fast pass picks candidates, an exact pass scores them, a bound proves it.

score = cosine(user, item) + popularity_weight * popularity(user's segment, item)
A fast pass (one matrix product per block of users, float32 or bfloat16) picks candidates, an exact
float64 pass scores them, and a row is kept only once its error bound proves that no item left out
could beat its k-th item (see "candidate precision" below). Candidates are ordered by (-score, index),
so the same inputs give the same lists and scores whatever the block, shard or precision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from segrec.udfs.topk.catalogue import Catalogue, SeenItems, _cached, catalogue_tensors

if TYPE_CHECKING:
    from segrec.udfs.topk.settings import TopKSettings

# Users selected in this process, and how many of them the first candidate pass could not prove
# (benchmarks/topk_precision.py reports the share).
SELECTION = {"users": 0, "widened": 0}


def block_rows(n_items: int, block_mb: float, depth: int = 0, dim: int = 0, score_bytes: int = 12) -> int:
    """Users per block so that the block's memory stays under ``block_mb`` for a catalogue of ``n_items`` items
    of ``dim`` values, keeping ``depth`` per user: per user, ``score_bytes`` per item (12: about 3 score rows
    of float32, as a boost's sum makes them; 6 for a bfloat16 pass without a boost: its 2-byte scores, a copy
    of the rows still to prove, their group maxima), plus its first candidates' vectors gathered for the exact
    pass (float32, and float64 working copies: 12 bytes per value)."""
    per_user = max(n_items, 1) * score_bytes + candidate_count(depth, n_items) * dim * 12
    return max(1, int(block_mb * 2**20 // per_user))


def bytes_per_score(precision: str, boost: bool) -> int:
    """block_rows' bytes per (user, item) score for the pass's ``precision``: 6 for bfloat16 without a ``boost``
    (2-byte scores), else 12 (the boost's float32 sum). The larger blocks this gives bfloat16 matter: AMX's
    products ran faster on the taller blocks (benchmarks/topk_parts.py, part 5)."""
    return 6 if precision == "bfloat16" and not boost else 12


# Extra candidates in the first pass, beyond depth + depth // 2: benchmarks/topk_precision.py --margins
# compares margins (how many users each widens, and the time); 8 was the fastest, and without the
# depth // 2 term most users needed widening at large k.
CANDIDATE_MARGIN = 8


def candidate_count(depth: int, n_items: int) -> int:
    """Candidates per user in the first selection pass over ``n_items`` items: enough beyond ``depth``
    that the proof below usually holds at once (rows where it does not are widened)."""
    return min(n_items, depth + depth // 2 + CANDIDATE_MARGIN) if depth > 0 else 0


@dataclass(frozen=True)
class ItemNorms:
    """The catalogue's largest norms (float64): of its vectors, of their bfloat16 roundings, and of the
    rounding errors (vector - its bfloat16 rounding), which the error bound is built from."""

    vector: float
    rounded: float
    rounding_error: float


def bfloat16_rounded(x: np.ndarray) -> np.ndarray:
    """The float32 rows ``x`` (n, d) rounded to bfloat16 (to nearest, as the fast pass does), as float64."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).bfloat16().double().numpy()


def item_norms(vectors: np.ndarray, rows: int = 2048) -> ItemNorms:
    """The largest norms of the catalogue's ``vectors`` (n, d): exact, rounded to bfloat16, and of the
    rounding error, which the error bound needs. In chunks of ``rows``, so that the float64 working
    copies stay small beside the catalogue."""
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
    """Per row of ``users`` (p, d), B such that every item whose fast score is at most ``fast_cut`` (p,)
    has an exact score of at most fast_cut + B (so no item left out of the candidates can beat an exact
    score above it), for the pass's ``precision``, the catalogue's norms ``items`` and a popularity boost
    of at most ``boost_max``.

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


def fast_similarities(block: np.ndarray, catalogue: Catalogue, device: str, precision: str) -> torch.Tensor:
    """(b, n) similarities of the users ``block`` (b, d) to every item of ``catalogue``, from the fast
    pass on ``device`` in its ``precision`` (bfloat16 values convert to float32 exactly; the selection
    reads them as they are)."""
    if precision == "bfloat16":
        # The bfloat16 copy is held as contiguous columns (d, n), not rows multiplied through a transposed
        # view: oneDNN's bfloat16 products (AMX) ran 1.07-1.09x faster so (benchmarks/topk_parts.py,
        # part 1), at no extra memory, since the bfloat16 copy is made either way.
        columns = _cached(catalogue, f"{device}:bfloat16:columns", lambda: bfloat16_columns(catalogue, device))
        return torch.from_numpy(block).to(device).bfloat16() @ columns
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


def bfloat16_columns(catalogue: Catalogue, device: str) -> torch.Tensor:
    """The ``catalogue`` rounded to bfloat16 on ``device`` as contiguous columns (d, n), converted straight into its one
    allocation (``.T.bfloat16().contiguous()`` made a second bfloat16 copy on the way, which showed
    in benchmarks/memory_bounds.py's peaks)."""
    vectors, _ = catalogue_tensors(catalogue, device)
    return torch.empty(vectors.shape[::-1], dtype=torch.bfloat16, device=vectors.device).copy_(vectors.T)


EXACT_USERS = 16  # users per gather in exact_scores on the CPU


def exact_scores(
    users: np.ndarray, candidates: np.ndarray, segments: np.ndarray, catalogue: Catalogue, device: str, weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """float64 (similarity, boost), each (p, m), of each of ``users`` (p, d) with its ``candidates``
    (p, m) catalogue positions, on ``device``; the boost is ``weight`` x the item's popularity in the
    user's segment (``segments`` (p,), -1: none).

    A similarity is the float64 sum of exact float32 products, summed the same way whatever the number
    of rows and candidates (a batched matrix product switches kernels with the shape, and its last bits
    with them), so a user's scores do not depend on its block, shard or precision.
    """
    if device == "cpu":
        # A few users at a time, so that their gathered vectors are still in cache when einsum reads them
        # (benchmarks/topk_parts.py, part 5, against one gather for the whole block).
        sims = np.empty(candidates.shape)
        for at in range(0, len(users), EXACT_USERS):
            part = slice(at, at + EXACT_USERS)
            sims[part] = np.einsum("pmd,pd->pm", catalogue.vectors[candidates[part]], users[part], dtype=np.float64)
    else:
        vectors, _ = catalogue_tensors(catalogue, device)
        gathered = vectors[torch.from_numpy(candidates).to(device)].double()
        sims = (gathered * torch.from_numpy(users).to(device).double().unsqueeze(1)).sum(dim=2).cpu().numpy()
    boosts = np.zeros_like(sims)
    if weight > 0 and catalogue.popularity is not None:
        has = segments >= 0
        boosts[has] = weight * catalogue.popularity[candidates[has], segments[has][:, None]].astype(np.float64)
    return sims, boosts


@dataclass
class _Block:
    """One block of users under selection: their vectors and segments, their fast scores (b, n) on the
    device, per row how many items to keep and how many it has not seen, and the error bound of the
    fast pass for given rows (``bound(rows, fast_cut)``)."""

    users: np.ndarray
    segments: np.ndarray
    scores: torch.Tensor
    take: np.ndarray
    unseen: np.ndarray
    bound: Callable[[np.ndarray, np.ndarray], np.ndarray]


def top_k(
    users: np.ndarray, segments: np.ndarray, seen: SeenItems, catalogue: Catalogue, settings: TopKSettings
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per block of users, flat arrays ordered by user row then rank:
    (user rows, global item indices, scores, similarities, boosts), scores exact in float64, the best
    ``settings.depth`` unseen items per user.

    ``seen``: the users' seen items, as positions in this catalogue (SeenItems.from_lists builds it from
    an array per user); ``segments`` the user's segment (-1: none). The fast pass (``settings.precision``),
    masking and candidate selection run on ``settings.device`` (a CUDA device, or "cpu"); only
    candidates come back to host memory.
    """
    k, weight, block_mb, device = settings.depth, settings.popularity_weight, settings.block_mb, settings.device
    n, dim = catalogue.vectors.shape
    _, popularity = catalogue_tensors(catalogue, device)
    use_boost = weight > 0 and popularity is not None
    step = block_rows(n, block_mb, k, dim, bytes_per_score(settings.precision, use_boost))
    norms = _cached(catalogue, "norms", lambda: item_norms(catalogue.vectors))
    boost_max = (
        weight * float(catalogue.popularity.max(initial=0.0)) if use_boost and catalogue.popularity is not None else 0.0
    )
    for start in range(0, len(users), step):
        vectors = users[start : start + step]
        b = len(vectors)
        block_segments = segments[start : start + step]
        scores = fast_similarities(vectors, catalogue, device, settings.precision)
        if use_boost and popularity is not None:
            scores = scores.float()  # the boost is added in float32 (the error bound counts that sum)
            on_device = torch.from_numpy(block_segments).to(device)
            has = on_device >= 0
            scores[has] += weight * popularity[:, on_device[has]].T

        seen_rows, seen_items = seen.block(start, start + b)
        if len(seen_rows):
            scores[torch.from_numpy(seen_rows).to(device), torch.from_numpy(seen_items).to(device)] = -np.inf
        unseen = n - np.bincount(seen_rows, minlength=b)

        def bound(rows: np.ndarray, fast_cut: np.ndarray, vectors=vectors) -> np.ndarray:
            return excluded_score_bound(settings.precision, vectors[rows], norms, fast_cut, boost_max=boost_max)

        block = _Block(vectors, block_segments, scores, np.minimum(k, unseen), unseen, bound)
        rows, idx, sims, boosts = _select_block(block, catalogue, settings, k)
        yield rows + start, idx + catalogue.offset, sims + boosts, sims, boosts


def _select_block(block: _Block, catalogue: Catalogue, settings: TopKSettings, k: int) -> tuple[np.ndarray, ...]:
    """Flat (block rows, positions, similarities, boosts) of each row's best items, ordered by row then
    rank: rows are selected from their best ``m`` fast scores and widened until every row is proven exact."""
    n, dim = catalogue.vectors.shape
    found: list[tuple[np.ndarray, ...]] = []
    pending = np.flatnonzero(block.take > 0)
    m = candidate_count(k, n)
    SELECTION["users"] += len(pending)
    while len(pending):
        chunk = max(1, int(settings.block_mb * 2**20 // (m * dim * 12)))  # gathered vectors stay under the cap
        unproven, needed = [], []
        for at in range(0, len(pending), chunk):
            rows = pending[at : at + chunk]
            proven, picked, need = _select(block, rows, m, catalogue, settings)
            found.append(picked)
            unproven.append(rows[~proven])
            needed.append(need[~proven])
        pending = np.concatenate(unproven)
        if m == candidate_count(k, n):  # after the first pass
            SELECTION["widened"] += len(pending)
        if len(pending):
            # Widen to what the bound says the unproven rows need, and at least double.
            m = min(n, max(2 * m, int(np.concatenate(needed).max()) + 1))
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0)
    rows, positions, sims, boosts = (np.concatenate([f[j] for f in found]) for j in range(4))
    # A row is proven in one pass only, so a stable sort by row keeps each row's items in rank order.
    order = np.argsort(rows, kind="stable")
    return rows[order], positions[order], sims[order], boosts[order]


GROUP = 8  # columns per group in best_fast_scores (benchmarks/topk_parts.py, part 1, compares 8, 16 and 32)


def best_fast_scores(scores: torch.Tensor, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``count`` best scores (float32, best first) and their columns, on the host.

    On the CPU, torch.topk over every column cost a large share of the bfloat16 product's time
    (benchmarks/topk_parts.py, part 1), so the columns are first cut into GROUP strided groups
    (group j: columns j, j + w, j + 2w, ... with w = n // GROUP)
    and only the ``count`` groups with the highest maxima, plus the few columns past GROUP * w, are
    searched. That keeps the same values: a column outside them, with score x, has a group maximum
    below ``count`` other groups' maxima, so ``count`` searched scores are >= x and x is not needed.
    Among equal scores, which column comes back is arbitrary (as with torch.topk); the exact pass
    breaks ties. A GPU's topk is fast: it is used there as it is.
    """
    n = scores.shape[1]
    w = n // GROUP
    if scores.device.type != "cpu" or w < 4 * count:
        top_values, top_columns = torch.topk(scores, count, dim=1, sorted=True)
        return top_values.float().cpu().numpy(), top_columns.cpu().numpy()
    if scores.dtype == torch.bfloat16:
        maxima = bfloat16_group_keys(scores[:, : GROUP * w].unflatten(1, (GROUP, w)), count)
    else:
        maxima = scores[:, : GROUP * w].unflatten(1, (GROUP, w)).amax(dim=1).float().numpy()
    columns = _group_columns(largest_columns(maxima, count), w, GROUP, n)
    values = scores.gather(1, torch.from_numpy(columns)).float().numpy()
    best = np.argpartition(values, values.shape[1] - count, axis=1)[:, values.shape[1] - count :]
    values, columns = np.take_along_axis(values, best, axis=1), np.take_along_axis(columns, best, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(columns, order, axis=1)


def bfloat16_group_keys(groups: torch.Tensor, count: int) -> np.ndarray:
    """Per row of ``groups`` (b, GROUP, w) bfloat16 and per group, an integer key whose ``count`` largest
    are the ``count`` largest group maxima, as best_fast_scores needs them.

    A bfloat16's bits, read as int16, are ordered as its values for values >= 0, and every negative
    value (sign bit set) reads below them. So the largest raw bits of a group are its maximum whenever
    that maximum is >= 0, and a row with at least ``count`` such groups gets their ``count`` largest
    right: the groups left out have lower maxima, negative or not. torch's int16 amax ran about twice
    as fast as its bfloat16 one (benchmarks/topk_parts.py, part 5). Rows with fewer (a user whose scores
    are mostly negative) use keys ordered for every value: the magnitude bits of negatives flipped."""
    bits = groups.view(torch.int16)
    keys = bits.amax(dim=1).numpy()
    short = np.count_nonzero(keys >= 0, axis=1) < count
    if short.any():
        negatives = bits[torch.from_numpy(short)]
        keys[short] = (negatives ^ ((negatives >> 15) & 0x7FFF)).amax(dim=1).numpy()
    # as int32: np.argpartition (largest_columns) took 0.044 s per 12,500 users on 32-bit keys against
    # 0.074 s on 16-bit ones in a profile (numpy's vectorised selection covers 32- and 64-bit types)
    return keys.astype(np.int32)


MAXIMA_GROUP = 8  # the second level's group size (benchmarks/topk_parts.py, part 1)


def largest_columns(values: np.ndarray, count: int) -> np.ndarray:
    """Per row of ``values`` (float32, or bfloat16_group_keys' integers), the columns of its ``count``
    largest values, in no order (among equal values, any). The group maxima of best_fast_scores are
    searched the same way again: the best of MAXIMA_GROUP strided groups, so np.argpartition reads a
    fraction of each row (over every column it cost more than the product's group maxima themselves)."""
    b, n = values.shape
    w = n // MAXIMA_GROUP
    if w < 2 * count:
        return np.argpartition(values, n - count, axis=1)[:, n - count :]
    maxima = values[:, : MAXIMA_GROUP * w].reshape(b, MAXIMA_GROUP, w).max(axis=1)
    groups = np.argpartition(maxima, w - count, axis=1)[:, w - count :]
    columns = _group_columns(groups, w, MAXIMA_GROUP, n)
    picked = np.take_along_axis(values, columns, axis=1)
    best = np.argpartition(picked, picked.shape[1] - count, axis=1)[:, picked.shape[1] - count :]
    return np.take_along_axis(columns, best, axis=1)


def _group_columns(groups: np.ndarray, w: int, group: int, n: int) -> np.ndarray:
    """The columns of the chosen strided groups (group j: j, j + w, ..., j + (group - 1) w), and the
    columns past the last whole group, which belong to none."""
    b = len(groups)
    columns = (groups[:, None, :] + w * np.arange(group)[:, None]).reshape(b, -1)
    if n > group * w:
        columns = np.hstack([columns, np.broadcast_to(np.arange(group * w, n), (b, n - group * w))])
    return columns


def _select(
    block: _Block, rows: np.ndarray, m: int, catalogue: Catalogue, settings: TopKSettings
) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """The best ``block.take`` items of each of ``rows`` (block rows) from their ``m`` best fast scores,
    rescored exactly. Returns per row whether this proves it exact, the proven rows' (rows, positions,
    similarities, boosts) as flat arrays by row then rank, and per unproven row the candidate count the
    bound says could prove it."""
    # rows is an ordered subset of the block's rows: all of them needs no copy.
    scores = block.scores
    row_scores = scores if len(rows) == len(scores) else scores[torch.from_numpy(rows).to(scores.device)]
    n = scores.shape[1]
    fast, candidates = best_fast_scores(row_scores, min(m + 1, n))
    # The best fast score left out (the (m+1)-th); none when every item is a candidate.
    cut = fast[:, m] if m < n else np.full(len(rows), -np.inf, np.float32)
    fast, candidates = fast[:, :m], candidates[:, :m]
    sims, boosts = exact_scores(
        block.users[rows], candidates, block.segments[rows], catalogue, settings.device, settings.popularity_weight
    )
    exact = np.where(np.isneginf(fast), -np.inf, sims + boosts)  # masked (seen) items are never picked
    order = np.lexsort((candidates, -exact), axis=1)
    candidates, exact, sims, boosts = (np.take_along_axis(a, order, axis=1) for a in (candidates, exact, sims, boosts))
    want = block.take[rows]
    kth = exact[np.arange(len(rows)), want - 1]
    # Every unseen item is a candidate, or no item left out can reach the k-th exact score.
    proven = (block.unseen[rows] <= m) | (cut + block.bound(rows, cut) < kth)
    keep = proven[:, None] & (np.arange(candidates.shape[1]) < want[:, None])  # row-major: by row, then rank
    picked = (np.broadcast_to(rows[:, None], keep.shape)[keep], candidates[keep], sims[keep], boosts[keep])
    needed = np.zeros(len(rows), np.int64)
    if not proven.all():
        reach = torch.from_numpy(kth - block.bound(rows, kth)).to(device=settings.device, dtype=torch.float32)
        open_rows = torch.from_numpy(~proven).to(settings.device)
        needed[~proven] = (row_scores[open_rows].float() >= reach[open_rows].unsqueeze(1)).sum(dim=1).cpu().numpy()
    return proven, picked, needed
