"""Recommendations through Spark: both plans agree, seen items never appear, every user gets k rows."""

import json

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from segrec.jobs.config import Recommend
from segrec.jobs.recommendations.top_k import recommendations

N_ITEMS, N_USERS, DIM = 120, 40, 16


@pytest.fixture(scope="module")
def inputs(spark):
    rng = np.random.default_rng(21)

    def unit(n):
        m = rng.standard_normal((n, DIM)).astype(np.float32)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    items = pd.DataFrame({"item_id": [f"i{j:03d}" for j in range(N_ITEMS)], "vector": list(unit(N_ITEMS))})
    users = pd.DataFrame({"user_id": [f"u{j:03d}" for j in range(N_USERS)], "vector": list(unit(N_USERS))})
    # u000..u029 interacted with 0-20 items; u030..u039 are cold (text only); items i100+ nobody touched
    events = [
        (f"u{u:03d}", f"i{j:03d}")
        for u in range(30)
        for j in rng.choice(100, size=int(rng.integers(0, 21)), replace=False)
    ]
    # one user has seen all but 3 items: they get 3 rows, not k
    events += [("u000", f"i{j:03d}") for j in range(N_ITEMS - 3)]
    interactions = pd.DataFrame(events, columns=["user_id", "item_id"]).drop_duplicates()
    segments = pd.DataFrame({"user_id": users["user_id"], "segment_id": np.arange(N_USERS) % 3})
    to_df = lambda frame, schema: spark.createDataFrame(frame, schema)  # noqa: E731
    return {
        "user_vectors": to_df(users.assign(vector=users.vector.map(list)), "user_id string, vector array<float>"),
        "item_vectors": to_df(items.assign(vector=items.vector.map(list)), "item_id string, vector array<float>"),
        "interactions": to_df(interactions, "user_id string, item_id string"),
        "segments": to_df(segments, "user_id string, segment_id int"),
        "seen": interactions.groupby("user_id")["item_id"].agg(set).to_dict(),
    }


def run(spark, inputs, tmp_path=None, **settings):
    settings.setdefault("explain", False)  # reasons are compared with explain on below
    config = Recommend(**settings)
    recs, figures = recommendations(
        spark, inputs["user_vectors"], inputs["item_vectors"], inputs["interactions"], inputs["segments"], config
    )
    return recs.toPandas().sort_values(["user_id", "rank"]).reset_index(drop=True), figures


@pytest.mark.parametrize("users_from", ["a file", "an aggregation on user_id"])
def test_users_are_scored_in_as_many_tasks_as_asked(spark, inputs, tmp_path, users_from):
    # The users frame is joined with the seen lists and segments on user_id, and adaptive execution
    # coalesces a join's shuffle by size (into one task for a frame this small); the scorer's tasks are
    # what recommend.partitions asks for, also when the user vectors come out of a shuffle on user_id
    # already (evaluate's profiles), which a repartition on user_id alone would be taken to satisfy.
    path = str(tmp_path / "user_vectors")
    inputs["user_vectors"].write.parquet(path)
    users = spark.read.parquet(path)
    if users_from == "an aggregation on user_id":
        users = users.groupBy("user_id").agg(F.first("vector").alias("vector"))
    config = Recommend(k=5, explain=False, plan="broadcast", partitions=3)
    recs, _ = recommendations(spark, users, inputs["item_vectors"], inputs["interactions"], inputs["segments"], config)
    per_task = recs.groupBy(F.spark_partition_id().alias("task")).agg(F.countDistinct("user_id").alias("users"))
    per_task = per_task.orderBy("task").toPandas()
    assert per_task["task"].tolist() == [0, 1, 2]
    assert per_task["users"].sum() == N_USERS and per_task["users"].min() >= N_USERS / 6


@pytest.mark.parametrize("weight", [0.0, 0.4])
def test_broadcast_and_sharded_plans_give_identical_lists(spark, inputs, weight):
    broadcast, f1 = run(spark, inputs, k=7, popularity_weight=weight, plan="broadcast")
    # 16 dims x 4 bytes x 30 items per shard -> 4 shards; 8 users per block -> 5 blocks
    sharded, f2 = run(spark, inputs, k=7, popularity_weight=weight, max_broadcast_mb=30 * DIM * 4 / 2**20, user_block=8)
    assert (f1["plan"], f2["plan"]) == ("broadcast", "sharded")
    pd.testing.assert_frame_equal(broadcast, sharded)


