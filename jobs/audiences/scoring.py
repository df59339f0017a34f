"""Audiences as DataFrames: every user scored against every request's target vector on executors.

Users stay partitioned: each partition keeps, per request, its own best ``depth`` users (or every user
at or above the request's ``min_score``); a window over the partial results keeps the best overall.
Only the requests' target vectors (requests x dimensions) travel to the workers, and nothing that
grows with users reaches the driver. Ties go to the lower user id.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from segrec.udfs.audiences import RequestTargets, best_users

CANDIDATE_SCHEMA = "request_id string, user_id string, score double"


@dataclass(frozen=True)
class Targets:
    """The requests to score, in one order: ``ids``, unit target ``vectors`` (requests, dim), each one's
    ``depth`` (users kept; None: every user at or above its ``min_scores``)."""

    ids: list[str]
    vectors: np.ndarray
    depth: list[int | None]
    min_scores: list[float | None]

    def for_workers(self) -> RequestTargets:
        """The value the workers receive."""
        return RequestTargets(
            vectors=self.vectors.astype(np.float32),
            depth=np.array([-1 if d is None else d for d in self.depth], dtype=np.int64),
            min_score=np.array([np.nan if s is None else s for s in self.min_scores], dtype=np.float64),
        )


def owned_requests(interactions: DataFrame, pairs: DataFrame, order: list[str]) -> DataFrame:
    """(user_id, owned): the positions in ``order`` of the requests whose target items (``pairs``) the
    user already interacted with (``interactions``)."""
    position = F.array_position(F.array(*[F.lit(i) for i in order]), F.col("request_id")) - 1
    owners = interactions.select("user_id", "item_id").distinct().join(pairs, on="item_id", how="inner")
    return owners.groupBy("user_id").agg(F.collect_set(position.cast("int")).alias("owned"))


def candidates(user_vectors: DataFrame, owned: DataFrame | None, targets: Targets) -> DataFrame:
    """(request_id, user_id, score): each request of ``targets``' best users in every partition of ``user_vectors``
    (user_id, vector), a user never scored for a request they own (``owned``), then the best overall."""
    users = user_vectors.select("user_id", "vector")
    if owned is not None:
        users = users.join(owned, on="user_id", how="left")
    else:
        users = users.withColumn("owned", F.lit(None).cast("array<int>"))
    shipped = targets.for_workers()
    ids = np.array(targets.ids, dtype=object)

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        kept = best_users(batches, shipped)
        for position, (users_kept, scores) in enumerate(kept):
            if len(users_kept):
                yield pd.DataFrame({"request_id": ids[position], "user_id": users_kept, "score": scores})

    partial = users.mapInPandas(score, CANDIDATE_SCHEMA)
    order = Window.partitionBy("request_id").orderBy(F.desc("score"), F.asc("user_id"))
    depth = F.element_at(F.array(*[F.lit(d if d is not None else -1) for d in targets.depth]), position_of(targets))
    ranked = partial.withColumn("rank", F.row_number().over(order))
    return ranked.where((depth < 0) | (F.col("rank") <= depth)).select("request_id", "user_id", "score", "rank")


def position_of(targets: Targets):
    """The 1-based position of each row's request_id in ``targets.ids`` (for element_at)."""
    return F.array_position(F.array(*[F.lit(i) for i in targets.ids]), F.col("request_id")).cast("int")


def capped(ranked: DataFrame, targets: Targets, sizes: list[int | None], max_per_user: int) -> DataFrame:
    """``ranked`` (request_id, user_id, score, rank: each request of ``targets``' candidate pool) with each user in at
    most ``max_per_user`` requests, then each request cut to its ``sizes`` (None: all it kept). A user goes
    to the requests where they stand out most: the score's z value within the request's pool, so a brief
    whose cosines all run low competes fairly with an item request (a greedy assignment: the exact
    optimum of total expected response under both caps is a b-matching)."""
    stats = ranked.groupBy("request_id").agg(F.avg("score").alias("_mean"), F.stddev_pop("score").alias("_std"))
    value = (F.col("score") - F.col("_mean")) / F.greatest(F.col("_std"), F.lit(1e-9))
    per_user = Window.partitionBy("user_id").orderBy(F.desc("_value"), F.asc("request_id"))
    chosen = (
        ranked.join(stats, on="request_id", how="inner")
        .withColumn("_value", value)
        .withColumn("_choice", F.row_number().over(per_user))
        .where(F.col("_choice") <= max_per_user)
    )
    order = Window.partitionBy("request_id").orderBy(F.desc("score"), F.asc("user_id"))
    size = F.element_at(F.array(*[F.lit(s if s is not None else -1) for s in sizes]), position_of(targets))
    reranked = chosen.withColumn("rank", F.row_number().over(order))
    return reranked.where((size < 0) | (F.col("rank") <= size)).select("request_id", "user_id", "score", "rank")


