"""Segments of users on the driver: fitting (k chosen for reproducibility), assigning users, and the
portraits that say what sets each segment apart.

k is fixed or chosen over [k_min, k_max] for reproducibility (Hennig 2007; Dolnicar & Leisch 2010):
each k is fitted with MLlib on a seeded sample of users, then every segment's Jaccard stability is
scored over bootstrap refits of that sample (one Spark task per k, ``udfs.clustering``). ``auto`` picks
the most segments that all come back (see :func:`choose_k`). Portraits rank label terms and engaged
items by their lift over the whole population, shown only when enough users share them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.ml.clustering import BisectingKMeans, BisectingKMeansModel, KMeans, KMeansModel
from pyspark.ml.feature import StopWordsRemover
from pyspark.ml.functions import array_to_vector
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from segrec.jobs.config import Segment
from segrec.jobs.errors import InputError
from segrec.udfs.clustering import score_k, stability_word
from segrec.udfs.schemas import DATASETS, SEGMENT_ASSIGNMENT, SEGMENT_CONTINUITY, SEGMENT_STABILITY, spark_schema
from segrec.udfs.segments import assign, normalise_rows
from segrec.udfs.terms import terms_of_texts

log = logging.getLogger("segrec")


SEGMENT_SCHEMA = spark_schema(SEGMENT_ASSIGNMENT)


STABILITY_SCHEMA = spark_schema(SEGMENT_STABILITY)


SegmentModel = KMeansModel | BisectingKMeansModel


def features(user_vectors: DataFrame) -> DataFrame:
    return user_vectors.select("user_id", array_to_vector(F.col("vector")).alias("features"))


def estimator(k: int, settings: Segment) -> KMeans | BisectingKMeans:
    """The configured MLlib clustering with ``k`` segments, cosine distance, seeded."""
    if settings.algorithm == "bisecting":
        return BisectingKMeans(
            k=k,
            seed=settings.seed,
            maxIter=settings.max_iter,
            distanceMeasure="cosine",
            featuresCol="features",
            predictionCol="prediction",
        )
    return KMeans(
        k=k,
        seed=settings.seed,
        maxIter=settings.max_iter,
        tol=settings.tol,
        initMode="k-means||",
        distanceMeasure="cosine",
        featuresCol="features",
        predictionCol="prediction",
    )


def centres_of(model: SegmentModel) -> np.ndarray:
    return np.array(model.clusterCenters(), dtype=np.float32)


def stability_sample(feats: DataFrame, n_users: int, settings: Segment) -> tuple[DataFrame, bool]:
    """(sample, sampled): at most about ``stability_users`` users, each kept by a hash of its id (the
    same users whatever the partitioning); all users when there are no more than that."""
    if n_users <= settings.stability_users:
        return feats, False
    share = settings.stability_users / n_users
    keep = F.pmod(F.xxhash64(F.col("user_id"), F.lit(settings.seed)), F.lit(1_000_000)) < F.lit(int(share * 1_000_000))
    return feats.where(keep).cache(), True


def sample_vectors(sample: DataFrame) -> np.ndarray:
    """The sample's unit vectors on the driver (bounded by ``segment.stability_users``), ordered by id."""
    rows = sample.select("user_id", F.col("features")).orderBy("user_id").collect()
    return normalise_rows(np.array([r["features"].toArray() for r in rows], dtype=np.float32))


def stability_by_k(
    spark: SparkSession, vectors: np.ndarray, centres: dict[int, np.ndarray], settings: Segment
) -> dict[int, dict]:
    """For each k, the reference segments ``centres[k]`` cut in the sample ``vectors``: their sizes,
    bootstrap Jaccard stabilities and the cosine silhouette. One Spark task per k; the sample travels
    with the task (at most ``stability_users`` vectors)."""
    samples, seed, max_iter, tol = settings.bootstrap, settings.seed, settings.max_iter, settings.tol

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for k in batch["k"]:
                sizes, stability, silhouette = score_k(vectors, centres[int(k)], samples, seed + int(k), max_iter, tol)
                yield pd.DataFrame(
                    {
                        "k": int(k),
                        "segment_id": np.arange(int(k), dtype=np.int32),
                        "size": sizes,
                        "stability": stability,
                        "silhouette": silhouette,
                    }
                )

    ks = sorted(centres)
    tasks = spark.createDataFrame([(k,) for k in ks], "k int").repartition(len(ks))
    rows = tasks.mapInPandas(score, STABILITY_SCHEMA).collect()
    curve: dict[int, dict] = {}
    for k in ks:
        mine = sorted((r for r in rows if r["k"] == k), key=lambda r: r["segment_id"])
        jaccard = [
            None if r["stability"] is None or np.isnan(r["stability"]) else round(float(r["stability"]), 4)
            for r in mine
        ]
        silhouette = None if mine[0]["silhouette"] is None else round(float(mine[0]["silhouette"]), 4)
        curve[k] = stability_point(jaccard, [r["size"] for r in mine], settings.min_stability, silhouette)
    return curve


