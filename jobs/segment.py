"""Stage 3, segment: MLlib KMeans (cosine) on user vectors, per-user segments, segment portraits.

k is fixed or chosen over [k_min, k_max] by cosine silhouette on a seeded sample (the curve goes in the
manifest). Outputs:
- ``segments``: user_id, segment_id, distance (1 - cosine to the centroid), top_segments and
  top_weights (the 3 highest soft memberships, softmax over cosine / temperature);
- ``segment_summary``: segment_id, size, share, label_terms (class-based TF-IDF over the texts of the
  segment's users and of the items they engaged with), representative_items (nearest the centroid),
  engaged_items with their lift over the whole population, nearest_segment, and a one-line
  description. Terms and engaged items are shown only when ``segment.min_term_users`` of the segment's
  users share them, so a portrait never singles a person out;
- ``segment_model``: the fitted KMeansModel (Spark ML persistence), so ``segment.mode: assign`` places
  new users without refitting. A refit reports stability against the previous ``segments``.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import RegexTokenizer, StopWordsRemover
from pyspark.ml.functions import array_to_vector
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from scipy.optimize import linear_sum_assignment

from segrec.jobs.config import Segment
from segrec.jobs.context import RunContext
from segrec.jobs.errors import InputError
from segrec.jobs.io import local_path
from segrec.jobs.train import item_vectors_for, space_of
from segrec.udfs.pii import ANY_PLACEHOLDER as PLACEHOLDERS
from segrec.udfs.schemas import SEGMENT_ASSIGNMENT, spark_schema
from segrec.udfs.segments import assign, normalise_rows

log = logging.getLogger("segrec")

SEGMENT_SCHEMA = spark_schema(SEGMENT_ASSIGNMENT)


# ------------------------------------------------------------------------------------ fitting


def features(user_vectors: DataFrame) -> DataFrame:
    return user_vectors.select("user_id", array_to_vector("vector").alias("features"))


def kmeans(k: int, settings: Segment) -> KMeans:
    return KMeans(
        k=k, seed=settings.seed, maxIter=settings.max_iter, tol=settings.tol,
        initMode="k-means||", distanceMeasure="cosine", featuresCol="features", predictionCol="prediction",
    )


def silhouette_curve(feats: DataFrame, settings: Segment, n_users: int) -> dict[int, float]:
    """Cosine silhouette of a KMeans fit for each k in range, on a seeded sample of users."""
    sampled = settings.sample_fraction < 1.0
    # The whole set is cached by the caller already (caching it again only makes Spark warn).
    sample = feats.sample(fraction=settings.sample_fraction, seed=settings.seed).cache() if sampled else feats
    evaluator = ClusteringEvaluator(distanceMeasure="cosine", featuresCol="features", predictionCol="prediction")
    curve = {}
    for k in range(settings.k_min, min(settings.k_max, n_users - 1) + 1):
        predictions = kmeans(k, settings).fit(sample).transform(sample)
        curve[k] = round(float(evaluator.evaluate(predictions)), 6)
    if sampled:
        sample.unpersist()
    return curve


def choose_k(curve: dict[int, float]) -> int:
    """The k with the highest silhouette; the smaller k on a tie."""
    return max(sorted(curve), key=lambda k: curve[k])


def fit(feats: DataFrame, settings: Segment, n_users: int) -> tuple[KMeansModel, dict[int, float] | None]:
    """The fitted model and, when k is chosen automatically, the silhouette curve it was chosen on."""
    if n_users < 3:
        raise InputError(f"segment: {n_users} user vector(s); fitting segments needs at least 3 users")
    curve = None
    if settings.k == "auto":
        curve = silhouette_curve(feats, settings, n_users)
        k = choose_k(curve)
    else:
        k = min(settings.k, n_users - 1)
        if k != settings.k:
            log.warning("segment.k=%d exceeds users - 1: using k=%d", settings.k, k)
    return kmeans(k, settings).fit(feats), curve


# --------------------------------------------------------------------------------- assignment


def assign_segments(user_vectors: DataFrame, centroids: np.ndarray, temperature: float) -> DataFrame:
    """(user_id, segment_id, distance, top_segments, top_weights) from the centroids, on executors."""
    centres = normalise_rows(centroids)

    @F.pandas_udf(SEGMENT_SCHEMA)
    def place(vectors: pd.Series) -> pd.DataFrame:
        matrix = np.stack(vectors.to_numpy()) if len(vectors) else np.zeros((0, centres.shape[1]), np.float32)
        segment, distance, top_ids, top_weights = assign(matrix, centres, temperature)
        return pd.DataFrame(
            {"segment_id": segment.astype("int32"), "distance": distance,
             "top_segments": list(top_ids.astype("int32")), "top_weights": list(top_weights)}
        )

    placed = user_vectors.select("user_id", place("vector").alias("s"))
    return placed.select("user_id", "s.segment_id", "s.distance", "s.top_segments", "s.top_weights")


def stability(previous: DataFrame, current: DataFrame) -> float | None:
    """Share of users in both runs whose segment matches, after matching segments one-to-one."""
    pairs = (
        previous.select("user_id", F.col("segment_id").alias("old"))
        .join(current.select("user_id", F.col("segment_id").alias("new")), on="user_id", how="inner")
        .groupBy("old", "new").count().collect()
    )
    if not pairs:
        return None
    olds = sorted({p["old"] for p in pairs})
    news = sorted({p["new"] for p in pairs})
    table = np.zeros((len(olds), len(news)))
    for p in pairs:
        table[olds.index(p["old"]), news.index(p["new"])] = p["count"]
    rows, cols = linear_sum_assignment(table, maximize=True)
    return round(float(table[rows, cols].sum() / table.sum()), 6)


# ---------------------------------------------------------------------------------- portraits


def top_n(df: DataFrame, n: int, order: list, name: str, value) -> DataFrame:
    """(segment_id, name): the first ``n`` rows of each segment by ``order``, as an ordered array."""
    ranked = df.withColumn("_rank", F.row_number().over(Window.partitionBy("segment_id").orderBy(*order)))
    return (
        ranked.where(F.col("_rank") <= n)
        .groupBy("segment_id")
        .agg(F.array_sort(F.collect_list(F.struct(F.col("_rank"), value.alias("v")))).alias("_items"))
        .select("segment_id", F.transform("_items", lambda x: x["v"]).alias(name))
    )


def engaged(interactions: DataFrame) -> DataFrame:
    """Interactions that express interest: rating at or above the user's mean, or any implicit one."""
    with_mean = interactions.withColumn("_mean", F.avg("rating").over(Window.partitionBy("user_id")))
    return with_mean.where(F.col("rating").isNull() | (F.col("rating") >= F.col("_mean"))).select("user_id", "item_id")


