"""Does an audience reach the people who go on to engage? Audiences built from the training rows,
scored on the held-out rows, against the audiences a CRM team could build instead.

Protocol (``evaluate.audience_*``): the items evaluated are those with at least ``audience_min_responders``
held-out responders (a user with a held-out interaction with the item and none in training), at most
``audience_items`` of them drawn by a seeded hash. For each item every method picks ``audience_share`` of
the eligible users (those scored by evaluate), never a user who already has the item in training:

- ``ours``: the users whose vectors are most similar to the item's (the audience stage's scorer);
- ``als``: Spark ML ALS ``recommendForItemSubset`` at the tuned cell, owners dropped;
- ``segments``: members of the segments with the highest affinity (the share of members who engaged
  with the item in training; for a new item the cosine of the segment's centre to its vector), segment
  by segment, members in a seeded order;
- ``most_active``: the users with the most training interactions;
- ``random``: a seeded draw.

Precision is the share of the audience that responds; lift is precision over the base rate (responders
over eligible non-owners). Means over the items. New items (``evaluate.cold_item_share``) are scored the
same way apart, without ALS, which has no factor for them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from segrec.jobs.audiences.scoring import Targets, candidates, owned_requests
from segrec.jobs.config import Evaluate
from segrec.jobs.towers.als import AlsParams, als_model
from segrec.udfs.segments import normalise_rows

METHODS = ("ours", "als", "segments", "most_active", "random")


def responders(train: DataFrame, held: DataFrame, eligible: DataFrame) -> DataFrame:
    """(item_id, user_id): ``held`` engagement by ``eligible`` users who had no ``train`` row of the item."""
    return (
        held.select("item_id", "user_id")
        .distinct()
        .join(eligible, on="user_id", how="left_semi")
        .join(train.select("item_id", "user_id").distinct(), on=["item_id", "user_id"], how="left_anti")
    )


def chosen_items(responded: DataFrame, settings: Evaluate, allowed: DataFrame | None = None) -> list[str]:
    """The items to evaluate: at least ``settings.audience_min_responders`` responders in ``responded``
    (and in ``allowed`` when given), at most ``audience_items`` by a seeded hash of their id."""
    counts = responded.groupBy("item_id").agg(F.count("*").alias("n"))
    counts = counts.where(F.col("n") >= settings.audience_min_responders)
    if allowed is not None:
        counts = counts.join(allowed, on="item_id", how="left_semi")
    order = F.xxhash64(F.col("item_id"), F.lit(settings.seed))
    rows = counts.orderBy(order, "item_id").limit(settings.audience_items).select("item_id").collect()
    return sorted(row["item_id"] for row in rows)


def ranked_by(users: DataFrame, items: DataFrame, owners: DataFrame, key: list, n: int) -> DataFrame:
    """(item_id, user_id): for each of ``items``, the first ``n`` of ``users`` by ``key`` (columns of
    users x items, ascending), owners of the item left out."""
    pairs = items.crossJoin(users).join(owners, on=["item_id", "user_id"], how="left_anti")
    order = Window.partitionBy("item_id").orderBy(*key, "user_id")
    return pairs.withColumn("_r", F.row_number().over(order)).where(F.col("_r") <= n).select("item_id", "user_id")


def our_audiences(user_vectors: DataFrame, item_vectors: DataFrame, items: list[str], train: DataFrame, n: int):
    """(item_id, user_id): each item's ``n`` users most similar to it (``user_vectors``, ``item_vectors``
    of one space), users who have it in ``train`` never picked: the audience stage's scorer. None when
    none of ``items`` has a vector in this space."""
    rows = item_vectors.where(F.col("item_id").isin(items)).select("item_id", "vector").collect()
    found = {row["item_id"]: np.asarray(row["vector"], dtype=np.float32) for row in rows}
    ids = [item for item in items if item in found]
    if not ids:
        return None
    targets = Targets(ids, normalise_rows(np.stack([found[i] for i in ids])), [n] * len(ids), [None] * len(ids))
    pairs = user_vectors.sparkSession.createDataFrame([(i, i) for i in ids], "request_id string, item_id string")
    chosen = candidates(user_vectors, owned_requests(train, pairs, ids), targets)
    return chosen.select(F.col("request_id").alias("item_id"), "user_id")


def als_scored(
    train: DataFrame,
    params: AlsParams,
    settings: Evaluate,
    items: list[str],
    owners: DataFrame,
    n: int,
    responded: DataFrame,
    eligible: DataFrame,
    users_n: int,
) -> dict[str, Any]:
    """``scored`` figures of ALS ``recommendForItemSubset`` with ``params`` fitted on ``train`` (``settings``'
    iterations and seed): each of
    ``items``' best users among ``eligible``, owners (``owners``) dropped, the first ``n``; against
    ``responded`` with ``users_n`` eligible users."""
    found = owners.groupBy("item_id").count().agg(F.max("count")).first()
    most_owners = (found[0] if found is not None else 0) or 0
    with als_model(train, params, settings.als.max_iter, settings.seed) as (model, users, catalogue):
        wanted = catalogue.where(F.col("item_id").isin(items)).select("i")
        recs = model.recommendForItemSubset(wanted, n + int(most_owners))
        flat = recs.select("i", F.explode("recommendations").alias("r")).select("i", "r.u", "r.rating")
        named = flat.join(catalogue, on="i", how="inner").join(users, on="u", how="inner")
        kept = (
            named.select("item_id", "user_id", "rating")
            .join(eligible, on="user_id", how="left_semi")
            .join(owners, on=["item_id", "user_id"], how="left_anti")
        )
        order = Window.partitionBy("item_id").orderBy(F.desc("rating"), "user_id")
        picked = kept.withColumn("_r", F.row_number().over(order)).where(F.col("_r") <= n)
        return scored(picked.select("item_id", "user_id"), responded, owners, users_n)


def segment_audiences(segments: DataFrame, affinity: DataFrame, owners: DataFrame, n: int, seed: int) -> DataFrame:
    """(item_id, user_id): members of each item's segments by ``affinity`` (item_id, segment_id,
    affinity; higher first, ties by segment id), within a segment in an order seeded by ``seed``, owners
    left out, the first ``n``."""
    rank = Window.partitionBy("item_id").orderBy(F.desc("affinity"), "segment_id")
    ordered = affinity.withColumn("_segment_rank", F.row_number().over(rank))
    members = segments.select("user_id", "segment_id").withColumn("_shuffle", F.xxhash64(F.col("user_id"), F.lit(seed)))
    pairs = ordered.join(members, on="segment_id", how="inner").join(owners, on=["item_id", "user_id"], how="left_anti")
    order = Window.partitionBy("item_id").orderBy("_segment_rank", "_shuffle", "user_id")
    return pairs.withColumn("_r", F.row_number().over(order)).where(F.col("_r") <= n).select("item_id", "user_id")


def engaged_affinity(segments: DataFrame, train: DataFrame, items: DataFrame) -> DataFrame:
    """(item_id, segment_id, affinity) for ``items``: the share of each of ``segments``' members who
    engaged with the item in ``train``; 0 for a segment none of whose members did."""
    sizes = segments.groupBy("segment_id").agg(F.count("*").alias("_size"))
    engaged = (
        train.select("user_id", "item_id")
        .distinct()
        .join(items, on="item_id", how="left_semi")
        .join(segments.select("user_id", "segment_id"), on="user_id", how="inner")
        .groupBy("item_id", "segment_id")
        .agg(F.count("*").alias("_n"))
    )
    return (
        items.crossJoin(sizes)
        .join(engaged, on=["item_id", "segment_id"], how="left")
        .select("item_id", "segment_id", (F.coalesce("_n", F.lit(0)) / F.col("_size")).alias("affinity"))
    )


def centre_affinity(spark: SparkSession, centroids: np.ndarray, item_vectors: DataFrame, items: list[str]):
    """(item_id, segment_id, affinity), a DataFrame of ``spark``: the cosine of each segment's centre
    (``centroids``) to each of ``items``' vectors (``item_vectors``, the segments' space): the affinity
    a new item can have."""
    rows = item_vectors.where(F.col("item_id").isin(items)).select("item_id", "vector").collect()
    centres = normalise_rows(centroids)
    found = [
        (row["item_id"], s, float(c))
        for row in rows
        for s, c in enumerate(centres @ normalise_rows(np.asarray([row["vector"]], dtype=np.float32))[0])
    ]
    return spark.createDataFrame(found, "item_id string, segment_id int, affinity double")


def scored(audience: DataFrame, responded: DataFrame, owners: DataFrame, eligible: int) -> dict[str, Any]:
    """The mean precision and lift over the items of ``audience`` (item_id, user_id): hits among
    ``responded``, base rate = responders / (``eligible`` users - the item's ``owners``)."""
    hits = audience.join(responded, on=["item_id", "user_id"], how="left_semi").groupBy("item_id").count()
    sizes = audience.groupBy("item_id").agg(F.count("*").alias("size"))
    responders_n = responded.groupBy("item_id").agg(F.count("*").alias("responders"))
    owners_n = owners.groupBy("item_id").agg(F.count("*").alias("owners"))
    rows = (
        sizes.join(hits, on="item_id", how="left")
        .join(responders_n, on="item_id", how="inner")
        .join(owners_n, on="item_id", how="left")
        .collect()
    )
    precisions, lifts = [], []
    for row in rows:
        precision = (row["count"] or 0) / max(row["size"], 1)
        base = row["responders"] / max(eligible - (row["owners"] or 0), 1)
        precisions.append(precision)
        lifts.append(precision / base if base else None)
    known = [lift for lift in lifts if lift is not None]
    return {
        "items": len(rows),
        "precision": round(float(np.mean(precisions)), 6) if precisions else None,
        "lift": round(float(np.mean(known)), 4) if known else None,
    }


def audience_report(
    spark: SparkSession,
    train: DataFrame,
    held: DataFrame,
    eligible: DataFrame,
    spaces: dict[str, tuple[DataFrame, DataFrame]],
    segments: DataFrame,
    centroids: np.ndarray,
    segment_items: DataFrame,
    als: AlsParams,
    settings: Evaluate,
    new_items: DataFrame | None,
) -> dict[str, Any]:
    """Audience precision and lift of every method on the held-out rows, under ``settings``: existing
    items, and new items (``new_items``: item_id, those whose training rows were removed) when given.
    ``train`` and ``held`` are evaluate's split, ``eligible`` (user_id) the users audiences are drawn
    from, ``spaces`` our (user vectors, item vectors) by model name (the first is the shipped one),
    ``segments`` and ``centroids`` the segments fitted on training rows with ``segment_items`` the item
    vectors of their space, ``als`` the tuned ALS cell; through ``spark``."""
    eligible = eligible.select("user_id").distinct().cache()
    users_n = eligible.count()
    n = max(1, math.ceil(settings.audience_share * users_n))
    responded = responders(train, held, eligible).cache()
    owners_all = train.select("item_id", "user_id").distinct()
    activity = (
        train.groupBy("user_id")
        .agg(F.count("*").alias("_activity"))
        .join(eligible, on="user_id", how="right")
        .select("user_id", F.coalesce("_activity", F.lit(0)).alias("_activity"))
    )
    report: dict[str, Any] = {
        "protocol": {
            "audience_share": settings.audience_share,
            "audience_size": n,
            "eligible_users": users_n,
            "min_responders": settings.audience_min_responders,
        }
    }

    def measure(items: list[str], with_als: bool, affinity_of) -> dict[str, Any]:
        item_frame = spark.createDataFrame([(i,) for i in items], "item_id string")
        owners = owners_all.join(item_frame, on="item_id", how="left_semi").cache()
        figures: dict[str, Any] = {}
        for name, (user_vectors, item_vectors) in spaces.items():
            users = user_vectors.join(eligible, on="user_id", how="left_semi")
            audience = our_audiences(users, item_vectors, items, train, n)
            if audience is not None:
                figures[name] = scored(audience, responded, owners, users_n)
        if with_als:
            figures["als"] = als_scored(train, als, settings, items, owners, n, responded, eligible, users_n)
        affinity = affinity_of(item_frame)
        figures["segments"] = scored(
            segment_audiences(
                segments.join(eligible, on="user_id", how="left_semi"), affinity, owners, n, settings.seed
            ),
            responded,
            owners,
            users_n,
        )
        figures["most_active"] = scored(
            ranked_by(activity, item_frame, owners, [F.desc("_activity")], n), responded, owners, users_n
        )
        shuffle = F.xxhash64(F.col("user_id"), F.col("item_id"), F.lit(settings.seed))
        figures["random"] = scored(ranked_by(eligible, item_frame, owners, [shuffle], n), responded, owners, users_n)
        owners.unpersist()
        return figures

    existing = chosen_items(responded, settings)
    if existing:
        report["existing_items"] = measure(existing, True, lambda frame: engaged_affinity(segments, train, frame))
    if new_items is not None:
        fresh = chosen_items(responded, settings, new_items)
        if fresh:
            report["new_items"] = measure(
                fresh, False, lambda frame: centre_affinity(spark, centroids, segment_items, fresh)
            )
    responded.unpersist()
    eligible.unpersist()
    return report