def stability_point(stability: list, sizes: list[int], min_stability: float, silhouette: float | None) -> dict:
    """The figures of one cut of the users: each segment's ``stability`` (None: unknown), how many reach
    ``min_stability`` and the share of the ``sizes`` they hold, the size-weighted mean stability, and
    the ``silhouette``."""
    known = [(j, n) for j, n in zip(stability, sizes, strict=True) if j is not None]
    return {
        "stability": stability,
        "reproducible": sum(j >= min_stability for j, _ in known),
        "reproducible_share": round(sum(n for j, n in known if j >= min_stability) / max(sum(sizes), 1), 4),
        "mean_stability": round(sum(j * n for j, n in known) / max(sum(n for _, n in known), 1), 4),
        "silhouette": silhouette,
    }


def choose_k(curve: dict[int, dict]) -> int:
    """The largest k whose segments are all reproducible. Where no k is, the k whose reproducible
    segments hold the most users (``reproducible_share``; ties: more reproducible segments, the higher
    size-weighted mean stability, the higher silhouette, the smaller k): the segments a campaign can
    rely on reach as many people as the data allows, and the rest are marked constructed. Silhouette
    alone favours the smallest k on embeddings; stability says which segments another night's users
    would give back."""
    whole = [k for k, c in curve.items() if c["reproducible"] == len(c["stability"])]
    if whole:
        return max(whole)
    return min(
        curve,
        key=lambda k: (
            -curve[k]["reproducible_share"],
            -curve[k]["reproducible"],
            -curve[k]["mean_stability"],
            -(curve[k]["silhouette"] or -1.0),
            k,
        ),
    )


def check_k_range(settings: Segment, n_users: int) -> tuple[int, int]:
    """The k range that fits ``n_users`` users; exit 2 naming the key when none of it does."""
    if n_users < 3:
        raise InputError(f"segment: {n_users} user vector(s); fitting segments needs at least 3 users")
    if settings.k_min > n_users - 1:
        raise InputError(
            f"segment.k_min={settings.k_min} needs at least {settings.k_min + 1} users; "
            f"{n_users} have vectors: lower segment.k_min (and k_max) or set segment.k"
        )
    k_max = min(settings.k_max, n_users - 1)
    if k_max != settings.k_max:
        log.warning("segment.k_max=%d exceeds users - 1: trying k up to %d", settings.k_max, k_max)
    return settings.k_min, k_max


def fit(
    spark: SparkSession, feats: DataFrame, settings: Segment, n_users: int
) -> tuple[SegmentModel, dict[int, dict] | None, dict]:
    """The fitted model, the stability curve it was chosen on (k auto; None for a fixed k) and the
    shipped segments' own stability figures (sizes in the sample, Jaccard, silhouette)."""
    sample, sampled = stability_sample(feats, n_users, settings)
    vectors = sample_vectors(sample)
    if settings.k == "auto":
        k_min, k_max = check_k_range(settings, n_users)
        models = {k: estimator(k, settings).fit(sample) for k in range(k_min, k_max + 1)}
        curve = stability_by_k(spark, vectors, {k: centres_of(m) for k, m in models.items()}, settings)
        k = choose_k(curve)
        model = estimator(k, settings).fit(feats) if sampled else models[k]
    else:
        if n_users < 3:
            raise InputError(f"segment: {n_users} user vector(s); fitting segments needs at least 3 users")
        curve, k = None, min(settings.k, n_users - 1)
        if k != settings.k:
            log.warning("segment.k=%d exceeds users - 1: using k=%d", settings.k, k)
        model = estimator(k, settings).fit(feats)
    shipped = (
        curve[k]
        if curve is not None and not sampled
        else stability_by_k(spark, vectors, {k: centres_of(model)}, settings)[k]
    )
    if sampled:
        sample.unpersist()
    return model, curve, shipped