def test_mmr_gives_identical_lists_in_both_plans(spark, inputs):
    broadcast, _ = run(spark, inputs, k=5, popularity_weight=0.2, plan="broadcast", mmr_trade_off=0.5, mmr_pool=15)
    sharded, _ = run(
        spark,
        inputs,
        k=5,
        popularity_weight=0.2,
        max_broadcast_mb=30 * DIM * 4 / 2**20,
        user_block=8,
        mmr_trade_off=0.5,
        mmr_pool=15,
    )
    pd.testing.assert_frame_equal(broadcast, sharded)
    plain, _ = run(spark, inputs, k=5, popularity_weight=0.2, plan="broadcast")
    assert not broadcast.equals(plain)  # the re-ranking changed some lists
    assert len(broadcast) == len(plain)


def test_matrix_from_a_file_gives_the_same_lists(spark, inputs, tmp_path):
    broadcast, _ = run(spark, inputs, k=5, plan="broadcast")
    from_file, _ = run(
        spark, inputs, k=5, plan="broadcast", matrix_source="file", matrix_path=str(tmp_path / "items.npz")
    )
    pd.testing.assert_frame_equal(broadcast, from_file)


def test_no_seen_item_and_exactly_k_rows_or_all_unseen(spark, inputs):
    recs, _ = run(spark, inputs, k=10)
    seen = inputs["seen"]
    for user, rows in recs.groupby("user_id"):
        assert not set(rows["item_id"]) & seen.get(user, set()), user
        expected = min(10, N_ITEMS - len(seen.get(user, set())))
        assert len(rows) == expected and rows["rank"].tolist() == list(range(1, expected + 1))
        assert (np.diff(rows["score"].to_numpy()) <= 0).all()
    assert recs["user_id"].nunique() == N_USERS
    assert len(recs[recs.user_id == "u000"]) == 3


def test_cold_users_and_untouched_items_are_served(spark, inputs):
    recs, _ = run(spark, inputs, k=10)
    assert set(recs["user_id"]) >= {f"u{j:03d}" for j in range(30, 40)}
    assert recs["item_id"].str.slice(1).astype(int).max() >= 100  # items nobody interacted with


def test_hybrid_keeps_its_components(spark, inputs):
    recs, _ = run(spark, inputs, k=5, popularity_weight=0.4)
    np.testing.assert_allclose(recs["score"], recs["similarity"] + recs["popularity_boost"], atol=1e-6)
    assert (recs["popularity_boost"] > 0).any() and recs["popularity_boost"].between(0, 0.4 + 1e-6).all()


def test_catalogue_is_loaded_once_per_worker(spark, inputs):
    recs, _ = run(spark, inputs, k=3, plan="broadcast")

    @F.pandas_udf("string")
    def loads(ids: pd.Series) -> pd.Series:
        from segrec.udfs.topk import catalogue

        return pd.Series([",".join(str(v) for v in catalogue.CATALOGUES.loads.values()) or "none"] * len(ids))

    report = {r.r for r in spark.range(0, 32, numPartitions=8).select(loads("id").alias("r")).collect()}
    assert all(set(r.split(",")) <= {"1", "none"} for r in report), report


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the fallback without CUDA")
def test_a_gpu_setting_without_cuda_scores_on_the_cpu_with_the_same_lists(spark, inputs):
    from segrec.udfs.device import task_device

    assert [task_device(s) for s in ("auto", "cpu", "cuda")] == ["cpu", "cpu", "cpu"]
    on_cpu, _ = run(spark, inputs, k=4, plan="broadcast", device="cpu")
    asked_for_gpu, _ = run(spark, inputs, k=4, plan="broadcast", device="cuda")
    pd.testing.assert_frame_equal(on_cpu, asked_for_gpu)


