"""Segment ids that keep their meaning from one run to the next, and what moved between runs.

A refit numbers its segments 0..k-1 in whatever order MLlib found them. Before anything is written,
those segments are matched one-to-one to the previous run's by member overlap (the assignment problem
over Jaccard, ``scipy.optimize.linear_sum_assignment``). A segment whose best match reaches
``segment.keep_id_jaccard`` keeps the previous id; every other segment gets an id never issued before,
and a previous id left unmatched is retired for good. The ids issued, and the date each first
appeared, travel with the saved segment model (``segment_ids.json`` beside it), so ``assign`` mode and
the next night read them back. A segment model written before these files existed numbers its
segments 0..k-1, which is how that version wrote them.

Status of each segment tonight (``segment_summary``): ``kept`` (matched, same id), ``merged`` (kept, and
absorbed most of the returning members of retired ids, listed in ``status_ids``), ``split`` (a new id
most of whose returning members come from one previous segment, in ``status_ids``), ``new``. An id
retired tonight has a row of its own on the night it retires (``retired``, size 0, ``status_ids``: the
segment most of its members went to); ``segment_transitions`` shows where all of them went.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy.optimize import linear_sum_assignment

from segrec.jobs.errors import InputError

IDS_FILE = "segment_ids.json"  # beside the saved segment model


@dataclass(frozen=True)
class SegmentIds:
    """The stable id of each fitted centre (``ids[i]`` for centre i), the next id never issued, the
    run date each id first appeared and the run date of the fit (None where an older version did not
    record them)."""

    ids: list[int]
    next_id: int
    first_seen: dict[int, str | None] = field(default_factory=dict)
    fitted_on: str | None = None

    @classmethod
    def numbered(cls, k: int) -> SegmentIds:
        """The ids a model without ``segment_ids.json`` has: 0..``k``-1, as segrec numbered them before."""
        return cls(list(range(k)), k, dict.fromkeys(range(k)))

    def to_json(self) -> bytes:
        """The file saved beside the model."""
        document = {
            "ids": self.ids,
            "next_id": self.next_id,
            "first_seen": {str(i): d for i, d in sorted(self.first_seen.items())},
            "fitted_on": self.fitted_on,
        }
        return json.dumps(document, indent=2).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, where: str, k: int) -> SegmentIds:
        """Read ``data`` (the file at ``where``) for a model of ``k`` centres; exit 2 naming the file
        and the field when it is not what segrec writes."""
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{where}: not a JSON document ({exc}): re-run `segrec segment`") from None
        if not isinstance(document, dict):
            raise InputError(f"{where}: expected a JSON object with ids, next_id and first_seen")
        ids, next_id = document.get("ids"), document.get("next_id")
        if not isinstance(ids, list) or len(ids) != k or not all(isinstance(i, int) and i >= 0 for i in ids):
            raise InputError(f"{where}: field 'ids' must list {k} ids (one per centre of the model), found {ids!r}")
        if len(set(ids)) != k:
            raise InputError(f"{where}: field 'ids' repeats an id: {ids}")
        if not isinstance(next_id, int) or next_id <= max(ids, default=-1):
            raise InputError(f"{where}: field 'next_id' must be an integer above every id, found {next_id!r}")
        seen = document.get("first_seen", {})
        if not isinstance(seen, dict):
            raise InputError(f"{where}: field 'first_seen' must map ids to dates")
        fitted_on = document.get("fitted_on")
        if fitted_on is not None and not isinstance(fitted_on, str):
            raise InputError(f"{where}: field 'fitted_on' must be a run date, found {fitted_on!r}")
        return cls(ids, next_id, {i: seen.get(str(i)) for i in ids}, fitted_on)


@dataclass(frozen=True)
class Continuity:
    """What matching tonight's segments to the previous run's decided.

    ids: the stable id of each centre; ``status``, ``status_ids``, ``matched_jaccard`` and
    ``previous_size`` by stable id (``previous_size`` None for a new id); ``retired``: previous ids
    not carried on, each with the id most of its returning members went to (``went_to``), its previous
    size and first date; ``agreement``: the share of users in both runs whose segment kept its id
    (None without a previous run)."""

    ids: SegmentIds
    status: dict[int, str]
    status_ids: dict[int, list[int]]
    matched_jaccard: dict[int, float | None]
    previous_size: dict[int, int | None]
    retired: list[dict]
    agreement: float | None


def overlap(previous: DataFrame | None, current: DataFrame) -> list[tuple[int | None, int | None, int]]:
    """(previous segment, current segment, users) for every pair that shares users, with None for a
    user absent from one run (new tonight, or gone since): one small aggregation, collected."""
    now = current.select("user_id", F.col("segment_id").alias("to_segment"))
    if previous is None:
        rows = now.groupBy("to_segment").count().collect()
        return [(None, r["to_segment"], int(r["count"])) for r in rows]
    before = previous.select("user_id", F.col("segment_id").alias("from_segment"))
    rows = before.join(now, on="user_id", how="full_outer").groupBy("from_segment", "to_segment").count().collect()
    return sorted(
        ((r["from_segment"], r["to_segment"], int(r["count"])) for r in rows),
        key=lambda t: (t[0] is None, t[0] or 0, t[1] is None, t[1] or 0),
    )


def jaccard_table(pairs: list[tuple[int | None, int | None, int]], olds: list[int], k: int) -> np.ndarray:
    """(len(olds), k) Jaccard of each previous segment's members with each current centre's, from the
    overlap ``pairs``."""
    inter = np.zeros((len(olds), k))
    old_size, new_size = np.zeros(len(olds)), np.zeros(k)
    at = {o: i for i, o in enumerate(olds)}
    for old, new, users in pairs:
        if old is not None:
            old_size[at[old]] += users
        if new is not None:
            new_size[new] += users
        if old is not None and new is not None:
            inter[at[old], new] += users
    union = old_size[:, None] + new_size[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match(
    pairs: list[tuple[int | None, int | None, int]],
    k: int,
    previous_ids: SegmentIds | None,
    threshold: float,
    run_date: str,
) -> Continuity:
    """Stable ids for a fresh fit of ``k`` centres numbered 0..k-1, from ``pairs`` (:func:`overlap`
    of the previous run's segments, by their stable ids, with tonight's by centre). A centre matched
    one-to-one (maximum total Jaccard) with Jaccard of at least ``threshold`` keeps the previous id;
    the others get ids from ``previous_ids.next_id`` on (or above every previous id when the previous
    model recorded none). ``run_date`` is what a new id's ``first_seen`` and the fit's date say."""
    olds = sorted({o for o, _, _ in pairs if o is not None})
    table = jaccard_table(pairs, olds, k)
    kept: dict[int, tuple[int, float]] = {}  # centre -> (previous id, Jaccard)
    if olds:
        rows, cols = linear_sum_assignment(table, maximize=True)
        kept = {
            int(c): (olds[r], float(table[r, c])) for r, c in zip(rows, cols, strict=True) if table[r, c] >= threshold
        }
    next_id = max([previous_ids.next_id if previous_ids else 0, *(o + 1 for o in olds)])
    first_seen = dict(previous_ids.first_seen) if previous_ids else {}
    ids = []
    for centre in range(k):
        if centre in kept:
            ids.append(kept[centre][0])
        else:
            ids.append(next_id)
            first_seen[next_id] = run_date
            next_id += 1
    issued = SegmentIds(ids, next_id, {i: first_seen.get(i) for i in ids}, run_date)

    flows = _returning_flows(pairs, olds, k)
    retired_ids = [o for o in olds if o not in {p for p, _ in kept.values()}]
    went_to = {o: ids[int(np.argmax(flows[olds.index(o)]))] for o in retired_ids if flows[olds.index(o)].sum() > 0}
    status: dict[int, str] = {}
    status_ids: dict[int, list[int]] = {}
    for centre, stable in enumerate(ids):
        if centre in kept:
            merged = sorted(o for o, target in went_to.items() if target == stable)
            status[stable], status_ids[stable] = ("merged", merged) if merged else ("kept", [])
            continue
        returning = flows[:, centre]
        if len(olds) and returning.sum() > 0 and returning.max() / returning.sum() >= 0.5:
            status[stable], status_ids[stable] = "split", [olds[int(np.argmax(returning))]]
        else:
            status[stable], status_ids[stable] = "new", []
    return Continuity(
        ids=issued,
        status=status,
        status_ids=status_ids,
        matched_jaccard={ids[c]: (round(kept[c][1], 4) if c in kept else None) for c in range(k)},
        previous_size=_previous_sizes(pairs, {ids[c]: kept[c][0] for c in kept}),
        retired=[
            {
                "segment_id": o,
                "went_to": went_to.get(o),
                "previous_size": _previous_sizes(pairs, {o: o})[o],
                "first_seen": first_seen.get(o),
            }
            for o in retired_ids
        ],
        agreement=_agreement(pairs, {c: p for c, (p, _) in kept.items()}),
    )


def carried(pairs: list[tuple[int | None, int | None, int]], ids: SegmentIds) -> Continuity:
    """The continuity of segments placed with a saved model's centres (``assign`` mode, or a night that
    did not refit), from ``pairs`` as :func:`match` takes them: every id is the model's ``ids``,
    ``kept`` where the previous run had it (else ``new``), its matched Jaccard measured between the
    same id on both nights."""
    olds = sorted({o for o, _, _ in pairs if o is not None})
    table = jaccard_table(pairs, olds, len(ids.ids))
    same = {c: stable for c, stable in enumerate(ids.ids) if stable in olds}
    return Continuity(
        ids=ids,
        status={stable: ("kept" if stable in olds else "new") for stable in ids.ids},
        status_ids={stable: [] for stable in ids.ids},
        matched_jaccard={
            stable: (round(float(table[olds.index(stable), c]), 4) if c in same else None)
            for c, stable in enumerate(ids.ids)
        },
        previous_size=_previous_sizes(pairs, {stable: stable for stable in same.values()}),
        retired=[
            {"segment_id": o, "went_to": None, "previous_size": _previous_sizes(pairs, {o: o})[o], "first_seen": None}
            for o in olds
            if o not in ids.ids
        ],
        agreement=_agreement(pairs, same),
    )


def in_stable_ids(pairs: list[tuple[int | None, int | None, int]], ids: SegmentIds) -> list[tuple]:
    """``pairs`` (previous stable id, tonight's centre, users) with tonight's centre as its stable id in ``ids``."""
    return [(old, None if new is None else ids.ids[new], users) for old, new, users in pairs]


def _returning_flows(pairs: list[tuple[int | None, int | None, int]], olds: list[int], k: int) -> np.ndarray:
    flows = np.zeros((len(olds), k))
    for old, new, users in pairs:
        if old is not None and new is not None:
            flows[olds.index(old), new] += users
    return flows


def _previous_sizes(pairs: list[tuple[int | None, int | None, int]], previous_of: dict[int, int]) -> dict:
    sizes: dict[int, int] = {}
    for old, _, users in pairs:
        if old is not None:
            sizes[old] = sizes.get(old, 0) + users
    return {stable: sizes.get(old) for stable, old in previous_of.items()}


def _agreement(pairs: list[tuple[int | None, int | None, int]], previous_of_centre: dict[int, int]) -> float | None:
    both = sum(users for old, new, users in pairs if old is not None and new is not None)
    if not both:
        return None
    same = sum(
        users for old, new, users in pairs if old is not None and new is not None and previous_of_centre.get(new) == old
    )
    return round(same / both, 6)


def relabel(df: DataFrame, ids: list[int], columns: tuple[str, ...], arrays: tuple[str, ...] = ()) -> DataFrame:
    """``df`` with centre numbers in ``columns`` (ints) and ``arrays`` (arrays of ints) replaced by the
    stable ``ids`` (``ids[i]`` for centre i); a null stays null."""
    lookup = F.array(*[F.lit(int(i)) for i in ids])

    def stable(column):
        return F.element_at(lookup, column + 1).cast("int")  # null in, null out

    out = df
    for name in columns:
        out = out.withColumn(name, stable(F.col(name)))
    for name in arrays:
        out = out.withColumn(name, F.transform(F.col(name), stable))
    return out


def transitions(pairs: list[tuple[int | None, int | None, int]], min_users: int) -> list[tuple]:
    """The ``segment_transitions`` rows from ``pairs`` in stable ids on both sides: (from, to, users,
    pooled). None on the from side is a user new tonight, on the to side a user gone since. A cell of
    fewer than ``min_users`` users (the portraits' rule) is not shown on its own: such cells are
    summed into one row with both sides None and pooled true, so the users still add up."""
    rows = [(o, n, users, False) for o, n, users in pairs if users >= min_users]
    small = sum(users for _, _, users in pairs if users < min_users)
    if small:
        rows.append((None, None, small, True))
    return rows


def centre_shift(previous: np.ndarray, current: np.ndarray, previous_ids: list[int], current_ids: list[int]) -> dict:
    """1 - cosine between the ``previous`` and the ``current`` centre of every stable id both have
    (``previous_ids``, ``current_ids``: each centre's id, in order)."""
    before = {i: previous[c] for c, i in enumerate(previous_ids)}
    shifts = {}
    for c, stable in enumerate(current_ids):
        if stable in before:
            a, b = before[stable], current[c]
            cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
            shifts[stable] = round(1.0 - cosine, 6)
    return shifts