def assess(spark: SparkSession, feats: DataFrame, centroids: np.ndarray, settings: Segment, n_users: int) -> dict:
    """The stability figures of given centroids (a saved model in assign mode) on these users."""
    sample, sampled = stability_sample(feats, n_users, settings)
    figures = stability_by_k(spark, sample_vectors(sample), {len(centroids): centroids}, settings)[len(centroids)]
    if sampled:
        sample.unpersist()
    return figures


def parents_of(
    feats: DataFrame, segments: DataFrame, settings: Segment, n_segments: int
) -> tuple[DataFrame, np.ndarray] | None:
    """Bisecting only: (segment_id, parent_id) and the broad segments' centroids. The broad segments
    are the same seeded bisection stopped at ``segment.parents`` leaves; each segment's parent is the
    broad segment most of its users descend through."""
    if settings.algorithm != "bisecting" or settings.parents >= n_segments:
        return None
    broad = estimator(settings.parents, settings).fit(feats)
    votes = (
        broad.transform(feats)
        .select("user_id", F.col("prediction").cast("int").alias("parent_id"))
        .join(segments.select("user_id", "segment_id"), on="user_id", how="inner")
        .groupBy("segment_id", "parent_id")
        .count()
    )
    first = Window.partitionBy("segment_id").orderBy(F.desc("count"), F.asc("parent_id"))
    chosen = votes.withColumn("_r", F.row_number().over(first)).where(F.col("_r") == 1)
    return chosen.select("segment_id", "parent_id"), centres_of(broad)


def assign_segments(user_vectors: DataFrame, centroids: np.ndarray, temperature: float) -> DataFrame:
    """(user_id, segment_id, distance, top_segments, top_weights) from the centroids, on executors."""
    centres = normalise_rows(centroids)

    @F.pandas_udf(SEGMENT_SCHEMA)  # type: ignore[call-overload]  # pyspark stubs: DDL strings
    def place(vectors: pd.Series) -> pd.DataFrame:
        matrix = np.stack(vectors.to_numpy()) if len(vectors) else np.zeros((0, centres.shape[1]), np.float32)
        segment, distance, top_ids, top_weights = assign(matrix, centres, temperature)
        return pd.DataFrame(
            {
                "segment_id": segment.astype("int32"),
                "distance": distance,
                "top_segments": list(top_ids.astype("int32")),
                "top_weights": list(top_weights),
            }
        )

    placed = user_vectors.select("user_id", place("vector").alias("s"))
    return placed.select("user_id", "s.segment_id", "s.distance", "s.top_segments", "s.top_weights")


def top_n(df: DataFrame, n: int, order: list, name: str, value: Column, by: str = "segment_id") -> DataFrame:
    """(by, name): the first ``n`` rows of each ``by`` group by ``order``, as an ordered array."""
    ranked = df.withColumn("_rank", F.row_number().over(Window.partitionBy(by).orderBy(*order)))
    return (
        ranked.where(F.col("_rank") <= n)
        .groupBy(by)
        .agg(F.array_sort(F.collect_list(F.struct(F.col("_rank"), value.alias("v")))).alias("_items"))
        .select(by, F.transform("_items", lambda x: x["v"]).alias(name))
    )


def engaged(interactions: DataFrame) -> DataFrame:
    """Interactions that express interest: rating at or above the user's mean, or any implicit one."""
    with_mean = interactions.withColumn("_mean", F.avg("rating").over(Window.partitionBy("user_id")))
    return with_mean.where(F.col("rating").isNull() | (F.col("rating") >= F.col("_mean"))).select("user_id", "item_id")


