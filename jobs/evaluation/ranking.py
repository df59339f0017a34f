"""Ranking metrics at k, computed with Spark (no recommendation list is collected to the driver).

For each user with held-out (relevant) items, over the first k recommendations:
- precision = hits / k; recall = hits / relevant; hit rate = 1 if any hit;
- NDCG = sum over hits of 1 / log2(rank + 1), divided by the same sum for an ideal list
  (min(relevant, k) hits at ranks 1, 2, ...);
- MAP = sum over hits of (hits up to that rank / rank), divided by min(relevant, k);
- MRR = 1 / rank of the first hit (0 without one).
Each metric is the mean over users with relevant items; a user with no recommendations scores 0.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

METRICS = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate")


def _discount(rank) -> F.Column:
    return F.lit(1.0) / F.log2(rank + F.lit(1.0))


def per_user_metrics(recommendations: DataFrame, relevant: DataFrame, k: int) -> DataFrame:
    """(user_id, precision, recall, ndcg, map, mrr, hit_rate) at ``k`` of ``recommendations`` for every user in
    ``relevant``."""
    relevant = relevant.select("user_id", "item_id").distinct()
    n_relevant = relevant.groupBy("user_id").agg(F.count("*").alias("n_relevant"))
    hits = (
        recommendations.where(F.col("rank") <= k)
        .select("user_id", "item_id", "rank")
        .join(relevant, on=["user_id", "item_id"], how="inner")
        .withColumn("hits_so_far", F.count("*").over(Window.partitionBy("user_id").orderBy("rank")))
    )
    per_user = hits.groupBy("user_id").agg(
        F.count("*").alias("hits"),
        F.sum(_discount(F.col("rank"))).alias("dcg"),
        F.sum(F.col("hits_so_far") / F.col("rank")).alias("precision_sum"),
        F.min("rank").alias("first_hit"),
    )
    ideal_hits = F.least(F.col("n_relevant"), F.lit(k))
    idcg = F.aggregate(F.sequence(F.lit(1), ideal_hits), F.lit(0.0), lambda acc, r: acc + _discount(r))
    joined = n_relevant.join(per_user, on="user_id", how="left").fillna(0, subset=["hits", "dcg", "precision_sum"])
    return joined.select(
        "user_id",
        (F.col("hits") / F.lit(k)).alias("precision"),
        (F.col("hits") / F.col("n_relevant")).alias("recall"),
        (F.col("dcg") / idcg).alias("ndcg"),
        (F.col("precision_sum") / ideal_hits).alias("map"),
        F.coalesce(F.lit(1.0) / F.col("first_hit"), F.lit(0.0)).alias("mrr"),
        (F.col("hits") > 0).cast("double").alias("hit_rate"),
    )


def ranking_metrics(recommendations: DataFrame, relevant: DataFrame, ks: list[int]) -> dict[int, dict[str, float]]:
    """{k: {metric: mean over users}} of ``recommendations`` against ``relevant`` for each k of ``ks``; one
    small aggregate per k reaches the driver."""
    results = {}
    for k in ks:
        row = per_user_metrics(recommendations, relevant, k).agg(*[F.avg(m).alias(m) for m in METRICS]).collect()[0]
        results[k] = {m: float(row[m]) if row[m] is not None else 0.0 for m in METRICS}
    return results