def label_terms(
    segments: DataFrame, users: DataFrame | None, items: DataFrame, interactions: DataFrame, n: int, min_users: int
) -> DataFrame:
    """(segment_id, label_terms): class-based TF-IDF over each segment's user and engaged-item texts.

    tf = count of a term in the segment / terms in the segment; idf = log(1 + A / f) with A the mean
    number of terms per segment and f the term's count over all segments (BERTopic's c-TF-IDF).
    Only terms that at least ``min_users`` distinct users of the segment wrote or engaged with can
    label it: a name, a street or an e-mail domain that one person writes many times cannot single
    them out (and a segment smaller than ``min_users`` gets no terms).
    """
    texts = engaged(interactions).join(items.select("item_id", "text"), on="item_id", how="inner").select("user_id", "text")
    if users is not None:
        texts = texts.unionByName(users.where(F.col("text").isNotNull()).select("user_id", "text"))
    docs = texts.join(segments.select("user_id", "segment_id"), on="user_id", how="inner")
    # the placeholders of redacted personal data (<email>, <phone>, ...) are not words of the segment
    docs = docs.withColumn("text", F.regexp_replace("text", PLACEHOLDERS, " "))
    tokens = RegexTokenizer(inputCol="text", outputCol="_tokens", pattern=r"[^\p{L}\p{N}']+", minTokenLength=3).transform(docs)
    words = StopWordsRemover(inputCol="_tokens", outputCol="_words").transform(tokens)
    terms = (
        words.select("segment_id", "user_id", F.explode("_words").alias("term"))
        .where(~F.col("term").rlike(r"^[\d']+$"))
        .groupBy("segment_id", "term").agg(F.count("*").alias("count"), F.countDistinct("user_id").alias("users"))
    )
    per_segment = Window.partitionBy("segment_id")
    per_term = Window.partitionBy("term")
    # The mean number of terms per segment, as a one-row aggregate joined to every term (a window
    # without partition columns would move every term into one task).
    average = terms.agg((F.sum("count") / F.countDistinct("segment_id")).alias("avg_terms"))
    scored = (
        terms.withColumn("tf", F.col("count") / F.sum("count").over(per_segment))
        .withColumn("f", F.sum("count").over(per_term))
        .join(F.broadcast(average), how="cross")
        .withColumn("score", F.col("tf") * F.log(1 + F.col("avg_terms") / F.col("f")))
    )
    shown = scored.where(F.col("users") >= min_users)  # idf counted over every term, shown or not
    return top_n(shown, n, [F.desc("score"), F.asc("term")], "label_terms", F.col("term"))