@pytest.mark.parametrize("plan", ["auto", "broadcast"])
def test_plan_figures_count_the_catalogue_whichever_way_it_is_chosen(spark, inputs, plan):
    _, figures = run(spark, inputs, k=3, plan=plan)
    matrix_mb = round(N_ITEMS * DIM * 4 / 2**20, 2)
    assert figures == {"plan": "broadcast", "items": N_ITEMS, "matrix_mb": matrix_mb, "search": "exact"}


@pytest.mark.parametrize("plan", ["auto", "broadcast", "sharded"])
def test_an_empty_catalogue_is_a_clear_error(spark, inputs, plan):
    from segrec.jobs.errors import InputError

    empty = inputs["item_vectors"].limit(0)
    with pytest.raises(InputError, match="no item vectors"):
        recommendations(
            spark, inputs["user_vectors"], empty, inputs["interactions"], inputs["segments"], Recommend(k=3, plan=plan)
        )


@pytest.mark.parametrize("plan", ["auto", "broadcast"])
def test_a_matrix_file_without_a_path_is_a_config_error(spark, inputs, plan):
    from segrec.jobs.errors import ConfigError

    with pytest.raises(ConfigError, match="matrix_path"):
        run(spark, inputs, k=3, plan=plan, matrix_source="file")


@pytest.mark.parametrize("mmr", [None, 0.5])
def test_every_reason_is_the_most_similar_item_of_the_users_own_history(spark, inputs, mmr):
    explained, figures = run(
        spark, inputs, k=6, popularity_weight=0.3, plan="broadcast", explain=True, mmr_trade_off=mmr
    )
    plain, _ = run(spark, inputs, k=6, popularity_weight=0.3, plan="broadcast", mmr_trade_off=mmr)
    reasons = ["because_item_id", "because_similarity"]
    pd.testing.assert_frame_equal(explained.drop(columns=reasons), plain.drop(columns=reasons))  # same lists
    assert plain["because_item_id"].isna().all() and "explained" not in figures
    vectors = dict(
        zip(inputs["item_vectors"].toPandas()["item_id"], inputs["item_vectors"].toPandas()["vector"], strict=True)
    )
    seen = inputs["seen"]
    for row in explained.itertuples():
        history = sorted(seen.get(row.user_id, ()))
        if not history:
            assert row.because_item_id is None and np.isnan(row.because_similarity), row
            continue
        sims = [float(np.dot(vectors[row.item_id], vectors[h])) for h in history]
        assert row.because_item_id == history[int(np.argmax(sims))], row  # ties: the smaller id
        assert row.because_similarity == pytest.approx(max(sims), abs=1e-5)
    assert explained["because_item_id"].notna().sum() > 100


def test_the_sharded_plan_gives_the_broadcast_plans_reasons(spark, inputs):
    broadcast, _ = run(spark, inputs, k=5, popularity_weight=0.3, plan="broadcast", explain=True)
    sharded, figures = run(
        spark, inputs, k=5, popularity_weight=0.3, max_broadcast_mb=30 * DIM * 4 / 2**20, user_block=8, explain=True
    )
    assert figures["plan"] == "sharded" and figures["reasons"] == "joined"
    pd.testing.assert_frame_equal(
        sharded.drop(columns="because_similarity"), broadcast.drop(columns="because_similarity")
    )
    np.testing.assert_allclose(sharded["because_similarity"], broadcast["because_similarity"], atol=1e-5)
    assert broadcast["because_item_id"].notna().sum() > 100


def test_without_exclude_seen_reasons_come_from_the_rest_of_the_history(spark, inputs):
    recs, figures = run(spark, inputs, k=5, plan="broadcast", explain=True, exclude_seen=False)
    assert figures["reasons"] == "joined"
    seen = inputs["seen"]
    for row in recs.itertuples():
        others = seen.get(row.user_id, set()) - {row.item_id}
        assert (row.because_item_id in others) if others else row.because_item_id is None, row
    assert recs["because_item_id"].notna().sum() > 100