def term_tokenizer():
    """A pandas UDF: text -> array of terms (``udfs.terms``: words, or segmented CJK), with Spark ML's
    English stop words. Loaded once on the driver and shipped with the function."""
    stop_words = StopWordsRemover.loadDefaultStopWords("english")

    @F.pandas_udf("array<string>")
    def tokenize(texts: pd.Series) -> pd.Series:
        return pd.Series(terms_of_texts(texts, stop_words), index=texts.index)

    return tokenize


def user_terms(users: DataFrame | None, items: DataFrame, interactions: DataFrame, min_users: int) -> DataFrame:
    """(user_id, term, weight): each user's terms, from the texts of the items they engaged with and
    their own text, weighted by their share of the user's terms (so every user counts once). Terms
    fewer than ``min_users`` users have are left out first: they can never be shown, and a name one
    person writes many times must not dilute the rest of their terms."""
    tokenize = term_tokenizer()
    # each item's text is split once, however many users engaged with it
    item_terms = items.select("item_id", F.explode(tokenize("text")).alias("term"))
    terms = engaged(interactions).join(item_terms, on="item_id", how="inner").select("user_id", "term")
    if users is not None:
        terms = terms.unionByName(users.select("user_id", F.explode(tokenize("text")).alias("term")))
    counts = terms.groupBy("user_id", "term").agg(F.count("*").alias("n"))
    holders = counts.groupBy("term").agg(F.count("*").alias("holders")).where(F.col("holders") >= min_users)
    counts = counts.join(holders.select("term"), on="term", how="left_semi")
    return counts.select(
        "user_id", "term", (F.col("n") / F.sum("n").over(Window.partitionBy("user_id"))).alias("weight")
    )


def distinctive(
    per_segment: DataFrame, overall: DataFrame, key: str, sizes: DataFrame, total: int, min_users: int, min_lift: float
) -> DataFrame:
    """(segment_id, key, users, lift, score) for what a segment has more of than the whole population.

    ``per_segment`` holds (segment_id, key, mass, users), ``overall`` (key, mass_all): the mass of a
    term or item summed over users. lift = (mass / segment size) / (mass_all / all users); score =
    share x log(lift), the term's part of the segment's KL divergence from the population: high for
    what many of the segment have and few others do, 0 for what every segment shares. Only keys that
    at least ``min_users`` of the segment's users have, with lift at least ``min_lift`` (above 1).
    """
    share = F.col("mass") / F.col("size")
    lift = share / (F.col("mass_all") / F.lit(total))
    return (
        per_segment.where(F.col("users") >= min_users)
        .join(sizes, on="segment_id", how="inner")
        .join(overall, on=key, how="inner")
        .withColumn("lift", lift)
        .where((F.col("lift") > 1.0) & (F.col("lift") >= min_lift))
        .withColumn("score", share * F.log(F.col("lift")))
        .select("segment_id", key, "users", "lift", "score")
    )


def segment_sizes(segments: DataFrame) -> DataFrame:
    return segments.groupBy("segment_id").agg(F.count("*").alias("size"))


def label_terms(
    terms: DataFrame, segments: DataFrame, n: int, min_users: int, total: int, min_lift: float = 1.0
) -> DataFrame:
    """(segment_id, terms): the ``n`` terms that most set each segment apart, each as (term, users,
    lift); only terms at least ``min_users`` of the segment's users have (a name that one person writes
    many times cannot single them out)."""
    per_user = terms.join(segments.select("user_id", "segment_id"), on="user_id", how="inner")
    per_segment = per_user.groupBy("segment_id", "term").agg(F.sum("weight").alias("mass"), F.count("*").alias("users"))
    overall = per_user.groupBy("term").agg(F.sum("weight").alias("mass_all"))
    scored = distinctive(per_segment, overall, "term", segment_sizes(segments), total, min_users, min_lift)
    value = F.struct(F.col("term"), F.col("users"), F.round("lift", 2).alias("lift"))
    return top_n(scored, n, [F.desc("score"), F.asc("term")], "terms", value)


def distinctive_items(
    segments: DataFrame, interactions: DataFrame, min_users: int, total: int, min_lift: float = 1.0
) -> DataFrame:
    """(segment_id, item_id, users, lift, score): items the segment's users engage with more than the
    whole population does (see :func:`distinctive`; an item's mass is the users engaging with it)."""
    pairs = engaged(interactions).join(segments.select("user_id", "segment_id"), on="user_id", how="inner").distinct()
    per_segment = (
        pairs.groupBy("segment_id", "item_id").agg(F.count("*").alias("users")).withColumn("mass", F.col("users"))
    )
    overall = pairs.groupBy("item_id").agg(F.count("*").alias("mass_all"))
    return distinctive(per_segment, overall, "item_id", segment_sizes(segments), total, min_users, min_lift)