def item_label(items: DataFrame) -> DataFrame:
    """(item_id, item): the id and the first 60 characters of its text, for people to read."""
    text = F.when(F.length("text") > 60, F.concat(F.substring("text", 1, 57), F.lit("..."))).otherwise(F.col("text"))
    return items.select("item_id", F.concat_ws(": ", "item_id", F.coalesce(text, F.lit(""))).alias("item"))


def representative_items(item_vectors: DataFrame, items: DataFrame, centroids: np.ndarray, n: int) -> DataFrame:
    """(segment_id, representative_items): the items whose vectors are nearest each centroid."""
    centres = normalise_rows(centroids)

    @F.pandas_udf("array<float>")
    def sims(vectors: pd.Series) -> pd.Series:
        matrix = np.stack(vectors.to_numpy()) if len(vectors) else np.zeros((0, centres.shape[1]), np.float32)
        return pd.Series(list((matrix @ centres.T).astype(np.float32)))

    scored = item_vectors.select("item_id", F.posexplode(sims("vector")).alias("segment_id", "sim"))
    labelled = scored.join(item_label(items), on="item_id", how="inner")
    return top_n(labelled, n, [F.desc("sim"), F.asc("item_id")], "representative_items", F.col("item"))


def engaged_items(
    segments: DataFrame, interactions: DataFrame, items: DataFrame, n: int, total: int, min_users: int
) -> DataFrame:
    """(segment_id, engaged_items): items most engaged with in the segment, each with its lift; only
    items at least ``min_users`` of the segment's users engaged with.

    ``total`` is the number of users in all segments.

    lift = (share of the segment's users engaging with the item) / (share of all users doing so).
    """
    pairs = engaged(interactions).join(segments.select("user_id", "segment_id"), on="user_id", how="inner").distinct()
    sizes = segments.groupBy("segment_id").agg(F.count("*").alias("size"))
    overall = pairs.groupBy("item_id").agg(F.count("*").alias("all_users"))
    counts = pairs.groupBy("segment_id", "item_id").agg(F.count("*").alias("users"))
    scored = (
        counts.where(F.col("users") >= min_users)
        .join(sizes, on="segment_id", how="inner")
        .join(overall, on="item_id", how="inner")
        .withColumn("lift", (F.col("users") / F.col("size")) / (F.col("all_users") / F.lit(total)))
        .join(item_label(items), on="item_id", how="inner")
    )
    value = F.struct(F.col("item"), F.col("users"), F.round("lift", 2).alias("lift"))
    return top_n(scored, n, [F.desc("users"), F.desc("lift"), F.asc("item_id")], "engaged_items", value)


def nearest_segments(spark: SparkSession, centroids: np.ndarray) -> DataFrame:
    centres = normalise_rows(centroids)
    sims = centres @ centres.T
    np.fill_diagonal(sims, -np.inf)
    rows = [(i, int(np.argmax(sims[i])) if len(centres) > 1 else None) for i in range(len(centres))]
    return spark.createDataFrame(rows, "segment_id int, nearest_segment int")


def summarise(
    spark: SparkSession, segments: DataFrame, users: DataFrame | None, items: DataFrame,
    interactions: DataFrame, item_vectors: DataFrame, centroids: np.ndarray, settings: Segment,
) -> DataFrame:
    total = segments.count()
    sizes = segments.groupBy("segment_id").agg(F.count("*").alias("size")).withColumn(
        "share", F.round(F.col("size") / F.lit(total), 4)
    )
    return (
        sizes.join(label_terms(segments, users, items, interactions, settings.label_terms, settings.min_term_users),
                   on="segment_id", how="left")
        .join(representative_items(item_vectors, items, centroids, settings.top_items), on="segment_id", how="left")
        .join(engaged_items(segments, interactions, items, settings.top_items, total, settings.min_term_users),
              on="segment_id", how="left")
        .join(nearest_segments(spark, centroids), on="segment_id", how="left")
        .withColumn("description", description())
        .orderBy("segment_id")
    )


