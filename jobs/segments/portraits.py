"""What sets each segment apart, for people to read: label terms and engaged items ranked by their lift
over the whole population (shown only when enough users share them), representative items, users'
interest tags, and the summary rows of ``segment_summary``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.ml.feature import StopWordsRemover
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from segrec.jobs.config import Segment
from segrec.jobs.segments.stability import stability_table
from segrec.udfs.schemas import DATASETS, SEGMENT_CONTINUITY
from segrec.udfs.segments import normalise_rows
from segrec.udfs.terms import terms_of_texts


def top_n(df: DataFrame, n: int, order: list, name: str, value: Column, by: str = "segment_id") -> DataFrame:
    """(by, name): ``value`` of the first ``n`` rows of ``df`` in each ``by`` group by ``order``, as an
    ordered array."""
    ranked = df.withColumn("_rank", F.row_number().over(Window.partitionBy(by).orderBy(*order)))
    return (
        ranked.where(F.col("_rank") <= n)
        .groupBy(by)
        .agg(F.array_sort(F.collect_list(F.struct(F.col("_rank"), value.alias("v")))).alias("_items"))
        .select(by, F.transform("_items", lambda x: x["v"]).alias(name))
    )


def engaged(interactions: DataFrame) -> DataFrame:
    """The ``interactions`` that express interest: rating at or above the user's mean, or any implicit one."""
    with_mean = interactions.withColumn("_mean", F.avg("rating").over(Window.partitionBy("user_id")))
    return with_mean.where(F.col("rating").isNull() | (F.col("rating") >= F.col("_mean"))).select("user_id", "item_id")


def term_tokenizer():
    """A pandas UDF: text -> array of terms (``udfs.terms``: words, or segmented CJK), with Spark ML's
    English stop words. Loaded once on the driver and shipped with the function."""
    stop_words = StopWordsRemover.loadDefaultStopWords("english")

    @F.pandas_udf("array<string>")  # type: ignore[call-overload]  # pyspark stubs: DDL strings
    def tokenize(texts: pd.Series) -> pd.Series:
        return pd.Series(terms_of_texts(texts, stop_words), index=texts.index)

    return tokenize


def user_terms(users: DataFrame | None, items: DataFrame, interactions: DataFrame, min_users: int) -> DataFrame:
    """(user_id, term, weight): each user's terms, from the texts of the ``items`` they engaged with in
    ``interactions`` and
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
    """(segment_id, key, users, lift, score) for what a segment (``sizes``: its users) has more of than the
    whole population of ``total`` users.

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
    """(segment_id, size): the users in each of ``segments``' segments."""
    return segments.groupBy("segment_id").agg(F.count("*").alias("size"))


def label_terms(
    terms: DataFrame, segments: DataFrame, n: int, min_users: int, total: int, min_lift: float = 1.0
) -> DataFrame:
    """(segment_id, terms): the ``n`` terms that most set each of ``segments`` apart from all ``total`` users
    (lift at least ``min_lift``), each as (term, users,
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
    """(segment_id, item_id, users, lift, score): items the users of ``segments`` engage with in
    ``interactions`` (at least ``min_users`` of them; lift over all ``total`` users at least
    ``min_lift``) more than the
    whole population does (see :func:`distinctive`; an item's mass is the users engaging with it)."""
    pairs = engaged(interactions).join(segments.select("user_id", "segment_id"), on="user_id", how="inner").distinct()
    per_segment = (
        pairs.groupBy("segment_id", "item_id").agg(F.count("*").alias("users")).withColumn("mass", F.col("users"))
    )
    overall = pairs.groupBy("item_id").agg(F.count("*").alias("mass_all"))
    return distinctive(per_segment, overall, "item_id", segment_sizes(segments), total, min_users, min_lift)


def item_label(items: DataFrame) -> DataFrame:
    """(item_id, item): each of ``items``' id and the first 60 characters of its text, for people to read."""
    text = F.when(F.length("text") > 60, F.concat(F.substring("text", 1, 57), F.lit("..."))).otherwise(F.col("text"))
    return items.select("item_id", F.concat_ws(": ", "item_id", F.coalesce(text, F.lit(""))).alias("item"))


def representative_items(item_vectors: DataFrame, items: DataFrame, centroids: np.ndarray, n: int) -> DataFrame:
    """(segment_id, representative_items): the ``n`` items whose ``item_vectors`` are nearest each of
    ``centroids``."""
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
    """(segment_id, engaged_items): the ``n`` items (from ``interactions``; at least ``min_users`` users, lift
    at least ``min_lift``) that most set each segment's engagement apart
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
    """(segment_id, nearest_segment): each segment's most similar other segment by cosine of the
    ``centroids`` (None with one segment), as a DataFrame of ``spark``."""
    centres = normalise_rows(centroids)
    sims = centres @ centres.T
    np.fill_diagonal(sims, -np.inf)
    rows = [(i, int(np.argmax(sims[i])) if len(centres) > 1 else None) for i in range(len(centres))]
    return spark.createDataFrame(rows, "segment_id int, nearest_segment int")


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
    """One row per segment of ``segments`` (placed by ``centroids``): the ``segment_summary`` dataset, from
    the users' ``terms``, the ``items``, ``interactions`` and ``item_vectors``, the shipped ``stability``
    figures and ``parents`` under ``settings``, as a DataFrame of ``spark``."""
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
    """The segment ``summary`` as a short text table for people: up to ``terms`` label terms and ``top``
    engaged items per segment."""
    lines = [f"{'seg':>3} {'size':>6} {'share':>6} {'stability':>18}  label terms / top engaged items (lift)"]
    for row in summary:
        words = ", ".join((row.get("label_terms") or [])[:terms])
        parent = f" in {row['parent_id']}" if row.get("parent_id") is not None else ""
        stable = "" if row.get("stability") is None else f"{row['stability']:.2f} {row['stability_class']}"
        lines.append(f"{row['segment_id']:>3}{parent} {row['size']:>6} {row['share']:>6.1%} {stable:>18}  {words}")
        for entry in (row.get("engaged_items") or [])[:top]:
            lines.append(f"{'':>37}- {entry['item']} ({entry['lift']:.1f}x)")
    return "\n".join(lines)