def test_without_a_spark_context_the_matrix_goes_to_a_file_under_the_given_directory(tmp_path):
    """The Spark Connect path of ``matrix_source: auto``, without a server: no broadcast is attempted."""
    import numpy as np

    from segrec.jobs.config import Recommend
    from segrec.jobs.errors import ConfigError
    from segrec.jobs.recommendations.top_k import catalogue_source
    from segrec.udfs.topk.catalogue import Catalogue

    class ConnectLike:  # a session whose sparkContext raises, as Spark Connect's does
        @property
        def sparkContext(self):
            raise AttributeError("sparkContext is not supported in Spark Connect")

    catalogue = Catalogue(item_ids=np.array(["a", "b"]), vectors=np.eye(2, dtype=np.float32))
    key, load = catalogue_source(ConnectLike(), catalogue, Recommend(), str(tmp_path / "staging"))
    (written,) = (tmp_path / "staging").iterdir()
    assert key.startswith("file-") and written.suffix == ".npz"
    loaded = load()
    assert list(loaded.item_ids) == ["a", "b"] and np.array_equal(loaded.vectors, catalogue.vectors)
    with pytest.raises(ConfigError, match="matrix_path"):
        catalogue_source(ConnectLike(), catalogue, Recommend(), None)


def test_a_worker_keeps_only_the_most_recent_values():
    from segrec.udfs.worker_cache import WorkerCache

    cache = WorkerCache(size=3)
    keys = [f"lru-test-{i}" for i in range(4)]
    for i, key in enumerate(keys):
        cache.get(key, lambda i=i: i)
    cache.get(keys[1], lambda: -1)  # used again: now the most recent, not reloaded
    cache.get("lru-test-new", lambda: 99)
    assert len(cache) == 3
    assert keys[0] not in cache and keys[2] not in cache and keys[1] in cache
    assert cache.get(keys[1], lambda: -1) == 1 and cache.loads[keys[1]] == 1
    assert cache.get(keys[0], lambda: 0) == 0 and cache.loads[keys[0]] == 2  # evicted, reloaded
    with pytest.raises(ValueError, match="at least one value"):
        WorkerCache(size=0)


def test_a_user_vector_of_the_wrong_size_is_an_input_error_naming_the_user(spark):
    """Found in a Python worker, reported by the CLI as an input problem (exit 2), not as unexpected."""
    from segrec.jobs.cli import worker_input_error
    from segrec.jobs.config import Recommend
    from segrec.jobs.recommendations.top_k import recommendations

    items = spark.createDataFrame([("a", [1.0, 0.0]), ("b", [0.0, 1.0])], "item_id string, vector array<float>")
    users = spark.createDataFrame([("u1", [1.0, 0.0]), ("u2", [1.0, 0.0, 0.0])], "user_id string, vector array<float>")
    interactions = spark.createDataFrame([("u1", "a")], "user_id string, item_id string")
    recs, _ = recommendations(spark, users, items, interactions, None, Recommend(k=1, plan="broadcast"))
    with pytest.raises(Exception) as failed:
        recs.collect()
    assert worker_input_error(failed.value) == (
        "recommend: user 'u2' has a vector of 3 values; the item vectors have 2 (1 such user(s) in this batch)"
    )
    assert worker_input_error(RuntimeError("something else")) is None