def description() -> Column:
    """One line a person can read: size, share, the first label terms and the most engaged items."""
    terms = F.array_join(F.slice(F.coalesce("label_terms", F.array()), 1, 4), ", ")
    engaged_names = F.transform(F.slice(F.coalesce("engaged_items", F.array()), 1, 2),
                                lambda e: F.concat(e["item"], F.lit(" (lift "), e["lift"].cast("string"), F.lit(")")))
    return F.concat_ws(
        "; ",
        F.format_string("%d users (%.1f%%)", F.col("size"), F.col("share") * 100),
        F.when(F.length(terms) > 0, F.concat(F.lit("about "), terms)),
        F.when(F.size(engaged_names) > 0, F.concat(F.lit("most engaged: "), F.array_join(engaged_names, ", "))),
    )


# -------------------------------------------------------------------------------------- stage


def load_model(path: str) -> KMeansModel:
    try:
        return KMeansModel.load(path)
    except Exception as exc:
        raise InputError(f"segment.mode=assign: cannot load a segment model from {path}: {str(exc).splitlines()[0]}") from None


def run(ctx: RunContext) -> dict:
    store, settings, spark = ctx.store, ctx.config.segment, ctx.spark
    user_vectors = store.read("user_vectors", needed_by="segment")
    interactions = store.read("interactions", needed_by="segment")
    items = store.read("items", needed_by="segment")
    item_vectors = item_vectors_for(store, space_of(user_vectors))  # the user vectors' own space
    users = store.read("users") if store.exists("users") else None

    with ctx.manifest.stage("segment") as figures:
        feats = features(user_vectors).cache()
        n_users = feats.count()
        if settings.mode == "assign":
            model = load_model(settings.model_path or store.path("segment_model"))
            figures["mode"] = "assign"
        else:
            model, curve = fit(feats, settings, n_users)
            if curve is not None:
                figures["silhouette_by_k"] = curve
            figures["mode"] = "fit"
        centroids = np.array(model.clusterCenters(), dtype=np.float32)
        dim = len(user_vectors.select("vector").first()["vector"])
        if centroids.shape[1] != dim:
            raise InputError(f"segment model has {centroids.shape[1]}-dim centroids, user vectors have {dim}")
        feats.unpersist()

        segments = store.write_staged(assign_segments(user_vectors, centroids, settings.temperature), "segments_new")
        if settings.mode == "fit" and store.exists("segments"):
            figures["stability"] = stability(store.read("segments"), segments)
        summary = summarise(spark, segments, users, items, interactions, item_vectors, centroids, settings)
        outputs = {"segments": segments, "segment_summary": summary}
        store.write_together(outputs)
        if settings.mode == "fit":
            store.save_model(model, "segment_model")
            ctx.manifest.record_output("segment_model")
            log_to_tracker(ctx, centroids, figures.get("silhouette_by_k"))
        store.drop_staged("segments_new")
        for name in outputs:
            ctx.manifest.record_output(name)

        table = [row.asDict(recursive=True) for row in store.read("segment_summary").orderBy("segment_id").collect()]
        figures.update(k=len(centroids), users=n_users)
        ctx.manifest.segments = table
    return figures


def log_to_tracker(ctx: RunContext, centroids: np.ndarray, curve: dict[int, float] | None) -> None:
    """k, the silhouette curve, and the model: its centroids (all that assigning users needs) and, where
    the output store is on this machine's file system, the Spark ML model directory itself."""
    tracker = ctx.tracker
    if not tracker.enabled:
        return
    tracker.log_metrics({"segment.k": len(centroids)})
    for k, silhouette in sorted((curve or {}).items()):
        tracker.log_metrics({"segment.silhouette": silhouette}, step=int(k))
    tracker.log_json({"k": len(centroids), "centroids": centroids.tolist()}, "models/segment_model/centroids.json")
    folder = local_path(ctx.store.path("segment_model"))
    if os.path.isdir(folder):
        tracker.log_artifacts(folder, "models/segment_model/spark")


def format_table(summary: list[dict], terms: int = 6, top: int = 3) -> str:
    """The segment summary as a short text table for people."""
    lines = [f"{'seg':>3} {'size':>6} {'share':>6}  label terms / top engaged items (lift)"]
    for row in summary:
        words = ", ".join((row.get("label_terms") or [])[:terms])
        lines.append(f"{row['segment_id']:>3} {row['size']:>6} {row['share']:>6.1%}  {words}")
        for entry in (row.get("engaged_items") or [])[:top]:
            lines.append(f"{'':>18}- {entry['item']} ({entry['lift']:.1f}x)")
    return "\n".join(lines)
