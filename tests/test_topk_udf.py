import numpy as np
import pandas as pd
import pytest
import torch
from conftest import topk_settings

from segrec.udfs.topk.batches import recommend_frame
from segrec.udfs.topk.catalogue import Catalogue, SeenItems
from segrec.udfs.topk.exact import (
    GROUP,
    MAXIMA_GROUP,
    best_fast_scores,
    block_rows,
    bytes_per_score,
    largest_columns,
    top_k,
)
from segrec.udfs.topk.settings import PRECISIONS


def catalogue(n=6, d=3, seed=0, popularity=None):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.array([f"i{j}" for j in range(n)])
    return Catalogue(item_ids=ids, vectors=vectors, popularity=popularity)


def brute_force(user, cat, seen, k, boost=None, scores=None):
    if scores is None:
        scores = cat.vectors @ user + (boost if boost is not None else 0)
    order = sorted((j for j in range(len(scores)) if j not in seen), key=lambda j: (-scores[j], j))
    return order[:k]


def per_user(blocks):
    """Split top_k's flat per-block arrays into (row, idx, score, sim, boost) per user."""
    out = []
    for rows, *arrays in blocks:
        for row in dict.fromkeys(rows.tolist()):
            mask = rows == row
            out.append((row, *(a[mask] for a in arrays)))
    return out


def test_exact_top_k_with_seen_items_masked():
    cat = catalogue(n=50, d=8)
    rng = np.random.default_rng(3)
    users = rng.standard_normal((7, 8)).astype(np.float32)
    seen = [np.array(sorted(rng.choice(50, size=int(rng.integers(0, 10)), replace=False))) for _ in range(7)]
    for row, idx, score, sim, boost in per_user(
        top_k(
            users,
            np.full(7, -1),
            SeenItems.from_lists(seen),
            cat,
            topk_settings(k=5, popularity_weight=0.0, block_mb=64),
        )
    ):
        assert idx.tolist() == brute_force(users[row], cat, set(seen[row]), 5)
        assert not set(idx) & set(seen[row])
        np.testing.assert_allclose(score, sim)
        assert (boost == 0).all()


def test_ties_are_broken_by_item_index():
    vectors = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], dtype=np.float32)
    cat = Catalogue(item_ids=np.array(["a", "b", "c", "d"]), vectors=vectors)
    ((_, idx, *_),) = per_user(
        top_k(
            np.array([[1, 0]], np.float32),
            np.array([-1]),
            SeenItems.from_lists([np.array([], np.int64)]),
            cat,
            topk_settings(k=2, popularity_weight=0.0, block_mb=64),
        )
    )
    assert idx.tolist() == [0, 2]  # a, c, d tie at 1.0: the two lowest indices win


def test_fewer_unseen_items_than_k():
    cat = catalogue(n=4)
    ((_, idx, *_),) = per_user(
        top_k(
            np.ones((1, 3), np.float32),
            np.array([-1]),
            SeenItems.from_lists([np.array([0, 2])]),
            cat,
            topk_settings(k=10, popularity_weight=0.0, block_mb=64),
        )
    )
    assert sorted(idx.tolist()) == [1, 3]
    rows, idx, *_ = next(
        top_k(
            np.ones((1, 3), np.float32),
            np.array([-1]),
            SeenItems.from_lists([np.arange(4)]),
            cat,
            topk_settings(k=10, popularity_weight=0.0, block_mb=64),
        )
    )
    assert idx.size == 0 and rows.size == 0


def test_block_size_does_not_change_results():
    cat = catalogue(n=200, d=16, seed=5)
    users = np.random.default_rng(9).standard_normal((30, 16)).astype(np.float32)
    seen = SeenItems.from_lists([np.array([], np.int64)] * 30)

    def lists(block_mb: float) -> list[list[int]]:
        settings = topk_settings(k=7, popularity_weight=0.0, block_mb=block_mb)
        return [r[1].tolist() for r in per_user(top_k(users, np.full(30, -1), seen, cat, settings))]

    big = lists(64)
    assert block_rows(200, 0.001) == 1
    # 2-byte scores (a bfloat16 pass without a boost) are counted at 6 bytes, float32 ones with a boost at 12
    assert block_rows(20_000, 64, score_bytes=bytes_per_score("bfloat16", False)) == 64 * 2**20 // (20_000 * 6)
    assert block_rows(20_000, 64) == 64 * 2**20 // (20_000 * 12)
    assert bytes_per_score("bfloat16", True) == bytes_per_score("float32", False) == 12
    tiny = lists(0.001)
    assert len(big) == 30
    assert big == tiny