def test_a_runs_recommendations_split_each_similarity_into_text_and_learned_parts(spark, small_run):
    """With trained towers, learned_similarity is the user vector against the item's learned part (0
    for an item without a learned embedding) plus, blended, w x ALS's product, and the rest of the
    similarity is its text's."""
    root, _ = small_run
    out = root / "out"
    recs = pd.read_parquet(out / "recommendations")
    users = pd.read_parquet(out / "user_vectors").set_index("user_id")["vector"]
    items = pd.read_parquet(out / "trained_item_vectors").set_index("item_id")
    weight = json.loads((out / "towers" / "towers.json").read_text())["als_weight"]
    # objective auto: order-free towers (blended at w = 1) or sequential ones (w = 0), as validation chose
    assert weight == (
        1.0
        if json.loads((out / "towers" / "towers.json").read_text())["settings"]["objective"] == "order_free"
        else 0.0
    )
    g, f = pd.Series(dtype=object), pd.Series(dtype=object)
    if weight:
        g = pd.read_parquet(out / "als_user_factors").set_index("user_id")["factor"]
        f = pd.read_parquet(out / "als_item_factors").set_index("item_id")["factor"]
    assert recs["learned_similarity"].notna().all()
    for row in recs.itertuples():
        u = users[row.user_id].astype(np.float64)
        part = items.at[row.item_id, "learned_part"]
        als = weight * float(np.dot(g[row.user_id], f[row.item_id])) if row.user_id in g and row.item_id in f else 0.0
        expected = (0.0 if part is None else float(u @ np.asarray(part, np.float64))) + als
        assert row.learned_similarity == pytest.approx(expected, abs=1e-5)
        text_part = np.asarray(items.at[row.item_id, "vector"], np.float64) - (0 if part is None else np.asarray(part))
        assert row.similarity - row.learned_similarity == pytest.approx(float(u @ text_part), abs=1e-5)
    manifest = json.loads((out / "manifest.json").read_text())
    first = manifest["sample_recommendations"][0]
    assert first["from_text"] + first["from_interactions"] + first["from_popularity"] == pytest.approx(
        first["score"], abs=2e-4
    )


def test_both_plans_give_the_same_learned_parts(spark, inputs):
    items = inputs["item_vectors"].toPandas()
    rng = np.random.default_rng(3)
    items["learned_part"] = [
        None if j % 5 == 0 else list(rng.standard_normal(DIM).astype(np.float32) * 0.1) for j in range(len(items))
    ]
    with_parts = dict(
        inputs,
        item_vectors=spark.createDataFrame(items, "item_id string, vector array<float>, learned_part array<float>"),
    )
    broadcast, _ = run(spark, with_parts, k=5, plan="broadcast", explain=True)
    sharded, figures = run(spark, with_parts, k=5, max_broadcast_mb=30 * DIM * 4 / 2**20, user_block=8, explain=True)
    assert figures["plan"] == "sharded"
    np.testing.assert_allclose(sharded["learned_similarity"], broadcast["learned_similarity"], atol=1e-9)
    users = inputs["user_vectors"].toPandas().set_index("user_id")["vector"]
    parts = items.set_index("item_id")["learned_part"]
    expected = [
        0.0 if parts[r.item_id] is None else float(np.dot(users[r.user_id], parts[r.item_id]))
        for r in broadcast.itertuples()
    ]
    np.testing.assert_allclose(broadcast["learned_similarity"], expected, atol=1e-5)
    plain, _ = run(spark, with_parts, k=5, plan="broadcast")  # explain off: no parts shipped, none computed
    assert plain["learned_similarity"].isna().all()


@pytest.mark.parametrize("source", ["broadcast", "file"])
def test_the_stage_searches_the_index_on_its_workers_and_reports_recall(spark, inputs, tmp_path, source):
    exact, _ = run(spark, inputs, k=5, plan="broadcast", explain=True)
    file = {"matrix_source": "file", "matrix_path": str(tmp_path / "items.npz")} if source == "file" else {}
    searched, figures = run(
        spark, inputs, k=5, plan="broadcast", explain=True, search="ivf", ivf_lists=3, min_recall=1.0, **file
    )
    assert figures["search"] == "ivf" and figures["ivf_lists"] == 3
    assert figures["recall_at_k"] == 1.0 and figures["recall_users"] == N_USERS  # fewer users than the sample
    pd.testing.assert_frame_equal(searched, exact)  # reasons too, found in the worker
    _, one = run(spark, inputs, k=5, plan="broadcast", search="ivf", ivf_lists=3, min_recall=0.01)
    assert one["ivf_probes"] == 1 and 0.01 <= one["recall_at_k"] <= 1.0


