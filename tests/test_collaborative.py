"""The ALS blend's pieces: dense ids without a driver-side label list, the weight auto resolves to, and
vectors whose inner product is the towers' cosine plus w x ALS's product."""

import numpy as np
import pandas as pd
import pytest

from segrec.jobs.config import Train
from segrec.jobs.towers.als import AlsParams, als_factors, blend_weight, blended, dense_ids, with_factors


def test_auto_blends_the_order_free_objective_only():
    assert blend_weight(Train(), "order_free") == 1.0
    assert blend_weight(Train(), "sequential") == 0.0  # measured: w >= 0.5 lowers the sequential towers
    assert blend_weight(Train(als_weight=0.25), "sequential") == 0.25
    assert blend_weight(Train(als_weight=0), "order_free") == 0.0
    with pytest.raises(ValueError):
        Train(als_weight=-1.0)


def test_dense_ids_number_every_value_once_from_zero(spark):
    values = [f"user-{i % 37}" for i in range(200)] + ["ü-ñ", ""]
    df = spark.createDataFrame(pd.DataFrame({"user_id": values}))
    ids = dense_ids(df, "user_id", "u").toPandas()
    assert len(ids) == 39 and sorted(ids["u"]) == list(range(39))
    assert set(ids["user_id"]) == set(values)
    again = dense_ids(df.repartition(5), "user_id", "u").toPandas()
    pd.testing.assert_frame_equal(
        ids.sort_values("user_id", ignore_index=True), again.sort_values("user_id", ignore_index=True)
    )


@pytest.fixture(scope="module")
def factors(spark):
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in rng.integers(0, 30, 400)],
            "item_id": [f"i{j}" for j in rng.integers(0, 20, 400)],
        }
    )
    cache = spark._jsparkSession.sharedState().cacheManager()
    cached_before = cache.isEmpty()
    with als_factors(spark.createDataFrame(rows), AlsParams(3, 0.1, 1.0), 4, 7) as (users, items):
        assert not cache.isEmpty()  # the distinct pairs, read by the ids, the fit and the joins
        placed = rows, users.toPandas().set_index("user_id"), items.toPandas().set_index("item_id")
    assert cache.isEmpty() == cached_before  # released on leaving
    return placed


def test_als_factors_place_every_user_and_item_of_the_training_rows(factors):
    rows, users, items = factors
    assert set(users.index) == set(rows["user_id"]) and set(items.index) == set(rows["item_id"])
    assert {len(f) for f in users["factor"]} == {3} == {len(f) for f in items["factor"]}
    assert np.isfinite(np.stack(users["factor"].to_numpy())).all()


def test_blended_vectors_score_the_cosine_plus_w_times_the_als_product(spark, factors):
    _, user_factors, item_factors = factors
    users = spark.createDataFrame(
        pd.DataFrame({"user_id": ["u1", "new-user"], "vector": [[0.6, 0.8], [0.0, 1.0]], "n_items": [3, 0]}),
        "user_id string, vector array<float>, n_items long",
    )
    items = spark.createDataFrame(
        pd.DataFrame(
            {
                "item_id": ["i1", "i2", "new-item"],
                "vector": [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]],
                "learned_part": [[0.5, 0.0], None, None],
                "model_id": ["m"] * 3,
            }
        ),
        "item_id string, vector array<float>, learned_part array<float>, model_id string",
    )
    weight = 2.0
    blended_users, blended_items = blended(
        users,
        items,
        spark.createDataFrame(user_factors.reset_index()),
        spark.createDataFrame(item_factors.reset_index()),
        weight,
    )
    u = blended_users.toPandas().set_index("user_id")
    v = blended_items.toPandas().set_index("item_id")
    assert list(u.columns) == ["vector", "n_items"] and list(v.columns) == ["vector", "learned_part", "model_id"]
    g, f = (np.asarray(user_factors.loc["u1", "factor"]), np.asarray(item_factors.loc["i1", "factor"]))
    np.testing.assert_allclose(np.dot(u.loc["u1", "vector"], v.loc["i1", "vector"]), 0.6 + weight * g @ f, rtol=1e-5)
    # a new user or item has zeros in ALS's place: the towers' cosine alone
    np.testing.assert_allclose(np.dot(u.loc["new-user", "vector"], v.loc["i2", "vector"]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.dot(u.loc["u1", "vector"], v.loc["new-item", "vector"]), 1.0, rtol=1e-6)
    assert np.count_nonzero(v.loc["new-item", "vector"][2:]) == 0
    # the learned part counts ALS's factor: zeros where the item had no learned embedding, null for a new item
    np.testing.assert_allclose(v.loc["i1", "learned_part"], [0.5, 0.0, *(np.sqrt(weight) * f)], rtol=1e-6)
    np.testing.assert_allclose(v.loc["i2", "learned_part"][:2], [0.0, 0.0])
    assert v.loc["new-item", "learned_part"] is None


def test_rows_without_a_factor_get_zeros_of_the_factor_rank(spark):
    vectors = spark.createDataFrame(
        pd.DataFrame({"item_id": ["a", "b"], "vector": [[1.0], [0.5]]}), "item_id string, vector array<float>"
    )
    none = spark.createDataFrame([], "item_id string, factor array<float>")
    out = with_factors(vectors, none, "item_id", 1.0, 4).toPandas().set_index("item_id")
    np.testing.assert_allclose(out.loc["b", "vector"], [0.5, 0, 0, 0, 0])
    users = vectors.withColumnRenamed("item_id", "user_id")
    same_users, same_items = blended(users, vectors, none.withColumnRenamed("item_id", "user_id"), none, 1.0)
    assert same_users is users and same_items is vectors  # ALS placed no item: the towers alone