def test_popularity_boost_of_the_users_segment():
    popularity = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype=np.float32)  # items x segments
    vectors = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2]], dtype=np.float32)
    cat = Catalogue(item_ids=np.array(["x", "y", "z"]), vectors=vectors, popularity=popularity)
    users = np.array([[1, 0], [1, 0], [1, 0]], np.float32)
    out = per_user(
        top_k(
            users,
            np.array([0, 1, -1]),
            SeenItems.from_lists([np.array([], np.int64)] * 3),
            cat,
            topk_settings(k=3, popularity_weight=0.5, block_mb=64),
        )
    )
    assert out[0][1].tolist() == [1, 0, 2]  # segment 0 boosts item y by 0.5
    np.testing.assert_allclose(out[0][4], [0.5, 0.0, 0.0])
    assert out[1][1].tolist() == [0, 1, 2]  # segment 1 boosts item x
    assert out[2][1].tolist() == [0, 1, 2] and (out[2][4] == 0).all()  # no segment: no boost


def test_recommend_frame_shapes_rows_per_user():
    cat = catalogue(n=5)
    batch = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "vector": [np.ones(3), -np.ones(3)],
            "segment_id": [None, None],
            "seen": [["i0", "i1", "not-in-catalogue"], None],
        }
    )
    out = recommend_frame(batch, cat, topk_settings(k=3, popularity_weight=0.0, block_mb=64))
    assert out.groupby("user_id").size().to_dict() == {"u1": 3, "u2": 3}
    assert out[out.user_id == "u1"]["rank"].tolist() == [1, 2, 3]
    assert not set(out[out.user_id == "u1"]["item_id"]) & {"i0", "i1"}


def test_fast_and_exact_paths_agree_on_random_data_with_ties():
    rng = np.random.default_rng(12)
    vectors = np.round(rng.standard_normal((300, 4)), 1).astype(np.float32)  # rounding makes ties common
    cat = Catalogue(item_ids=np.array([f"i{j:03d}" for j in range(300)]), vectors=vectors)
    users = np.round(rng.standard_normal((40, 4)), 1).astype(np.float32)
    seen = [rng.choice(300, size=int(rng.integers(0, 30)), replace=False) for _ in range(40)]
    scores = users.astype(np.float64) @ cat.vectors.astype(np.float64).T  # the exact pass's float64 scores
    for precision in PRECISIONS:
        for row, idx, score, *_ in per_user(
            top_k(
                users,
                np.full(40, -1),
                SeenItems.from_lists(seen),
                cat,
                topk_settings(k=9, popularity_weight=0.0, block_mb=64, precision=precision),
            )
        ):
            assert idx.tolist() == brute_force(None, cat, set(seen[row].tolist()), 9, scores=scores[row])
            np.testing.assert_allclose(score, scores[row][idx], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [64 * 40, 64 * 40 + 7])  # whole groups, and columns past the last group