def test_an_unreachable_recall_stops_ivf_and_sends_auto_to_exact_search(spark, inputs):
    from segrec.jobs.errors import ConfigError

    # ranked mostly by segment popularity: the index, searched by similarity, cannot reach those lists
    asked = {"k": 5, "plan": "broadcast", "popularity_weight": 5.0, "ivf_lists": 3, "min_recall": 1.0}
    with pytest.raises(ConfigError, match=r"recall@5 0\.\d{4} on 40 sampled users even searching all 3 lists"):
        run(spark, inputs, search="ivf", **asked)
    fallback, figures = run(spark, inputs, search="auto", ivf_min_items=1, **asked)
    exact, _ = run(spark, inputs, search="exact", **asked)
    assert figures["search"] == "exact" and figures["ivf_recall_short"] is True
    pd.testing.assert_frame_equal(fallback, exact)


@pytest.mark.parametrize("plan", ["broadcast", "sharded"])
def test_new_item_slots_give_each_list_the_best_new_items_ranked_by_score(spark, inputs, plan):
    k, slots = 10, 2
    plain, _ = run(spark, inputs, plan=plan)
    slotted, figures = run(spark, inputs, plan=plan, new_item_slots=slots)
    new = {f"i{j:03d}" for j in range(N_ITEMS)} - {i for seen in inputs["seen"].values() for i in seen}
    assert figures["new_items"] == len(new) == 3  # u000 touched every item but the last 3
    users = inputs["user_vectors"].toPandas().set_index("user_id")["vector"]
    items = inputs["item_vectors"].toPandas().set_index("item_id")["vector"]
    for user, got in slotted.groupby("user_id"):
        got = got.sort_values("rank")
        mine = plain[plain["user_id"] == user].sort_values("rank")
        unseen_new = sorted(new - inputs["seen"].get(user, set()))
        by_score = sorted(unseen_new, key=lambda i: (-float(np.dot(users[user], items[i])), i))
        # the list's first k - slots, the best `slots` new items (one there already counts), then the list's next
        expected = set(mine["item_id"][: k - slots]) | set(by_score[:slots])
        rest = [i for i in mine["item_id"][k - slots :] if i not in expected]
        expected |= set(rest[: len(mine) - len(expected)])
        assert set(got["item_id"]) == expected, user
        assert len(got) == len(mine) and got["rank"].tolist() == list(range(1, len(got) + 1))
        assert (np.diff(got["score"].to_numpy()) <= 1e-12).all()  # ranked by score, new items where theirs puts them
        assert len(set(got["item_id"]) & new) >= min(slots, len(unseen_new)), user
    # no slots: the lists as they were
    assert run(spark, inputs, plan=plan, new_item_slots=0)[0].equals(plain)
    # slots, in a catalogue without new items: the lists as they are without slots
    touched = inputs["interactions"].select("item_id").distinct()
    known = {**inputs, "item_vectors": inputs["item_vectors"].join(touched, on="item_id", how="left_semi")}
    none_new, figures = run(spark, known, plan=plan, new_item_slots=slots)
    assert figures["new_items"] == 0 and none_new.equals(run(spark, known, plan=plan)[0])


def test_every_recommendation_says_whether_its_item_is_new(spark, tmp_path):
    from segrec.jobs.recommendations.top_k import new_items
    from segrec.jobs.stages.recommend import flag_new_items

    items = spark.createDataFrame([(f"i{j}", [1.0]) for j in range(4)], "item_id string, vector array<float>")
    events = spark.createDataFrame(
        [("u1", "i0"), ("u2", "i0"), ("u1", "i1"), ("u1", "i3"), ("u2", "i3")], "user_id string, item_id string"
    )
    assert {r.item_id for r in new_items(items, events, 1).collect()} == {"i2"}
    assert {r.item_id for r in new_items(items, events, 2).collect()} == {"i1", "i2"}  # one interaction: still new
    recs = spark.createDataFrame(
        [("u3", 1, "i2", 0.5), ("u3", 2, "i1", 0.4), ("u3", 3, "i0", 0.3)],
        "user_id string, rank int, item_id string, score double",
    )
    flagged = flag_new_items(recs, new_items(items, events, 2)).orderBy("rank").collect()
    assert [(r.item_id, r.new_item) for r in flagged] == [("i2", True), ("i1", True), ("i0", False)]
    assert flag_new_items(recs, new_items(items, events, 2)).columns == [*recs.columns, "new_item"]