def item_label(items: DataFrame) -> DataFrame:
    """(item_id, item): the id and the first 60 characters of its text, for people to read."""
    text = F.when(F.length("text") > 60, F.concat(F.substring("text", 1, 57), F.lit("..."))).otherwise(F.col("text"))
    return items.select("item_id", F.concat_ws(": ", "item_id", F.coalesce(text, F.lit(""))).alias("item"))


def representative_items(item_vectors: DataFrame, items: DataFrame, centroids: np.ndarray, n: int) -> DataFrame:
    """(segment_id, representative_items): the items whose vectors are nearest each centroid."""
    centres = normalise_rows(centroids)

    @F.pandas_udf("array<float>")  # type: ignore[call-overload]  # pyspark stubs: DDL strings
    def sims(vectors: pd.Series) -> pd.Series:
        matrix = np.stack(vectors.to_numpy()) if len(vectors) else np.zeros((0, centres.shape[1]), np.float32)
        return pd.Series(list((matrix @ centres.T).astype(np.float32)))

    scored = item_vectors.select("item_id", F.posexplode(sims("vector")).alias("segment_id", "sim"))
    labelled = scored.join(item_label(items), on="item_id", how="inner")
    return top_n(labelled, n, [F.desc("sim"), F.asc("item_id")], "representative_items", F.col("item"))


def engaged_items(
    segments: DataFrame,
    interactions: DataFrame,
    items: DataFrame,
    n: int,
    total: int,
    min_users: int,
    min_lift: float = 1.0,
) -> DataFrame:
    """(segment_id, engaged_items): the ``n`` items that most set each segment's engagement apart
    (:func:`distinctive_items`), each as (item, users, lift); ``total`` is the users in all segments."""
    scored = distinctive_items(segments, interactions, min_users, total, min_lift).join(
        item_label(items), on="item_id", how="inner"
    )
    value = F.struct(F.col("item"), F.col("users"), F.round("lift", 2).alias("lift"))
    return top_n(scored, n, [F.desc("score"), F.asc("item_id")], "engaged_items", value)


def user_interests(terms: DataFrame, n: int, min_users: int) -> DataFrame:
    """(user_id, interests): each user's ``n`` terms that most set them apart from everyone, scored as
    the segments' terms are (:func:`distinctive`, with the user as a segment of one: their share of
    the term x log(that share / the population's mean share)), weights scaled to sum to 1. Only terms
    that at least ``min_users`` users have, so a tag never singles a person out; a term every user has
    as much of carries no interest. Users with none get []."""
    users = terms.select("user_id").distinct()
    n_users = users.count()
    spread = terms.groupBy("term").agg(F.count("*").alias("holders"), (F.sum("weight") / F.lit(n_users)).alias("mean"))
    scored = (
        terms.join(spread.where(F.col("holders") >= min_users), on="term", how="inner")
        .withColumn("score", F.col("weight") * F.log(F.col("weight") / F.col("mean")))
        .where(F.col("score") > 0)
    )
    top = top_n(scored, n, [F.desc("score"), F.asc("term")], "_top", F.struct("term", "score"), by="user_id")
    total = F.aggregate("_top", F.lit(0.0), lambda a, x: a + x["score"])
    interests = top.select(
        "user_id",
        F.transform(
            "_top", lambda t: F.struct(t["term"].alias("term"), F.round(t["score"] / total, 4).alias("weight"))
        ).alias("interests"),
    )
    empty = F.array().cast("array<struct<term:string,weight:double>>")
    return users.join(interests, on="user_id", how="left").select(
        "user_id", F.coalesce("interests", empty).alias("interests")
    )


def nearest_segments(spark: SparkSession, centroids: np.ndarray) -> DataFrame:
    centres = normalise_rows(centroids)
    sims = centres @ centres.T
    np.fill_diagonal(sims, -np.inf)
    rows = [(i, int(np.argmax(sims[i])) if len(centres) > 1 else None) for i in range(len(centres))]
    return spark.createDataFrame(rows, "segment_id int, nearest_segment int")


