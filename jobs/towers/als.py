"""Spark ML ALS (implicit feedback) fitted beside the towers, and its factors added to the towers'
vectors so that one inner product scores both.

Where interactions have no order to learn, the towers and ALS miss different items, and their sum
beats either (docs/design.md, "What the settings were chosen on"). The blend is

    score = towers' cosine(u, v) + w x (ALS user factor g . ALS item factor f)

computed as one inner product of the concatenations [u, sqrt(w) g] . [v, sqrt(w) f]: the recommend
stage's exact and IVF searches, seen-item masks, tie rules and reasons apply to it unchanged. A user or
item without a factor (a new one: no training interaction) has zeros there, so it is scored by the
towers alone, through its text. Segments stay in the towers' space.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from segrec.jobs.config import Train

ALS_USER_FACTORS = "als_user_factors"  # (user_id, factor, model_id): written by train when the blend is on
ALS_ITEM_FACTORS = "als_item_factors"  # (item_id, factor, model_id)

# Buckets for the dense ids: their row counts are all that reaches the driver, however many users.
ID_BUCKETS = 256


@dataclass(frozen=True)
class AlsParams:
    """One ALS cell: ``rank``, ``reg_param`` and ``alpha`` (implicit confidence)."""

    rank: int
    reg_param: float
    alpha: float

    def as_dict(self) -> dict:
        """The cell as a JSON mapping."""
        return {"rank": self.rank, "reg_param": self.reg_param, "alpha": self.alpha}

    @classmethod
    def of(cls, train: Train) -> AlsParams:
        """The blended ALS's parameters from the ``train`` section."""
        return cls(train.als_rank, train.als_reg_param, train.als_alpha)


def blend_weight(train: Train, objective: str) -> float:
    """The weight w of ALS's product in the score, for ``train.als_weight`` and the towers' trained
    ``objective``: ``auto`` is 1 with the order-free objective (where the blend measured 1.02x-1.05x ALS
    at every weight from 0.25 to 4) and 0 with the sequential one (order ALS cannot see: the towers
    alone are ahead)."""
    if train.als_weight == "auto":
        return 1.0 if objective == "order_free" else 0.0
    return float(train.als_weight)


def dense_ids(df: DataFrame, column: str, name: str) -> DataFrame:
    """(column, name): each distinct value of ``column`` in ``df`` numbered 0..n-1 (ALS wants int ids), ordered by
    a hash bucket, then by value. Only the buckets' counts are collected, never the values themselves
    (StringIndexer would collect every label to the driver: 100M user ids do not fit there)."""
    values = df.select(F.col(column).cast("string").alias(column)).distinct()
    bucketed = values.withColumn("_bucket", F.pmod(F.xxhash64(column), F.lit(ID_BUCKETS)).cast("int"))
    counts: dict[int, int] = {row["_bucket"]: row["count"] for row in bucketed.groupBy("_bucket").count().collect()}
    offsets, total = [], 0
    for bucket in range(ID_BUCKETS):
        offsets.append(total)
        total += counts.get(bucket, 0)
    start = F.element_at(F.array(*[F.lit(o) for o in offsets]), F.col("_bucket") + 1)
    within = F.row_number().over(Window.partitionBy("_bucket").orderBy(column)) - 1
    return bucketed.select(column, (start + within).cast("int").alias(name))


@contextmanager
def als_model(
    train: DataFrame, params: AlsParams, max_iter: int, seed: int
) -> Iterator[tuple[ALSModel, DataFrame, DataFrame]]:
    """(model, users, items): Spark ML ALS with implicit feedback fitted on ``train`` with ``params``,
    ``max_iter`` sweeps and ``seed`` (every distinct (user, item) pair a 1), with its dense ids (users:
    user_id, u; items: item_id, i). A context: the distinct pairs stay cached inside it (the ids, the fit
    and the joins back to the ids read them several times), so use the model there."""
    pairs = train.select(F.col("user_id").cast("string"), F.col("item_id").cast("string")).distinct().cache()
    try:
        users, items = dense_ids(pairs, "user_id", "u"), dense_ids(pairs, "item_id", "i")
        indexed = pairs.join(users, on="user_id", how="inner").join(items, on="item_id", how="inner")
        model = ALS(
            rank=params.rank,
            regParam=params.reg_param,
            alpha=params.alpha,
            maxIter=max_iter,
            seed=seed,
            implicitPrefs=True,
            userCol="u",
            itemCol="i",
            ratingCol="r",
        ).fit(indexed.select("u", "i", F.lit(1.0).alias("r")))
        yield model, users, items
    finally:
        pairs.unpersist()


@contextmanager
def als_factors(train: DataFrame, params: AlsParams, max_iter: int, seed: int) -> Iterator[tuple[DataFrame, DataFrame]]:
    """((user_id, factor), (item_id, factor)) of Spark ML ALS with implicit feedback fitted on ``train``
    with ``params``, ``max_iter`` sweeps and ``seed`` (``als_model``). A context, so write or collect the
    factors there."""
    with als_model(train, params, max_iter, seed) as (model, users, items):

        def named(factors: DataFrame, ids: DataFrame, key: str, index: str) -> DataFrame:
            return factors.join(ids.withColumnRenamed(index, "id"), on="id", how="inner").select(
                key, F.col("features").alias("factor")
            )

        yield named(model.userFactors, users, "user_id", "u"), named(model.itemFactors, items, "item_id", "i")


def with_factors(vectors: DataFrame, factors: DataFrame, key: str, weight: float, rank: int) -> DataFrame:
    """``vectors`` (``key``, vector, ...) with each vector extended by sqrt(``weight``) x its row's ALS
    factor from ``factors`` (``key``, factor; ``rank`` values), zeros for a row without one. A
    ``learned_part`` column (trained items) is extended the same way, the factor being learned from
    interactions too: the score's learned share then counts ALS's product."""
    scale = math.sqrt(weight)
    keyed = factors.select(F.col(key).cast("string").alias("_key"), "factor")
    joined = vectors.join(keyed, vectors[key].cast("string") == keyed["_key"], how="left")
    part = F.coalesce(
        F.transform("factor", lambda x: (x * F.lit(scale)).cast("float")),
        F.array_repeat(F.lit(0.0).cast("float"), rank),
    )
    replaced = {"vector": F.concat("vector", part)}
    if "learned_part" in vectors.columns:
        zeros = F.array_repeat(F.lit(0.0).cast("float"), F.size("vector"))
        replaced["learned_part"] = F.when(
            F.col("learned_part").isNotNull() | F.col("factor").isNotNull(),
            F.concat(F.coalesce("learned_part", zeros), part),
        )
    columns = [replaced[c].alias(c) if c in replaced else F.col(c) for c in vectors.columns]
    return joined.select(*columns)


def blended(
    users: DataFrame, items: DataFrame, user_factors: DataFrame, item_factors: DataFrame, weight: float
) -> tuple[DataFrame, DataFrame]:
    """(users, items) with their vectors extended by ALS's ``user_factors`` and ``item_factors`` at
    ``weight`` (``with_factors``), so that their inner product is the blended score."""
    first = item_factors.select(F.size("factor").alias("rank")).first()
    if first is None:
        return users, items  # ALS placed no item: the towers alone
    rank = int(first["rank"])
    return (
        with_factors(users, user_factors, "user_id", weight, rank),
        with_factors(items, item_factors, "item_id", weight, rank),
    )