def reasons(audience: DataFrame, interactions: DataFrame, item_vectors: DataFrame, targets: Targets) -> DataFrame:
    """(request_id, user_id, because_item_id, because_similarity): for each ``audience`` member the item of
    their history (``interactions``, vectors from ``item_vectors``) most like the request's target in
    ``targets`` (cosine; ties to the lower item id)."""
    history = audience.select("request_id", "user_id").join(
        interactions.select("user_id", "item_id").distinct(), on="user_id", how="inner"
    )
    with_vectors = history.join(item_vectors.select("item_id", "vector"), on="item_id", how="inner")
    vectors = targets.vectors.astype(np.float32)
    index = {request: i for i, request in enumerate(targets.ids)}

    def similarity(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            rows = np.stack(batch["vector"].to_numpy()).astype(np.float32)
            rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
            wanted = vectors[[index[r] for r in batch["request_id"]]]
            yield pd.DataFrame(
                {
                    "request_id": batch["request_id"],
                    "user_id": batch["user_id"],
                    "item_id": batch["item_id"],
                    "similarity": np.einsum("ij,ij->i", rows, wanted).astype(np.float64),
                }
            )

    scored = with_vectors.mapInPandas(
        similarity, "request_id string, user_id string, item_id string, similarity double"
    )
    best = Window.partitionBy("request_id", "user_id").orderBy(F.desc("similarity"), F.asc("item_id"))
    return (
        scored.withColumn("_r", F.row_number().over(best))
        .where(F.col("_r") == 1)
        .select(
            "request_id",
            "user_id",
            F.col("item_id").alias("because_item_id"),
            F.col("similarity").alias("because_similarity"),
        )
    )


def matching_interests(audience: DataFrame, interests: DataFrame, request_terms: DataFrame) -> DataFrame:
    """(request_id, user_id, matching_interests): the audience member's interest tags (``interests``:
    user_interests) that are among the request's terms (``request_terms``: request_id, terms), in the
    order of the member's weights."""
    tags = interests.select("user_id", F.transform("interests", lambda x: x["term"]).alias("_tags"))
    joined = audience.select("request_id", "user_id").join(tags, on="user_id", how="inner")
    joined = joined.join(request_terms, on="request_id", how="inner")
    return joined.select(
        "request_id", "user_id", F.filter("_tags", lambda t: F.array_contains("terms", t)).alias("matching_interests")
    )


def segment_view(audience: DataFrame, segments: DataFrame) -> DataFrame:
    """(request_id, segment_id, members, audience_share, segment_size, segment_reach): how each
    request's audience spreads over the ``segments``: its members in each, their share of the audience,
    and the share of the segment the audience reaches. Largest first, ties by segment id."""
    sizes = segments.groupBy("segment_id").agg(F.count("*").alias("segment_size"))
    members = (
        audience.select("request_id", "user_id")
        .join(segments.select("user_id", "segment_id"), on="user_id", how="inner")
        .groupBy("request_id", "segment_id")
        .agg(F.count("*").alias("members"))
    )
    totals = audience.groupBy("request_id").agg(F.count("*").alias("_total"))
    return (
        members.join(totals, on="request_id", how="inner")
        .join(sizes, on="segment_id", how="inner")
        .select(
            "request_id",
            F.col("segment_id").cast("int").alias("segment_id"),
            "members",
            (F.col("members") / F.col("_total")).alias("audience_share"),
            "segment_size",
            (F.col("members") / F.col("segment_size")).alias("segment_reach"),
        )
    )
