"""Approximate top-k through a faiss IVF index: exact lists when every list is searched, seen items and
short lists handled as the exact selection handles them, the recall check on a sample of users, and the
index reaching the workers by broadcast and by file."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import topk_settings

from segrec.jobs.config import Recommend
from segrec.jobs.errors import ConfigError
from segrec.jobs.recommendations.top_k import calibrate_probes, choose_search
from segrec.udfs.topk.approximate import build_index, default_lists, recall_at_k
from segrec.udfs.topk.batches import UserBatch, recommend_users
from segrec.udfs.topk.catalogue import Catalogue, load_catalogue, save_catalogue

pytest.importorskip("faiss", reason="pip install faiss-cpu")


def clustered(n, dim, rng, centres):
    """Unit rows near ``centres``: the structure of real embeddings, where an IVF index has lists to find."""
    rows = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def case():
    """3,000 items in 60 clusters, 300 users with 0-40 seen items each, one who saw 2,990 of them."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((60, 16))
    items = Catalogue(item_ids=np.array([f"i{j:05d}" for j in range(3000)]), vectors=clustered(3000, 16, rng, centres))
    seen = [items.item_ids[rng.choice(3000, int(rng.integers(0, 41)), replace=False)] for _ in range(299)]
    seen.append(items.item_ids[:2990])
    users = UserBatch(
        ids=np.array([f"u{j:03d}" for j in range(300)], dtype=object),
        vectors=clustered(300, 16, rng, centres),
        segments=np.full(300, -1),
        seen_ids=np.concatenate(seen).astype(object),
        seen_counts=np.array([len(s) for s in seen]),
    )
    index = build_index(items.vectors, lists=50)
    return items, users, index, {u: set(s) for u, s in zip(users.ids, seen, strict=True)}


def with_probes(items, index, probes):
    return replace(items, ivf=replace(index, probes=probes), derived={})


def test_searching_every_list_gives_the_exact_lists(case):
    items, users, index, _ = case
    settings = topk_settings(k=10)
    exact = recommend_users(users, items, settings)
    searched = recommend_users(users, with_probes(items, index, index.lists), settings)
    for column in ("user_id", "rank", "item_id"):
        assert (searched[column] == exact[column]).all(), column
    np.testing.assert_array_equal(searched["score"], exact["score"])  # the same exact float64 pass


def test_one_probe_misses_items_but_never_returns_a_seen_one_or_a_short_list(case):
    items, users, index, seen = case
    settings = topk_settings(k=10)
    exact = recommend_users(users, items, settings)
    one = recommend_users(users, with_probes(items, index, 1), settings)
    assert 0.3 < recall_at_k(one, exact) < 0.95  # a real approximation on this data
    frame = pd.DataFrame(one)
    for user, rows in frame.groupby("user_id"):
        assert not set(rows["item_id"]) & seen[user], user
        # a user whose one list holds too few unseen items is searched again in more lists
        assert len(rows) == min(10, 3000 - len(seen[user])), user
        assert rows["rank"].tolist() == list(range(1, len(rows) + 1))
        assert (np.diff(rows["score"].to_numpy()) <= 0).all()
    assert len(frame[frame.user_id == "u299"]) == 10  # 10 unseen items left, all found


def test_recall_counts_the_exact_lists_items_kept_per_user():
    exact = {"user_id": np.array(["a", "a", "b", "b"]), "item_id": np.array(["x", "y", "x", "z"])}
    approximate = {"user_id": np.array(["a", "a", "b", "b"]), "item_id": np.array(["y", "q", "z", "x"])}
    assert recall_at_k(approximate, exact) == pytest.approx((0.5 + 1.0) / 2)
    assert recall_at_k(approximate, {"user_id": np.array([]), "item_id": np.array([])}) == 1.0


def test_the_probes_chosen_are_the_fewest_that_reach_the_recall(case):
    items, users, index, _ = case
    settings = topk_settings(k=10)
    exact = recommend_users(users, items, settings)
    probes, figures = calibrate_probes(with_probes(items, index, 1), users, settings, min_recall=0.97)
    recall = recall_at_k(recommend_users(users, with_probes(items, index, probes), settings), exact)
    assert recall >= 0.97 and figures == {"ivf_probes": probes, "recall_at_k": round(recall, 4), "recall_users": 300}
    if probes > 1:
        half = recommend_users(users, with_probes(items, index, probes // 2), settings)
        assert recall_at_k(half, exact) < 0.97


def test_an_unreachable_recall_stops_with_the_figure(case):
    items, users, index, _ = case
    popular = replace(items, popularity=np.linspace(1, 0, 3000, dtype=np.float32)[:, None], derived={})
    users = replace(users, segments=np.zeros(300, np.int64))
    # ranked mostly by popularity: the index, searched by similarity, cannot reach these lists
    settings = topk_settings(k=10, popularity_weight=5.0)
    with pytest.raises(ConfigError, match=r"recall@10 0\.\d{4} on 300 sampled users even searching all 50 lists"):
        calibrate_probes(with_probes(popular, index, 1), users, settings, min_recall=0.95)


def test_the_index_travels_in_the_catalogue_file(case, tmp_path):
    items, users, index, _ = case
    path = str(tmp_path / "items.npz")
    save_catalogue(path, with_probes(items, index, 3))
    loaded = load_catalogue(path)
    assert loaded.ivf is not None and (loaded.ivf.lists, loaded.ivf.probes) == (50, 3)
    settings = topk_settings(k=5)
    a, b = recommend_users(users, loaded, settings), recommend_users(users, with_probes(items, index, 3), settings)
    assert (a["item_id"] == b["item_id"]).all()


def test_lists_follow_the_catalogue_size():
    assert default_lists(1_000_000) == 4000 and default_lists(10_000) == 256 and default_lists(20) == 1


def test_auto_searches_large_broadcast_catalogues_through_the_index():
    settings = Recommend(ivf_min_items=1000)
    assert choose_search(settings, "broadcast", 999, 1.0) == "exact"
    assert choose_search(settings, "broadcast", 1000, 1.0) == "ivf"
    assert choose_search(settings, "sharded", 10**6, 1.0) == "exact"
    with pytest.raises(ConfigError, match="search=ivf needs the broadcast plan.*max_broadcast_mb"):
        choose_search(Recommend(search="ivf"), "sharded", 10**6, 600.0)
