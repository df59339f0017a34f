"""Beyond-accuracy metrics of recommendation lists and segment quality, computed with Spark.

Over the first k recommendations of every user who has any:
- coverage: distinct recommended items / items in the catalogue;
- novelty: mean self-information -log2 p(item), p = (training users of the item + 1) / (training
  users + 1) (add-one, so an item nobody interacted with has a finite, large value);
- intra-list diversity: mean over users of the mean pairwise cosine distance between the content
  vectors of their recommended items. For unit vectors the pairwise sum needs no pairs:
  sum_{i != j} v_i . v_j = |sum v|^2 - sum |v|^2, so it is one vector sum per user (Summarizer);
- personalisation: 1 - mean over pairs of users of |list_u & list_v| / k. The pair sum is
  sum over items of c(c - 1) with c the number of users whose list holds the item, so no pairs either;
- long_tail_share: share of recommended rows whose item is in the long tail.

Segment quality: cosine silhouette (MLlib ClusteringEvaluator), Davies-Bouldin on the unit sphere
(scatter = mean Euclidean distance of members to their centroid, sqrt(2 * cosine distance)), sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from segrec.udfs.segments import normalise_rows


def item_user_counts(train: DataFrame) -> DataFrame:
    """(item_id, users): distinct ``train`` users per item."""
    return train.select("user_id", "item_id").distinct().groupBy("item_id").agg(F.count("*").alias("users"))


@dataclass
class Reference:
    """What lists are measured against, computed once per evaluation (not once per model and k)."""

    item_vectors: DataFrame
    items: DataFrame  # (item_id, users, long_tail) for every catalogue item
    n_items: int
    n_train_users: int


def reference(train: DataFrame, item_vectors: DataFrame, head_share: float) -> Reference:
    """The catalogue (``item_vectors``) with each item's ``train`` users, and long_tail true outside the ``head_share``
    most popular items (ties by id)."""
    n_items = item_vectors.count()
    n_head = int(round(n_items * head_share))
    counted = (
        item_vectors.select("item_id")
        .join(item_user_counts(train), on="item_id", how="left")
        .select("item_id", F.coalesce("users", F.lit(0)).alias("users"))
    )
    # The head is the n_head most popular items, ties by id. Without a global window: the items per
    # popularity level reach the driver (one row per distinct count, few), which gives the cut level
    # and how many items of that level are in the head; within the level, ranks by id per level.
    levels = sorted(
        ((r["users"], r["n"]) for r in counted.groupBy("users").agg(F.count("*").alias("n")).collect()), reverse=True
    )
    cut_level, taken_at_cut, seen = None, 0, 0
    for users, n in levels:
        if seen + n >= n_head:
            cut_level, taken_at_cut = users, n_head - seen
            break
        seen += n
    if cut_level is None or n_head == 0:
        head = F.lit(n_head > 0)  # every item is in the head (or none)
    else:
        within = F.row_number().over(Window.partitionBy("users").orderBy(F.asc("item_id")))
        head = (F.col("users") > cut_level) | ((F.col("users") == cut_level) & (within <= taken_at_cut))
    items = counted.select("item_id", "users", (~head).alias("long_tail"))
    return Reference(item_vectors, items, n_items, train.select("user_id").distinct().count())


def long_tail_items(ref: Reference) -> DataFrame:
    """(item_id) of the long-tail items of the reference ``ref``."""
    return ref.items.where(F.col("long_tail")).select("item_id")


def list_metrics(recommendations: DataFrame, ref: Reference, k: int) -> dict[str, float | None]:
    """{metric: value} for the first k recommendations of each user, against the reference ``ref`` (see the
    module text)."""
    recs = recommendations.where(F.col("rank") <= k).select("user_id", "item_id").cache()
    totals = (
        recs.groupBy("item_id")
        .agg(F.count("*").alias("c"))
        .agg(F.count("*").alias("distinct_items"), F.sum(F.col("c") * (F.col("c") - 1)).alias("pair_overlap"))
        .collect()[0]
    )
    bits = -F.log2((F.col("users") + 1) / F.lit(ref.n_train_users + 1))
    rows = (
        recs.join(ref.items, on="item_id", how="left")
        .agg(
            F.count("*").alias("rows"),
            F.countDistinct("user_id").alias("users"),
            F.avg(bits).alias("novelty"),
            F.sum(F.col("long_tail").cast("int")).alias("tail_rows"),
        )
        .collect()[0]
    )

    vectors = recs.join(
        ref.item_vectors.select("item_id", array_to_vector(F.col("vector")).alias("v")), on="item_id", how="inner"
    )
    per_user = vectors.groupBy("user_id").agg(
        Summarizer.sum(F.col("v")).alias("s"),
        F.count("*").alias("n"),
        F.sum(F.aggregate(vector_to_array(F.col("v")), F.lit(0.0), lambda a, x: a + x * x)).alias("sq"),
    )
    norm2 = F.aggregate(vector_to_array(F.col("s")), F.lit(0.0), lambda a, x: a + x * x)
    mean_cos = (norm2 - F.col("sq")) / (F.col("n") * (F.col("n") - 1))
    diversity = per_user.where(F.col("n") >= 2).agg(F.avg(1 - mean_cos)).collect()[0][0]
    recs.unpersist()

    pairs = rows["users"] * (rows["users"] - 1)
    return {
        "coverage": (totals["distinct_items"] or 0) / max(ref.n_items, 1),
        "novelty": float(rows["novelty"]) if rows["novelty"] is not None else 0.0,
        "diversity": float(diversity) if diversity is not None else None,  # no list of two or more
        "personalisation": 1.0 - (totals["pair_overlap"] or 0) / (pairs * k) if pairs else 0.0,
        "long_tail_share": (rows["tail_rows"] or 0) / rows["rows"] if rows["rows"] else 0.0,
    }


def segment_quality(user_vectors: DataFrame, segments: DataFrame, centroids: np.ndarray) -> dict:
    """Silhouette (cosine), Davies-Bouldin (unit sphere) and the size of every segment of ``segments`` over
    ``user_vectors``, cut by ``centroids``."""
    joined = user_vectors.select("user_id", "vector").join(
        segments.select("user_id", "segment_id", "distance"), on="user_id", how="inner"
    )
    evaluator = ClusteringEvaluator(distanceMeasure="cosine", featuresCol="features", predictionCol="segment_id")
    k = len(centroids)
    silhouette = (
        evaluator.evaluate(
            joined.select(array_to_vector(F.col("vector")).alias("features"), F.col("segment_id").cast("double"))
        )
        if k > 1
        else None
    )
    stats = {
        r["segment_id"]: (r["size"], r["scatter"])
        for r in joined.groupBy("segment_id")
        .agg(F.count("*").alias("size"), F.avg(F.sqrt(F.greatest(2 * F.col("distance"), F.lit(0.0)))).alias("scatter"))
        .collect()
    }
    return {
        "k": k,
        "silhouette": float(silhouette) if silhouette is not None else None,
        "davies_bouldin": davies_bouldin(centroids, {s: v[1] for s, v in stats.items()}),
        "sizes": {int(s): int(v[0]) for s, v in sorted(stats.items())},
    }


def davies_bouldin(centroids: np.ndarray, scatter: dict[int, float]) -> float | None:
    """Mean over segments of the worst (S_i + S_j) / d(c_i, c_j), with S the segments' ``scatter`` and c
    their ``centroids``; lower is better. None below 2."""
    centres = normalise_rows(centroids)
    present = sorted(scatter)
    if len(present) < 2:
        return None
    worst = []
    for i in present:
        ratios = [
            (scatter[i] + scatter[j]) / max(float(np.linalg.norm(centres[i] - centres[j])), 1e-12)
            for j in present
            if j != i
        ]
        worst.append(max(ratios))
    return float(np.mean(worst))


def list_churn(previous: DataFrame, current: DataFrame) -> dict:
    """How much the lists changed since the previous run, over the users who have a list in both
    (``previous`` and ``current``: user_id, item_id): the mean Jaccard of a user's two item sets
    (1: the same items, in any order) and those users' count, in one aggregation."""
    before = previous.groupBy("user_id").agg(F.collect_set("item_id").alias("before"))
    now = current.groupBy("user_id").agg(F.collect_set("item_id").alias("now"))
    shared = F.size(F.array_intersect("before", "now"))
    jaccard = shared / F.size(F.array_union("before", "now"))
    row = (
        before.join(now, on="user_id", how="inner")
        .agg(F.avg(jaccard).alias("jaccard"), F.count("*").alias("users"))
        .collect()[0]
    )
    return {
        "list_jaccard_with_previous": None if row["jaccard"] is None else round(float(row["jaccard"]), 6),
        "users_with_previous_list": int(row["users"]),
    }