def stability_table(spark: SparkSession, figures: dict, settings: Segment) -> DataFrame:
    """(segment_id, stability, stability_class) from the shipped segments' stability figures."""
    rows = [(i, j, stability_word(j, settings.min_stability)) for i, j in enumerate(figures["stability"])]
    return spark.createDataFrame(rows, "segment_id int, stability double, stability_class string")


def summarise(
    spark: SparkSession,
    segments: DataFrame,
    terms: DataFrame,
    items: DataFrame,
    interactions: DataFrame,
    item_vectors: DataFrame,
    centroids: np.ndarray,
    settings: Segment,
    stability: dict,
    parents: DataFrame | None = None,
) -> DataFrame:
    """One row per segment: the ``segment_summary`` dataset (see the module docstring)."""
    total = segments.count()
    sizes = segment_sizes(segments).withColumn("share", F.round(F.col("size") / F.lit(total), 4))
    if parents is None:
        parents = spark.createDataFrame([], "segment_id int, parent_id int")
    summary = (
        sizes.join(parents, on="segment_id", how="left")
        .join(stability_table(spark, stability, settings), on="segment_id", how="left")
        .join(
            label_terms(terms, segments, settings.label_terms, settings.min_term_users, total, settings.min_lift),
            on="segment_id",
            how="left",
        )
        .join(representative_items(item_vectors, items, centroids, settings.top_items), on="segment_id", how="left")
        .join(
            engaged_items(
                segments, interactions, items, settings.top_items, total, settings.min_term_users, settings.min_lift
            ),
            on="segment_id",
            how="left",
        )
        .join(nearest_segments(spark, centroids), on="segment_id", how="left")
        .withColumn("description", description())
        .withColumn("label_terms", F.transform(F.coalesce("terms", F.array()), lambda t: t["term"]))
    )
    portrait = [name for name in DATASETS["segment_summary"].names if name not in SEGMENT_CONTINUITY.names]
    return summary.select(*portrait).orderBy("segment_id")


def description() -> Column:
    """One line a person can read: size, share, stability, then what sets the segment apart: the terms
    and items it has most over the whole population, with their lifts."""

    def listed(column: str, name: str, count: int) -> Column:
        entries = F.transform(
            F.slice(F.coalesce(column, F.array()), 1, count),
            lambda e: F.concat(e[name], F.lit(" "), F.format_number(e["lift"], 1), F.lit("x")),
        )
        return F.array_join(entries, ", ")

    terms, items = listed("terms", "term", 4), listed("engaged_items", "item", 2)
    return F.concat_ws(
        "; ",
        F.format_string("%d users (%.1f%%)", F.col("size"), F.col("share") * 100),
        F.when(
            F.col("stability").isNotNull(),
            F.format_string("%s (stability %.2f)", F.col("stability_class"), F.col("stability")),
        ),
        F.when(F.col("parent_id").isNotNull(), F.format_string("within broad segment %d", F.col("parent_id"))),
        F.when(F.length(terms) > 0, F.concat(F.lit("sets apart: "), terms)),
        F.when(F.length(items) > 0, F.concat(F.lit("engages more than most with "), items)),
    )


def format_table(summary: list[dict], terms: int = 6, top: int = 3) -> str:
    """The segment summary as a short text table for people."""
    lines = [f"{'seg':>3} {'size':>6} {'share':>6} {'stability':>18}  label terms / top engaged items (lift)"]
    for row in summary:
        words = ", ".join((row.get("label_terms") or [])[:terms])
        parent = f" in {row['parent_id']}" if row.get("parent_id") is not None else ""
        stable = "" if row.get("stability") is None else f"{row['stability']:.2f} {row['stability_class']}"
        lines.append(f"{row['segment_id']:>3}{parent} {row['size']:>6} {row['share']:>6.1%} {stable:>18}  {words}")
        for entry in (row.get("engaged_items") or [])[:top]:
            lines.append(f"{'':>37}- {entry['item']} ({entry['lift']:.1f}x)")
    return "\n".join(lines)
