import numpy as np
import pandas as pd

from udfs.topk import Catalogue, block_rows, recommend_frame, top_k


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
    for row, idx, score, sim, boost in per_user(top_k(users, np.full(7, -1), seen, cat, 5, 0.0, block_mb=64)):
        assert idx.tolist() == brute_force(users[row], cat, set(seen[row]), 5)
        assert not set(idx) & set(seen[row])
        np.testing.assert_allclose(score, sim)
        assert (boost == 0).all()


def test_ties_are_broken_by_item_index():
    vectors = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], dtype=np.float32)
    cat = Catalogue(item_ids=np.array(["a", "b", "c", "d"]), vectors=vectors)
    (_, idx, *_), = per_user(top_k(np.array([[1, 0]], np.float32), np.array([-1]), [np.array([], np.int64)], cat, 2, 0.0, 64))
    assert idx.tolist() == [0, 2]  # a, c, d tie at 1.0: the two lowest indices win


def test_fewer_unseen_items_than_k():
    cat = catalogue(n=4)
    (_, idx, *_), = per_user(top_k(np.ones((1, 3), np.float32), np.array([-1]), [np.array([0, 2])], cat, 10, 0.0, 64))
    assert sorted(idx.tolist()) == [1, 3]
    rows, idx, *_ = next(top_k(np.ones((1, 3), np.float32), np.array([-1]), [np.arange(4)], cat, 10, 0.0, 64))
    assert idx.size == 0 and rows.size == 0


def test_block_size_does_not_change_results():
    cat = catalogue(n=200, d=16, seed=5)
    users = np.random.default_rng(9).standard_normal((30, 16)).astype(np.float32)
    seen = [np.array([], np.int64)] * 30
    big = [r[1].tolist() for r in per_user(top_k(users, np.full(30, -1), seen, cat, 7, 0.0, block_mb=64))]
    assert block_rows(200, 0.001) == 1
    tiny = [r[1].tolist() for r in per_user(top_k(users, np.full(30, -1), seen, cat, 7, 0.0, block_mb=0.001))]
    assert len(big) == 30
    assert big == tiny


def test_popularity_boost_of_the_users_segment():
    popularity = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype=np.float32)  # items x segments
    vectors = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2]], dtype=np.float32)
    cat = Catalogue(item_ids=np.array(["x", "y", "z"]), vectors=vectors, popularity=popularity)
    users = np.array([[1, 0], [1, 0], [1, 0]], np.float32)
    out = per_user(top_k(users, np.array([0, 1, -1]), [np.array([], np.int64)] * 3, cat, 3, 0.5, 64))
    assert out[0][1].tolist() == [1, 0, 2]  # segment 0 boosts item y by 0.5
    np.testing.assert_allclose(out[0][4], [0.5, 0.0, 0.0])
    assert out[1][1].tolist() == [0, 1, 2]  # segment 1 boosts item x
    assert out[2][1].tolist() == [0, 1, 2] and (out[2][4] == 0).all()  # no segment: no boost


def test_recommend_frame_shapes_rows_per_user():
    cat = catalogue(n=5)
    batch = pd.DataFrame({"user_id": ["u1", "u2"], "vector": [np.ones(3), -np.ones(3)],
                          "segment_id": [None, None], "seen": [[0, 1], None]})
    out = recommend_frame(batch, cat, 3, 0.0, 64)
    assert out.groupby("user_id").size().to_dict() == {"u1": 3, "u2": 3}
    assert out[out.user_id == "u1"]["rank"].tolist() == [1, 2, 3]
    assert not set(out[out.user_id == "u1"]["item_id"]) & {"i0", "i1"}


def test_fast_and_exact_paths_agree_on_random_data_with_ties():
    rng = np.random.default_rng(12)
    vectors = np.round(rng.standard_normal((300, 4)), 1).astype(np.float32)  # rounding makes ties common
    cat = Catalogue(item_ids=np.array([f"i{j:03d}" for j in range(300)]), vectors=vectors)
    users = np.round(rng.standard_normal((40, 4)), 1).astype(np.float32)
    seen = [rng.choice(300, size=int(rng.integers(0, 30)), replace=False) for _ in range(40)]
    scores = users @ cat.vectors.T  # the same product top_k computes (one block), so the same ties
    for row, idx, *_ in per_user(top_k(users, np.full(40, -1), seen, cat, 9, 0.0, 64)):
        assert idx.tolist() == brute_force(None, cat, set(seen[row].tolist()), 9, scores=scores[row])


def test_mmr_order_by_hand():
    from udfs.topk import mmr_order

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
    batch = pd.DataFrame({"user_id": [f"u{j}" for j in range(12)], "vector": list(users),
                          "segment_id": [None] * 12, "seen": [[0, 1]] * 12})
    plain = recommend_frame(batch, cat, 5, 0.0, 64)
    same = recommend_frame(batch, cat, 5, 0.0, 64, mmr=(1.0, 20))
    pd.testing.assert_frame_equal(plain, same)
    diverse = recommend_frame(batch, cat, 5, 0.0, 64, mmr=(0.3, 20))
    pool = recommend_frame(batch, cat, 20, 0.0, 64)
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