def test_grouped_fast_selection_keeps_the_topk_values(dtype, n):
    """best_fast_scores searches only the best groups on the CPU; the values must be torch.topk's."""
    rng = np.random.default_rng(3)
    count = 40
    assert n // GROUP >= 4 * count  # the grouped path, not the topk fallback
    scores = np.round(rng.standard_normal((30, n)), 1)  # many ties
    scores[0, :] = -np.inf  # a fully masked row
    scores[1, : n - 10] = -np.inf  # fewer finite scores than count
    w = n // GROUP
    scores[2, 5 + w * np.arange(GROUP)] = 10.0 + np.arange(GROUP)  # the best all in one strided group
    scores[3, n - 3 :] = 20.0  # the best past the last whole group
    scores[4, :] = 0.5  # every score tied
    scores[5, :count] = 30.0 + np.arange(count)  # the best each in its own group: every group needed
    scores[6, :] = -1.0 - np.abs(scores[6, :])  # every score negative (bfloat16: keys ordered for negatives)
    scores[7, :] = -1.0 - np.abs(scores[7, :])
    scores[7, : count - 1] = 0.0  # one group too few with a maximum >= 0: its negatives decide the rest
    scores[8, :] = -2.0
    scores[8, :count] = -0.0  # -0.0 reads as a negative in bfloat16's bits
    scores[8, count : 2 * count] = np.arange(count) / 10  # exactly count groups >= 0: the raw bits suffice
    tensor = torch.from_numpy(scores.astype(np.float32)).to(dtype)
    values, columns = best_fast_scores(tensor, count)
    expected = torch.topk(tensor, count, dim=1).values.float().numpy()
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(np.take_along_axis(tensor.float().numpy(), columns, axis=1), values)
    assert all(len(set(row.tolist())) == count for row in columns)  # no column twice
    assert set(columns[2, :GROUP].tolist()) == set((5 + w * np.arange(GROUP)).tolist())
    assert set(columns[3, :3].tolist()) == {n - 3, n - 2, n - 1}


