"""A batch of users in, their lists out: the Arrow (mapInArrow) and pandas adapters around one scorer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from segrec.udfs.errors import WorkerInputError
from segrec.udfs.schemas import RECOMMENDATION_DTYPES, RECOMMENDATIONS
from segrec.udfs.topk.approximate import ivf_top_k
from segrec.udfs.topk.catalogue import Catalogue, SeenItems, _cached, seen_positions
from segrec.udfs.topk.exact import top_k
from segrec.udfs.topk.mmr import rerank_mmr
from segrec.udfs.topk.reasons import explain_picks
from segrec.udfs.topk.settings import TopKSettings

# The columns that explain a recommendation rather than rank it.
EXPLANATION = ("because_item_id", "because_similarity", "learned_similarity")


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
    def from_arrow(cls, batch: pa.RecordBatch, dim: int) -> UserBatch:
        """From ``batch``, one of mapInArrow's record batches (user_id, vector, segment_id, seen): the vectors, of
        ``dim`` values each, and seen ids are read from Arrow's flat buffers (no per-user Python objects)."""
        ids = batch.column("user_id").to_numpy(zero_copy_only=False)
        vector = batch.column("vector")
        _check_vectors(ids, pc.fill_null(pc.list_value_length(vector), -1).to_numpy(), dim)
        seen = batch.column("seen")
        return cls(
            ids=ids,
            # writable (a copy of Arrow's read-only buffer, cheap beside scoring): torch warns on read-only arrays
            vectors=np.require(vector.flatten().to_numpy(zero_copy_only=False), np.float32, "W").reshape(-1, dim),
            segments=pc.fill_null(batch.column("segment_id"), -1).to_numpy(zero_copy_only=False).astype(np.int64),
            seen_ids=seen.flatten().to_numpy(zero_copy_only=False),
            seen_counts=pc.fill_null(pc.list_value_length(seen), 0).to_numpy().astype(np.int64),
        )

    @classmethod
    def from_pandas(cls, batch: pd.DataFrame, dim: int) -> UserBatch:
        """From a pandas ``batch`` (the sharded plan's, tests; user_id, vector, segment_id, seen): a numpy
        array or None per vector, of ``dim`` values, and per seen list."""
        ids = batch["user_id"].to_numpy()
        vectors = batch["vector"].to_numpy()
        _check_vectors(ids, np.fromiter((-1 if v is None else len(v) for v in vectors), np.int64, len(vectors)), dim)
        seen = batch["seen"].to_numpy()
        counts = np.fromiter((0 if a is None else len(a) for a in seen), np.int64, len(seen))
        flat = [a for a in seen if a is not None and len(a)]
        return cls(
            ids=ids,
            vectors=np.stack(vectors).astype(np.float32, copy=False)
            if len(vectors)
            else np.empty((0, dim), np.float32),
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
        raise WorkerInputError(
            f"recommend: user {ids[row]!r} has {found}; the item vectors have {dim} "
            f"({len(bad)} such user(s) in this batch)"
        )


def recommend_users(users: UserBatch, catalogue: Catalogue, settings: TopKSettings) -> dict[str, np.ndarray]:
    """A batch of ``users`` scored against ``catalogue`` -> the RECOMMENDATIONS columns, as arrays.

    The candidates come from the exact selection, or from the catalogue's IVF index when it has one
    (``approximate.ivf_top_k``). With MMR on, each user's best ``settings.mmr_pool`` items are re-ranked
    and k kept; the EXPLANATION columns come from ``explanations``. ``settings`` has its device and precision resolved
    (``TopKSettings.for_this_task``).
    """
    seen = seen_positions(users.seen_ids, users.seen_counts, catalogue)
    mmr, k = settings.mmr, settings.k
    parts = {c: [np.empty(0, t)] for c, t in RECOMMENDATION_DTYPES.items()}
    positions, user_rows = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    select = top_k if catalogue.ivf is None else ivf_top_k
    for rows, idx, score, sim, boost in select(users.vectors, users.segments, seen, catalogue, settings):
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
        lists = [
            rerank_mmr(group, catalogue.vectors[local[group.index]], k, mmr[0])
            for _, group in frame.groupby("user_id", sort=False)
        ]
        columns = {c: v.to_numpy() for c, v in pd.concat(lists, ignore_index=True).items()}
    if mmr and len(columns["user_id"]):  # re-ranked: the rows' users and items found again by id
        index = _cached(catalogue, "id_index", lambda: pd.Index(catalogue.item_ids.astype(object)))
        rows = pd.Index(users.ids.astype(object)).get_indexer(columns["user_id"])
        picks = index.get_indexer(columns["item_id"])
    else:  # in the order top_k gave them
        rows, picks = np.concatenate(user_rows), np.concatenate(positions)
    return {**columns, **explanations(users.vectors, rows, picks, seen, catalogue, settings)}


def explanations(
    users: np.ndarray,
    rows: np.ndarray,
    picks: np.ndarray,
    seen: SeenItems,
    catalogue: Catalogue,
    settings: TopKSettings,
) -> dict[str, np.ndarray]:
    """The EXPLANATION columns of the recommended (user row, catalogue position) pairs ``rows`` and
    ``picks``, for the unit vectors ``users`` (p, d), their ``seen`` items and ``catalogue``: the reason (with
    ``settings.explain``) and the learned part of the similarity (with ``settings.score_parts`` and a
    catalogue that has the parts); null where not asked for or not known."""
    n = len(rows)
    because, similarity, learned = np.full(n, -1, np.int64), np.full(n, np.nan), np.full(n, np.nan)
    if n and settings.explain and len(seen.rows):
        because, similarity = explain_picks(rows, picks, seen, catalogue.vectors)
    if n and settings.score_parts and catalogue.learned_part is not None:
        learned = learned_similarities(users, rows, catalogue.learned_part, picks)
    ids = np.full(n, None, object)
    ids[because >= 0] = catalogue.item_ids[because[because >= 0]]
    return {"because_item_id": ids, "because_similarity": similarity, "learned_similarity": learned}


def learned_similarities(
    users: np.ndarray, rows: np.ndarray, learned_part: np.ndarray, picks: np.ndarray, block: int = 4096
) -> np.ndarray:
    """u . learned part of each recommended (user row, catalogue position) in ``rows`` and ``picks``, for
    the user vectors ``users`` (p, d) and the catalogue's ``learned_part`` (n, d), float64: the part of the
    similarity that the item's learned embedding contributed (0 for a cold item). In blocks of
    ``block`` rows, so the gathered vectors stay small."""
    out = np.empty(len(rows))
    for start in range(0, len(rows), block):
        at = slice(start, start + block)
        out[at] = np.einsum("pd,pd->p", users[rows[at]], learned_part[picks[at]], dtype=np.float64)
    return out


def recommend_frame(batch: pd.DataFrame, catalogue: Catalogue, settings: TopKSettings) -> pd.DataFrame:
    """One pandas ``batch`` of users (user_id, vector, segment_id, seen item ids) scored against
    ``catalogue`` as ``settings`` ask -> rows of RECOMMENDATIONS."""
    users = UserBatch.from_pandas(batch, catalogue.vectors.shape[1])
    return pd.DataFrame(recommend_users(users, catalogue, settings))


def recommend_batch(batch: pa.RecordBatch, catalogue: Catalogue, settings: TopKSettings) -> pa.RecordBatch:
    """:func:`recommend_frame` for mapInArrow: the Arrow ``batch`` scored against ``catalogue`` as
    ``settings`` ask -> a record batch of RECOMMENDATIONS, no pandas conversion either way."""
    users = UserBatch.from_arrow(batch, catalogue.vectors.shape[1])
    columns = recommend_users(users, catalogue, settings)
    # from_pandas: a NaN similarity (no history to explain with) is written as null
    return pa.RecordBatch.from_arrays(
        [pa.array(columns[f.name], type=f.type, from_pandas=True) for f in RECOMMENDATIONS], schema=RECOMMENDATIONS
    )


def _ranks(rows: np.ndarray) -> np.ndarray:
    """1, 2, 3... within each run of equal row numbers (rows are grouped, ranks in order)."""
    if len(rows) == 0:
        return np.empty(0, np.int32)
    starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    return (np.arange(len(rows)) - run_start + 1).astype(np.int32)