def test_bfloat16_group_keys_order_the_groups_as_their_maxima():
    """int16 keys from bfloat16 bits: the ``count`` largest keys are the ``count`` largest maxima's
    groups, for rows with enough maxima >= 0 (raw bits) and rows without (negatives' bits flipped)."""
    from segrec.udfs.topk.exact import bfloat16_group_keys

    rng = np.random.default_rng(11)
    count, w = 5, 40
    # distinct bfloat16 values (a permutation of an exactly representable grid), so maxima never tie
    grid = (np.arange(-GROUP * w // 2, GROUP * w // 2) / 64).astype(np.float32)
    rows = np.stack([rng.permutation(grid) for _ in range(6)])
    rows[1] = -1.0 - np.abs(rows[1])  # all negative: every key from flipped bits
    rows[2] = -1.0 - np.abs(rows[2])
    rows[2, : count - 1] = np.arange(count - 1)  # one maximum >= 0 too few
    rows[3] = -1.0 - np.abs(rows[3])
    rows[3, :count] = np.arange(count)  # exactly count maxima >= 0
    rows[4, ::2] = -np.inf  # masked items
    groups = torch.from_numpy(rows).bfloat16().unflatten(1, (GROUP, w))
    keys = bfloat16_group_keys(groups, count)
    maxima = groups.amax(dim=1).float().numpy()
    assert keys.dtype == np.int32 and keys.shape == (6, w)
    for r in range(6):
        assert set(np.argsort(-keys[r], kind="stable")[:count]) == set(np.argsort(-maxima[r], kind="stable")[:count])
    for r in (1, 2):  # short rows: keys ordered as the maxima over every group
        np.testing.assert_array_equal(np.argsort(keys[r], kind="stable"), np.argsort(maxima[r], kind="stable"))


@pytest.mark.parametrize("n", [MAXIMA_GROUP * 60, MAXIMA_GROUP * 60 + 5, 30])  # whole groups, a tail, too few
def test_largest_columns_finds_the_largest_values_however_they_fall_in_groups(n):
    rng = np.random.default_rng(4)
    count = 24
    values = np.round(rng.standard_normal((8, n)), 1).astype(np.float32)  # many ties
    w = n // MAXIMA_GROUP
    values[0, :] = -np.inf  # a fully masked row
    values[1, : n - 3] = -np.inf  # fewer finite values than count
    if w:
        values[2, 7 + w * np.arange(MAXIMA_GROUP)] = 10.0 + np.arange(MAXIMA_GROUP)  # one strided group holds the best
    values[3, n - 5 :] = 20.0  # the best past the last whole group
    values[4, :] = 0.5  # every value tied
    values[5, :count] = 30.0 + np.arange(count)  # each in its own group: every chosen group needed
    columns = largest_columns(values, count)
    assert columns.shape == (8, count)
    assert all(len(set(row.tolist())) == count for row in columns)  # no column twice
    found = np.sort(np.take_along_axis(values, columns, axis=1), axis=1)
    np.testing.assert_array_equal(found, np.sort(values, axis=1)[:, n - count :])
    assert set(range(count)) == set(columns[5].tolist())
    assert set(range(n - 5, n)) <= set(columns[3].tolist())


def test_grouped_selection_over_a_catalogue_wide_enough_for_both_levels():
    """20,000 columns (the benchmarks' catalogue): the group maxima are searched through groups again."""
    rng = np.random.default_rng(6)
    n, count = 20_000, 24
    assert (n // GROUP) // MAXIMA_GROUP >= 2 * count  # the second level runs
    scores = torch.from_numpy(rng.standard_normal((50, n)).astype(np.float32)).bfloat16()
    scores[0, ::3] = -np.inf  # masked items
    values, columns = best_fast_scores(scores, count)
    np.testing.assert_array_equal(values, torch.topk(scores, count, dim=1).values.float().numpy())
    np.testing.assert_array_equal(np.take_along_axis(scores.float().numpy(), columns, axis=1), values)


def test_lists_with_many_ties_on_a_catalogue_large_enough_for_grouped_selection():
    rng = np.random.default_rng(8)
    n, k = 5000, 20
    vectors = np.round(rng.standard_normal((n, 4)), 1).astype(np.float32)  # ties common
    cat = Catalogue(item_ids=np.array([f"i{j:04d}" for j in range(n)]), vectors=vectors)
    users = np.round(rng.standard_normal((25, 4)), 1).astype(np.float32)
    seen = [rng.choice(n, size=int(rng.integers(0, 200)), replace=False) for _ in range(25)]
    scores = users.astype(np.float64) @ vectors.astype(np.float64).T
    for precision in PRECISIONS:
        for row, idx, score, *_ in per_user(
            top_k(
                users,
                np.full(25, -1),
                SeenItems.from_lists(seen),
                cat,
                topk_settings(k=k, popularity_weight=0.0, block_mb=64, precision=precision),
            )
        ):
            assert idx.tolist() == brute_force(None, cat, set(seen[row].tolist()), k, scores=scores[row])
            np.testing.assert_allclose(score, scores[row][idx], rtol=0, atol=1e-12)


def frames(blocks):
    """top_k's blocks concatenated: (rows, idx, score, sim, boost) arrays."""
    return [np.concatenate(parts) for parts in zip(*blocks, strict=True)]


def test_bfloat16_and_float32_candidate_passes_give_identical_lists_and_scores():
    rng = np.random.default_rng(21)
    n, d = 3000, 64
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    popularity = rng.random((n, 3)).astype(np.float32)
    cat = Catalogue(item_ids=np.array([f"i{j:04d}" for j in range(n)]), vectors=vectors, popularity=popularity)
    users = (rng.standard_normal((150, d)) * rng.uniform(0.2, 3.0, (150, 1))).astype(np.float32)  # not unit length
    segments = rng.integers(-1, 3, 150)
    seen = [rng.choice(n, size=int(rng.integers(0, 40)), replace=False) for _ in range(150)]
    exact = frames(
        top_k(
            users,
            segments,
            SeenItems.from_lists(seen),
            cat,
            topk_settings(k=12, popularity_weight=0.3, block_mb=64, precision="float32"),
        )
    )
    fast = frames(
        top_k(
            users,
            segments,
            SeenItems.from_lists(seen),
            cat,
            topk_settings(k=12, popularity_weight=0.3, block_mb=4, precision="bfloat16"),
        )
    )
    for a, b in zip(exact, fast, strict=True):
        np.testing.assert_array_equal(a, b)
    # and both are the float64 brute force
    full = users.astype(np.float64) @ vectors.astype(np.float64).T
    full += np.where(segments[:, None] >= 0, 0.3 * popularity.astype(np.float64)[:, segments].T, 0.0)
    rows, idx = exact[0], exact[1]
    for r in range(150):
        assert idx[rows == r].tolist() == brute_force(None, cat, set(seen[r].tolist()), 12, scores=full[r])


def test_the_bfloat16_pass_multiplies_one_copy_of_the_catalogue_held_as_columns():
    """The worker makes the catalogue's bfloat16 copy once and holds it as contiguous (d, n) columns
    (the layout oneDNN multiplies fastest), equal to the vectors rounded to bfloat16."""
    from segrec.udfs.topk.exact import fast_similarities

    cat = catalogue(n=700, d=16, seed=4)
    users = np.random.default_rng(5).standard_normal((9, 16)).astype(np.float32)
    first = fast_similarities(users, cat, "cpu", "bfloat16")
    columns = cat.derived["cpu:bfloat16:columns"]
    assert columns.shape == (16, 700) and columns.is_contiguous() and columns.dtype == torch.bfloat16
    torch.testing.assert_close(columns.float(), torch.from_numpy(cat.vectors).bfloat16().float().T, rtol=0, atol=0)
    again = fast_similarities(users, cat, "cpu", "bfloat16")
    assert cat.derived["cpu:bfloat16:columns"] is columns  # not copied again for the next block
    assert first.shape == (9, 700) and first.dtype == torch.bfloat16 and torch.equal(first, again)
    rounded = torch.from_numpy(users).bfloat16().float() @ columns.float()
    assert (first.float() - rounded).abs().max() <= 2.0**-7 * rounded.abs().max()  # bfloat16 output rounding


def test_crowded_rows_are_widened_until_proven(monkeypatch):
    """300 near-copies of one item sit within the bfloat16 error bound of each other: the first
    candidate pass cannot prove any list, so rows are widened, and the lists are still exact."""
    import segrec.udfs.topk.exact as topk

    rng = np.random.default_rng(4)
    base = rng.standard_normal(32)
    crowd = base + rng.standard_normal((300, 32)) * 1e-3
    others = rng.standard_normal((700, 32))
    vectors = np.vstack([crowd, others]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cat = Catalogue(item_ids=np.array([f"i{j:04d}" for j in range(1000)]), vectors=vectors)
    users = (base + rng.standard_normal((5, 32)) * 1e-2).astype(np.float32)
    seen = [np.array([0, 5]), np.array([], np.int64), np.array([299]), np.arange(0, 300, 2), np.array([], np.int64)]
    depths = []
    real_select = topk._select

    def spy(block, rows, m, *rest):
        depths.append(m)  # the candidates per row in this pass
        return real_select(block, rows, m, *rest)

    monkeypatch.setattr(topk, "_select", spy)
    rows, idx, score, *_ = frames(
        top_k(
            users,
            np.full(5, -1),
            SeenItems.from_lists(seen),
            cat,
            topk_settings(k=10, popularity_weight=0.0, block_mb=64, precision="bfloat16"),
        )
    )
    assert max(depths) > topk.candidate_count(10, 1000)  # widened at least once
    full = users.astype(np.float64) @ vectors.astype(np.float64).T
    for r in range(5):
        assert idx[rows == r].tolist() == brute_force(None, cat, set(seen[r].tolist()), 10, scores=full[r])


def test_error_bound_covers_every_item_left_out():
    """excluded_score_bound: whatever the cut, no item whose fast score is at most the cut has an exact
    score above cut + bound; and the bfloat16 bound is tight enough to be useful (within 20x of the errors
    seen; the float32 one is the worst-case sum bound, far above typical errors but ~1e-4 at most here)."""
    from segrec.udfs.topk.exact import excluded_score_bound, fast_similarities, item_norms

    rng = np.random.default_rng(8)
    for d in (8, 384):
        vectors = rng.standard_normal((2000, d)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        cat = Catalogue(item_ids=np.arange(2000).astype(str), vectors=vectors)
        users = (rng.standard_normal((64, d)) * rng.uniform(0.5, 4, (64, 1))).astype(np.float32)
        exact = users.astype(np.float64) @ vectors.astype(np.float64).T
        for precision in PRECISIONS:
            fast = fast_similarities(users, cat, "cpu", precision).double().numpy()
            worst_error = np.abs(fast - exact).max(axis=1)
            for m in (1, 10, 100, 1999):
                cut = -np.sort(-fast, axis=1)[:, m]
                bound = excluded_score_bound(precision, users, item_norms(vectors), cut, boost_max=0.0)
                left_out = np.where(fast <= cut[:, None], exact, -np.inf).max(axis=1)
                assert (left_out <= cut + bound).all(), (d, precision, m)
                if precision == "bfloat16":
                    assert (bound < 20 * worst_error).all(), (d, precision, m)
                else:
                    assert (bound < 1e-4 * np.linalg.norm(users, axis=1)).all()
                with_boost = excluded_score_bound(precision, users, item_norms(vectors), cut, boost_max=0.5)
                assert (with_boost >= bound).all()


def test_candidate_precision_choice(monkeypatch):
    import segrec.udfs.topk.settings as topk

    monkeypatch.setattr(topk, "native_bfloat16", lambda: True)
    assert topk.candidate_precision("auto", "cpu") == "bfloat16"
    assert topk.candidate_precision("auto", "cuda:0") == "float32"
    assert topk.candidate_precision("bfloat16", "cuda:0") == "float32"
    monkeypatch.setattr(topk, "native_bfloat16", lambda: False)
    assert topk.candidate_precision("auto", "cpu") == "float32"
    assert topk.candidate_precision("bfloat16", "cpu") == "bfloat16"  # asked for: slower here, still exact


def _users_batch(n_users=9, d=8, seed=6):
    """A pandas batch and its Arrow twin (the schema mapInArrow hands over), with null segments, null
    and empty seen lists and seen ids the catalogue does not hold."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    users = rng.standard_normal((n_users, d)).astype(np.float32)
    seen = [[f"i{j}" for j in rng.choice(40, size=int(rng.integers(0, 6)), replace=False)] for _ in range(n_users)]
    seen[1], seen[2], seen[3] = None, [], ["i3", "not-in-catalogue", "i3"]
    segments = [None if j % 3 == 0 else j % 2 for j in range(n_users)]
    ids = [f"u{j}" for j in range(n_users)]
    frame = pd.DataFrame({"user_id": ids, "vector": list(users), "segment_id": segments, "seen": seen})
    arrow = pa.RecordBatch.from_arrays(
        [
            pa.array(ids),
            pa.array([list(map(float, u)) for u in users], pa.list_(pa.float32())),
            pa.array(segments, pa.int32()),
            pa.array(seen, pa.list_(pa.string())),
        ],
        names=["user_id", "vector", "segment_id", "seen"],
    )
    return frame, arrow


@pytest.mark.parametrize("mmr", [{}, {"mmr_trade_off": 0.5, "mmr_pool": 12}])
def test_arrow_and_pandas_batches_give_the_same_rows(mmr):
    from segrec.udfs.schemas import RECOMMENDATIONS as ARROW_SCHEMA
    from segrec.udfs.topk.batches import recommend_batch

    cat = catalogue(n=40, d=8, seed=2, popularity=np.random.default_rng(1).random((40, 2)).astype(np.float32))
    frame, arrow = _users_batch()
    expected = recommend_frame(frame, cat, topk_settings(k=5, popularity_weight=0.3, block_mb=64, **mmr))
    out = recommend_batch(arrow, cat, topk_settings(k=5, popularity_weight=0.3, block_mb=64, **mmr))
    assert out.schema == ARROW_SCHEMA
    pd.testing.assert_frame_equal(out.to_pandas(), expected)
    assert len(expected) == 9 * 5 and set(expected["user_id"]) == set(frame["user_id"])
    u3 = expected[expected.user_id == "u3"]["item_id"].tolist()
    assert "i3" not in u3 and len(u3) == 5


def test_an_empty_batch_gives_no_rows_with_the_output_schema():
    from segrec.udfs.schemas import RECOMMENDATIONS as ARROW_SCHEMA
    from segrec.udfs.topk.batches import recommend_batch

    frame, arrow = _users_batch()
    out = recommend_batch(
        arrow.slice(0, 0), catalogue(n=40, d=8), topk_settings(k=5, popularity_weight=0.0, block_mb=64)
    )
    assert out.num_rows == 0 and out.schema == ARROW_SCHEMA
    assert recommend_frame(
        frame.iloc[:0], catalogue(n=40, d=8), topk_settings(k=5, popularity_weight=0.0, block_mb=64)
    ).columns.tolist() == list(ARROW_SCHEMA.names)


def test_a_user_without_a_vector_of_the_catalogues_dimension_is_named():
    import pyarrow as pa

    from segrec.udfs.topk.batches import recommend_batch

    frame, arrow = _users_batch()
    cat = catalogue(n=40, d=8)
    short = frame.copy()
    short.at[4, "vector"] = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"user 'u4' has a vector of 3 values; the item vectors have 8"):
        recommend_frame(short, cat, topk_settings(k=5, popularity_weight=0.0, block_mb=64))
    vectors = arrow.column("vector").to_pylist()
    vectors[6] = None
    missing = arrow.set_column(1, "vector", pa.array(vectors, pa.list_(pa.float32())))
    with pytest.raises(ValueError, match=r"user 'u6' has no vector; the item vectors have 8 \(1 such"):
        recommend_batch(missing, cat, topk_settings(k=5, popularity_weight=0.0, block_mb=64))


def test_mmr_order_by_hand():
    from segrec.udfs.topk.mmr import mmr_order

    relevance = np.array([0.9, 0.85, 0.5])
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)  # 0 and 1 are the same item twice
    # trade-off 0.5: take 0 (0.45); then 1 scores 0.425 - 0.5 = -0.075 and 2 scores 0.25: take 2, then 1
    assert mmr_order(relevance, vectors, 3, 0.5).tolist() == [0, 2, 1]
    assert mmr_order(relevance, vectors, 3, 1.0).tolist() == [0, 1, 2]  # relevance only: the order stays
    assert mmr_order(relevance, vectors, 2, 0.5).tolist() == [0, 2]
    # equal MMR values: the earlier candidate (higher relevance, then lower id) wins
    assert mmr_order(np.array([0.5, 0.5]), np.eye(2, dtype=np.float32), 2, 0.7).tolist() == [0, 1]


def test_mmr_in_recommend_frame_diversifies_within_the_pool():
    cat = catalogue(n=60, d=8, seed=4)
    rng = np.random.default_rng(5)
    users = rng.standard_normal((12, 8)).astype(np.float32)
    batch = pd.DataFrame(
        {
            "user_id": [f"u{j}" for j in range(12)],
            "vector": list(users),
            "segment_id": [None] * 12,
            "seen": [["i0", "i1"]] * 12,
        }
    )
    plain = recommend_frame(batch, cat, topk_settings(k=5, popularity_weight=0.0, block_mb=64))
    same = recommend_frame(
        batch, cat, topk_settings(k=5, popularity_weight=0.0, block_mb=64, mmr_trade_off=1.0, mmr_pool=20)
    )
    pd.testing.assert_frame_equal(plain, same)
    diverse = recommend_frame(
        batch, cat, topk_settings(k=5, popularity_weight=0.0, block_mb=64, mmr_trade_off=0.3, mmr_pool=20)
    )
    pool = recommend_frame(batch, cat, topk_settings(k=20, popularity_weight=0.0, block_mb=64))
    index = {item: j for j, item in enumerate(cat.item_ids)}

    def mean_pair_similarity(frame):
        sims = []
        for _, rows in frame.groupby("user_id"):
            v = cat.vectors[[index[i] for i in rows["item_id"]]]
            s = v @ v.T
            sims.append((s.sum() - np.trace(s)) / (len(v) * (len(v) - 1)))
        return np.mean(sims)

    assert mean_pair_similarity(diverse) < mean_pair_similarity(plain) - 0.05
    for user, rows in diverse.groupby("user_id"):
        assert rows["rank"].tolist() == [1, 2, 3, 4, 5]
        assert set(rows["item_id"]) <= set(pool[pool.user_id == user]["item_id"])  # only pool items
        assert not {"i0", "i1"} & set(rows["item_id"])  # seen items stay out


def test_float32_pass_ignores_a_lower_matmul_precision_set_by_the_process():
    """A notebook may set torch.set_float32_matmul_precision("medium") (TF32 on GPUs, bfloat16 inside
    oneDNN where enabled): the fast pass multiplies at "highest" and gives the process its setting back.
    (On this project's CPU "medium" does not change the product, so the error check is a floor only.)"""
    import torch

    from segrec.udfs.topk.exact import fast_similarities

    cat = catalogue(n=500, d=384, seed=2)
    users = np.random.default_rng(3).standard_normal((20, 384)).astype(np.float32)
    prior = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        fast = fast_similarities(users, cat, "cpu", "float32").double().numpy()
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(prior)
    exact = users.astype(np.float64) @ cat.vectors.astype(np.float64).T
    assert np.abs(fast - exact).max() < 1e-4  # bfloat16 products would be off by ~1e-2


def test_seen_items_are_sorted_by_row_and_each_pair_kept_once():
    seen = SeenItems.from_lists([np.array([3, 1, 3]), np.array([], np.int64), np.array([0, 7])])
    assert seen.rows.tolist() == [0, 0, 2, 2] and seen.positions.tolist() == [1, 3, 0, 7]
    rows, positions = seen.block(1, 3)
    assert rows.tolist() == [1, 1] and positions.tolist() == [0, 7]
    empty = SeenItems.from_lists([np.array([], np.int64)] * 2)
    assert len(empty.rows) == 0 and len(empty.block(0, 2)[0]) == 0


def test_reasons_do_not_depend_on_the_block_budget():
    from segrec.udfs.topk.catalogue import SeenItems
    from segrec.udfs.topk.reasons import explain_picks

    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    lengths = rng.integers(0, 40, 50)  # some users without history, some longer than the smallest budgets
    seen = SeenItems.from_pairs(np.repeat(np.arange(50), lengths), rng.integers(0, 300, lengths.sum()))
    rows, picks = np.repeat(np.arange(50), 6), rng.integers(0, 300, 300)
    results = [explain_picks(rows, picks, seen, vectors, budget=b) for b in (1, 7, 64, 4096, 1 << 20)]
    for because, similarity in results[1:]:
        np.testing.assert_array_equal(because, results[0][0])
        np.testing.assert_allclose(similarity, results[0][1], atol=1e-6)  # padding changes the BLAS kernel
    because, similarity = results[0]
    for row in range(50):
        history = seen.positions[seen.rows == row]
        mine = rows == row
        if not len(history):
            assert (because[mine] == -1).all() and np.isnan(similarity[mine]).all()
            continue
        sims = vectors[picks[mine]] @ vectors[history].T
        np.testing.assert_array_equal(because[mine], history[sims.argmax(axis=1)])


@pytest.mark.parametrize("mmr", [{}, {"mmr_trade_off": 0.5, "mmr_pool": 12}])
def test_the_learned_part_of_each_similarity_is_the_user_against_the_items_learned_part(mmr):
    rng = np.random.default_rng(5)
    cat = catalogue(n=40, d=8, seed=3)
    learned = (rng.standard_normal((40, 8)) * 0.2).astype(np.float32)
    learned[::4] = 0.0  # cold items: all text
    cat.learned_part = learned
    frame, _ = _users_batch()
    plain = recommend_frame(frame, cat, topk_settings(k=5, **mmr))
    parts = recommend_frame(frame, cat, topk_settings(k=5, score_parts=True, **mmr))
    columns = ["user_id", "rank", "item_id", "score", "similarity"]
    pd.testing.assert_frame_equal(plain[columns], parts[columns])  # the lists do not depend on it
    assert plain["learned_similarity"].isna().all()
    users = dict(zip(frame["user_id"], frame["vector"], strict=True))
    position = {item: j for j, item in enumerate(cat.item_ids)}
    for row in parts.itertuples():
        expected = float(np.dot(users[row.user_id].astype(np.float64), learned[position[row.item_id]]))
        assert row.learned_similarity == pytest.approx(expected, abs=1e-9)
    cold = parts["item_id"].map(position) % 4 == 0
    assert cold.any() and (parts.loc[cold, "learned_similarity"] == 0.0).all()


def test_a_catalogue_file_keeps_the_learned_parts(tmp_path):
    from segrec.udfs.topk.catalogue import load_catalogue, save_catalogue

    cat = catalogue(n=5, d=3)
    cat.learned_part = np.arange(15, dtype=np.float32).reshape(5, 3)
    save_catalogue(str(tmp_path / "c.npz"), cat)
    loaded = load_catalogue(str(tmp_path / "c.npz"))
    np.testing.assert_array_equal(loaded.learned_part, cat.learned_part)
    assert loaded.popularity is None


def test_a_cpu_task_scores_with_torch_threads_for_its_own_cores(monkeypatch):
    # Several scoring tasks run side by side on one executor: each keeps to spark.task.cpus threads.
    from segrec.udfs import device

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # a process's default on a multi-core machine
    monkeypatch.setattr(device, "current_slot", lambda: device.TaskSlot(cpus=1))
    try:
        assert topk_settings(device="cpu").for_this_task().device == "cpu"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
