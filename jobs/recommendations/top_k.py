"""Top-k recommendations as a DataFrame: ``Recommender`` scores any user vectors against one catalogue,
seen items excluded; the recommend stage and evaluate both build their lists through it.

score = cosine(user vector, item vector) + popularity_weight * popularity of the item in the user's
segment (share of the segment's users who interacted with it, divided by the segment's highest share,
so 1 for the segment's most popular item). Output ``recommendations``: user_id, rank, item_id, score,
similarity, popularity_boost; ties broken by item id.

Two plans, same results:
- broadcast (catalogue up to ``max_broadcast_mb``): the item matrix reaches each Python worker once
  (a Spark broadcast, or a file the driver wrote when ``matrix_source: file``, for Spark Connect);
  users stream through ``mapInArrow`` and are scored in blocks under ``block_mb``.
- sharded (larger catalogues): items cut into shards under ``max_broadcast_mb``, users grouped into
  blocks; every (user block, shard) pair keeps its top k, and a window keeps each user's best k.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from segrec.jobs.config import Recommend, executor_settings
from segrec.jobs.errors import ConfigError, InputError
from segrec.jobs.io.store import local_path
from segrec.jobs.session import has_spark_context, on_local_master, parallelism, spread, udf_partitions
from segrec.udfs.schemas import RECOMMENDATION_COLUMNS, RECOMMENDATIONS, spark_schema
from segrec.udfs.topk.approximate import build_index, recall_at_k
from segrec.udfs.topk.batches import UserBatch, recommend_batch, recommend_frame, recommend_users
from segrec.udfs.topk.catalogue import Catalogue, cached_catalogue, load_catalogue, save_catalogue
from segrec.udfs.topk.mmr import rerank_mmr
from segrec.udfs.topk.settings import TopKSettings

log = logging.getLogger(__name__)

# The Spark schema of recommendations, from the one Arrow definition the workers write.
OUTPUT_SCHEMA = spark_schema(RECOMMENDATIONS)


def segment_popularity(interactions: DataFrame, segments: DataFrame, n_segments: int) -> DataFrame:
    """(item_id, popularity array<float>[n_segments]): per segment of ``segments``, the item's share (in
    ``interactions``) of the segment's
    users, divided by the segment's largest share."""
    pairs = (
        interactions.select("user_id", "item_id")
        .distinct()
        .join(segments.select("user_id", "segment_id"), on="user_id", how="inner")
    )
    counts = pairs.groupBy("segment_id", "item_id").agg(F.count("*").alias("users"))
    normalised = counts.withColumn("pop", F.col("users") / F.max("users").over(Window.partitionBy("segment_id")))
    by_item = normalised.groupBy("item_id").agg(
        F.map_from_entries(F.collect_list(F.struct("segment_id", "pop"))).alias("_pop")
    )
    return by_item.select(
        "item_id",
        F.transform(
            F.sequence(F.lit(0), F.lit(n_segments - 1)),
            lambda s: F.coalesce(F.col("_pop")[s], F.lit(0.0)).cast("float"),
        ).alias("popularity"),
    )


def catalogue_frame(item_vectors: DataFrame, popularity: DataFrame | None, score_parts: bool = False) -> DataFrame:
    """(item_id, vector, popularity or null, learned_part or null, the last when ``score_parts``) for every
    item of ``item_vectors``; the
    learned parts only when asked for and the vectors have them (trained towers)."""
    with_parts = score_parts and "learned_part" in item_vectors.columns
    df = item_vectors.select(
        "item_id",
        "vector",
        F.col("learned_part") if with_parts else F.lit(None).cast("array<float>").alias("learned_part"),
    )
    if popularity is not None:
        df = df.join(popularity, on="item_id", how="left")
    else:
        df = df.withColumn("popularity", F.lit(None).cast("array<float>"))
    return df.select("item_id", "vector", "popularity", "learned_part")


def user_frame(
    user_vectors: DataFrame,
    segments: DataFrame | None,
    interactions: DataFrame,
    exclude_seen: bool,
    partitions: int,
) -> DataFrame:
    """(user_id, vector, segment_id, seen) of ``user_vectors`` (segments from ``segments``; seen only when
    ``exclude_seen``) in ``partitions`` tasks: seen = ids of the items the user
    interacted with (the workers map them to catalogue positions, so no join with the item index is
    needed here).

    The user vectors and, in one frame, the users' interactions and segment rows are hash-partitioned
    the same way (on a hash of user_id and user_id, in ``partitions``); one aggregation per user gives
    the seen list and the segment, and one join adds them to the vectors with no shuffle of its own,
    its output already spread over the scoring tasks: the user vectors cross the network once, not
    twice (a join, then a spread). A repartition the plan asks for is never coalesced by adaptive
    execution, and one on the hash column is never dropped as already satisfied by an earlier shuffle
    on user_id (see session.spread). One join, not two: a second join made Spark re-shuffle to
    spark.sql.shuffle.partitions, whatever ``partitions`` said."""
    key = ["_user_hash", "user_id"]

    def by_user(df: DataFrame) -> DataFrame:
        return df.withColumn("_user_hash", F.xxhash64("user_id")).repartition(partitions, *key)

    users = by_user(user_vectors.select("user_id", "vector"))
    rows = []  # per user: its interactions (item_id) and its segment (segment_id), one kind per row
    if segments is not None:
        rows.append(
            segments.select(
                "user_id",
                F.lit(None).cast("string").alias("item_id"),
                F.col("segment_id").cast("int").alias("segment_id"),
            )
        )
    if exclude_seen:
        rows.append(interactions.select("user_id", "item_id", F.lit(None).cast("int").alias("segment_id")))
    if not rows:
        return users.select(
            "user_id",
            "vector",
            F.lit(None).cast("int").alias("segment_id"),
            F.lit(None).cast("array<string>").alias("seen"),
        )
    per_user = (
        by_user(functools.reduce(DataFrame.unionByName, rows))
        .groupBy(*key)
        .agg(
            F.max("segment_id").alias("segment_id"),  # a user's one segment (segment writes one row per user)
            F.collect_set("item_id").alias("seen"),  # nulls (the segment rows) are left out
        )
    )
    if not exclude_seen:
        per_user = per_user.withColumn("seen", F.lit(None).cast("array<string>"))
    return users.join(per_user, on=key, how="left").select("user_id", "vector", "segment_id", "seen")


def to_catalogue(rows: pd.DataFrame, offset: int = 0) -> Catalogue:
    """``rows`` of catalogue_frame (the first at position ``offset``), in item-id order (Python's string order
    is Spark's binary UTF-8 order,
    so ties broken by position are broken by id, as in the sharded plan's merge)."""
    rows = rows.sort_values("item_id", kind="stable")
    vectors = np.stack(rows["vector"].to_numpy()).astype(np.float32, copy=False)
    has_pop = rows["popularity"].notna().any()
    popularity = None
    if has_pop:
        width = len(next(p for p in rows["popularity"] if p is not None))
        popularity = np.stack(
            [np.asarray(p, np.float32) if p is not None else np.zeros(width, np.float32) for p in rows["popularity"]]
        )
    learned = None
    if "learned_part" in rows and rows["learned_part"].notna().any():
        zero = np.zeros(vectors.shape[1], np.float32)  # a cold item: its vector is all text
        learned = np.stack([zero if p is None else np.asarray(p, np.float32) for p in rows["learned_part"]])
    return Catalogue(
        item_ids=rows["item_id"].to_numpy().astype(str),
        vectors=vectors,
        popularity=popularity,
        learned_part=learned,
        offset=offset,
    )


def catalogue_source(
    spark: SparkSession, catalogue: Catalogue, recommend: Recommend, matrix_dir: str | None
) -> tuple[str, Callable[[], Catalogue]]:
    """(cache key, loader) through which workers get the catalogue once each: a broadcast of ``spark`` where
    the session has a SparkContext, else (Spark Connect: no broadcast) a file the driver writes, at
    ``recommend.matrix_path`` or under ``matrix_dir`` (the run's staging area, dropped by the caller)."""
    source = recommend.matrix_source
    if source == "auto":
        source = "broadcast" if has_spark_context(spark) else "file"
    if source == "broadcast":
        handle = spark.sparkContext.broadcast(catalogue)

        def load() -> Catalogue:
            return handle.value

        return f"broadcast-{uuid.uuid4().hex}", load  # one catalogue per worker per broadcast
    if recommend.matrix_path:
        matrix_file = recommend.matrix_path
    elif matrix_dir:
        os.makedirs(local_path(matrix_dir), exist_ok=True)
        matrix_file = f"{local_path(matrix_dir)}/catalogue-{uuid.uuid4().hex}.npz"
    else:
        raise ConfigError(
            "recommend: this session has no SparkContext to broadcast the item matrix (Spark Connect): "
            "set recommend.matrix_path to a file every executor can read"
        )
    save_catalogue(matrix_file, catalogue)

    def load_file() -> Catalogue:
        return load_catalogue(matrix_file)

    return f"file-{matrix_file}-{os.path.getmtime(matrix_file)}", load_file


def broadcast_plan(users: DataFrame, source: tuple[str, Callable[[], Catalogue]], settings: TopKSettings) -> DataFrame:
    """Score ``users`` against the whole catalogue from ``source``, cached once per Python worker, with ``settings``."""
    key, load = source

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        items = cached_catalogue(key, load)
        task_settings = settings.for_this_task()
        for batch in batches:
            yield recommend_batch(batch, items, task_settings)

    # Arrow in and out: the users' vectors and seen ids are read from Arrow's flat buffers, with no
    # per-user pandas objects (benchmarks/topk_parts.py, part 3).
    return users.mapInArrow(score, OUTPUT_SCHEMA)


def sharded_plan(
    users: DataFrame,
    catalogue: DataFrame,
    settings: TopKSettings,
    recommend: Recommend,
    dim: int,
    n_users: int,
    n_items: int,
    partitions: int,
) -> DataFrame:
    """``users`` (``n_users``) in blocks x shards of the ``catalogue`` (``n_items`` of ``dim``): each pair keeps
    its top k under ``settings`` and ``recommend``; each user keeps the best k overall.
    The pairs are spread over ``partitions`` tasks."""
    per_shard = max(1, int(recommend.max_broadcast_mb * 2**20 // (dim * 4)))
    # Items hashed into shards (a 25% margin keeps the fullest shard under max_broadcast_mb): no global
    # index, so no single-task window. Each shard is sorted by id in the worker and the merge below
    # breaks ties by id, so the lists are the broadcast plan's.
    n_shards = max(1, math.ceil(1.25 * n_items / per_shard))
    shards = (
        catalogue.withColumn("shard", F.pmod(F.xxhash64("item_id"), F.lit(n_shards)))
        .groupBy("shard")
        .agg(
            F.lit(0).alias("offset"),
            F.collect_list(F.struct("item_id", "vector", "popularity", "learned_part")).alias("items"),
        )
    )
    n_blocks = max(1, math.ceil(n_users / recommend.user_block))
    blocks = (
        users.withColumn("block", F.pmod(F.xxhash64("user_id"), F.lit(n_blocks)))
        .groupBy("block")
        .agg(F.collect_list(F.struct("user_id", "vector", "segment_id", "seen")).alias("users"))
    )
    pairs = spread(blocks.join(shards, how="cross"), partitions, "block", "shard").select("users", "offset", "items")
    # With MMR every shard hands over its best pool, so the merged pool is the broadcast plan's.
    per_shard_settings = settings.candidates_only()

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        task_settings = per_shard_settings.for_this_task()
        for batch in batches:
            for users_list, offset, items_list in batch.itertuples(index=False, name=None):
                items = to_catalogue(pd.DataFrame(list(items_list)), offset=int(offset))
                yield recommend_frame(pd.DataFrame(list(users_list)), items, task_settings)

    candidates = pairs.mapInPandas(score, OUTPUT_SCHEMA)
    best = Window.partitionBy("user_id").orderBy(F.desc("score"), F.asc("item_id"))
    merged = (
        candidates.withColumn("rank", F.row_number().over(best).cast("int"))
        .where(F.col("rank") <= settings.depth)
        .select(*RECOMMENDATION_COLUMNS)
    )
    return merged if settings.mmr is None else mmr_pass(merged, catalogue, settings.k, settings.mmr[0])


def mmr_pass(candidates: DataFrame, catalogue: DataFrame, k: int, trade_off: float) -> DataFrame:
    """Each user's merged candidates re-ranked by MMR at ``trade_off`` to ``k`` (sharded plan), with the
    candidates' vectors from ``catalogue``."""
    with_vectors = candidates.join(catalogue.select("item_id", "vector"), on="item_id", how="inner")

    def rerank(group: pd.DataFrame) -> pd.DataFrame:
        group = group.sort_values("rank", ignore_index=True)  # groups arrive in no particular order
        vectors = np.stack(group["vector"].to_numpy()).astype(np.float32)
        return rerank_mmr(group.drop(columns="vector"), vectors, k, trade_off)

    return with_vectors.groupBy("user_id").applyInPandas(rerank, OUTPUT_SCHEMA)


def scoring_tasks(spark: SparkSession, configured: int | None) -> int:
    """``configured`` (``recommend.partitions``), else one task per core of ``spark`` on a local master and
    twice the parallelism elsewhere.
    Each scoring task first waits while Spark sorts and joins its users' seen lists. On a local master the
    cores are one machine's and the users' hash partitions even, so a second task per core only pays that wait
    again (benchmarks/topk.py times both). On a cluster the second task per core evens out slow executors."""
    if configured is None and on_local_master(spark):
        return parallelism(spark)
    return udf_partitions(spark, configured)


def choose_search(recommend: Recommend, plan: str, n_items: int, matrix_mb: float) -> str:
    """exact or ivf: ``recommend.search``, with ``auto`` ivf from ``ivf_min_items`` items (of ``n_items``, an
    item matrix of ``matrix_mb``) on the broadcast
    plan (the index travels with the item matrix; a sharded catalogue is searched exactly)."""
    if recommend.search == "ivf" and plan != "broadcast":
        raise ConfigError(
            f"recommend.search=ivf needs the broadcast plan, but the item matrix ({matrix_mb:.0f} MB) is over "
            f"recommend.max_broadcast_mb ({recommend.max_broadcast_mb:g}) or recommend.plan is sharded: raise "
            "max_broadcast_mb (the index holds a copy of the matrix) or set recommend.search to exact"
        )
    if recommend.search == "auto":
        return "ivf" if plan == "broadcast" and n_items >= recommend.ivf_min_items else "exact"
    return recommend.search


RECALL_SEED = 42  # the recall sample's users: the same ones in every run over the same users


def recall_sample(
    user_vectors: DataFrame, segments: DataFrame | None, interactions: DataFrame, exclude_seen: bool, n: int
) -> UserBatch:
    """``n`` of ``user_vectors`` drawn by a seeded hash of their id (the same users every run), with their
    ``interactions`` (seen items when ``exclude_seen``) and segments
    and seen items, as the scorer's ``UserBatch`` on the driver: only their rows are collected."""
    drawn = (
        user_vectors.select("user_id", F.xxhash64("user_id", F.lit(RECALL_SEED)).alias("_draw"))
        .orderBy("_draw", "user_id")
        .limit(n)
        .select("user_id")
    )
    chosen = [
        df.join(drawn, on="user_id", how="left_semi") if df is not None else None
        for df in (user_vectors, segments, interactions)
    ]
    users, user_segments, user_interactions = chosen
    assert users is not None and user_interactions is not None
    rows: pd.DataFrame = user_frame(users, user_segments, user_interactions, exclude_seen, 1).toPandas()
    dim = max((len(v) for v in rows["vector"] if v is not None), default=0)
    return UserBatch.from_pandas(rows.sort_values("user_id", ignore_index=True), dim)


def calibrate_probes(
    catalogue: Catalogue, sample: UserBatch, settings: TopKSettings, min_recall: float
) -> tuple[int, dict]:
    """The fewest probes, doubling from the index's, whose lists (``catalogue``, ``settings``) for the
    ``sample`` users reach
    ``min_recall`` recall@k against exact lists from the same scorer on the driver; and the figures
    (recall_at_k, recall_users, ivf_probes). Raises ConfigError when even every list falls short."""
    assert catalogue.ivf is not None
    task = replace(settings.for_this_task(), explain=False, score_parts=False, device="cpu")
    exact_catalogue = replace(catalogue, ivf=None, derived={})
    exact = recommend_users(sample, exact_catalogue, task)
    probes, tried = catalogue.ivf.probes, {}
    while True:
        searched = replace(catalogue, ivf=replace(catalogue.ivf, probes=probes), derived=exact_catalogue.derived)
        recall = recall_at_k(recommend_users(sample, searched, task), exact)
        tried[probes] = round(recall, 4)
        if recall >= min_recall or probes >= catalogue.ivf.lists:
            break
        probes = min(catalogue.ivf.lists, probes * 2)
    log.info("recommend: IVF recall@%d by probes on %d users: %s", settings.k, len(sample.ids), tried)
    if recall < min_recall:
        raise ConfigError(
            f"recommend: the IVF lists reach recall@{settings.k} {recall:.4f} on {len(sample.ids)} sampled users "
            f"even searching all {catalogue.ivf.lists} lists, below recommend.min_recall {min_recall:g} (the "
            "popularity boost and MMR rank by more than the index's similarity): lower min_recall or set "
            "recommend.search to exact"
        )
    return probes, {"ivf_probes": probes, "recall_at_k": round(recall, 4), "recall_users": len(sample.ids)}


def choose_plan(recommend: Recommend, matrix_mb: float) -> str:
    """broadcast or sharded: ``recommend.plan`` with ``auto`` decided by the item matrix's size ``matrix_mb``."""
    if recommend.plan != "auto":
        return recommend.plan
    return "broadcast" if matrix_mb <= recommend.max_broadcast_mb else "sharded"


class Recommender:
    """Top-k lists over one catalogue, for any users and ``TopKSettings``.

    Built once: the catalogue (item vectors, and the segment popularity when ``with_popularity``) is
    counted, its plan chosen and, for the broadcast plan, collected and shipped to the workers once,
    however many lists it is asked for (evaluate's popularity-weight grid asks for several).
    ``recommend``: the recommend section, for its plan keys (plan, max_broadcast_mb, user_block, matrix_source,
    matrix_path, exclude_seen). ``matrix_dir``: where the item matrix file goes on a session without a
    SparkContext (see ``catalogue_source``); the caller removes it after writing. ``score_parts``: ship
    the trained towers' learned parts too, for lists asked with ``TopKSettings.score_parts``.
    """

    def __init__(
        self,
        spark: SparkSession,
        item_vectors: DataFrame,
        interactions: DataFrame,
        segments: DataFrame | None,
        recommend: Recommend,
        matrix_dir: str | None = None,
        with_popularity: bool = False,
        score_parts: bool = False,
    ):
        self.spark, self.item_vectors, self.interactions, self.segments = spark, item_vectors, interactions, segments
        self.section, self.with_popularity, self.score_parts = recommend, with_popularity, score_parts
        popularity = None
        if with_popularity:
            if segments is None:
                raise InputError(
                    "recommend.popularity_weight > 0 needs the segments output: run the segment stage first"
                )
            n_segments = segments.agg(F.max("segment_id")).collect()[0][0] + 1
            popularity = segment_popularity(interactions, segments, n_segments)
        self.catalogue = catalogue_frame(item_vectors, popularity, score_parts)
        if recommend.plan != "sharded":
            check_matrix_settings(recommend)  # a config error before any job
        rows: pd.DataFrame | None = None
        if recommend.plan == "broadcast":
            # Forced: the catalogue is collected anyway, so it is counted there (no job to count it first).
            collected: pd.DataFrame = self.catalogue.toPandas()
            self.n_items, self.dim = len(collected), max((len(v) for v in collected["vector"]), default=0)
            rows = collected
        else:
            self.n_items, self.dim = item_vectors.agg(F.count("*"), F.max(F.size("vector"))).collect()[0]  # one job
        if self.n_items == 0:
            raise InputError("recommend: no item vectors: nothing to recommend")
        matrix_mb = self.n_items * self.dim * 4 / 2**20
        self.plan = choose_plan(recommend, matrix_mb)
        self.search = choose_search(recommend, self.plan, self.n_items, matrix_mb)
        self.figures: dict[str, Any] = {
            "plan": self.plan,
            "items": self.n_items,
            "matrix_mb": round(matrix_mb, 2),
            "search": self.search,
        }
        self.matrix_dir = matrix_dir
        self.source: tuple[str, Callable[[], Catalogue]] | None = None
        self._user_counts: dict[int, tuple[DataFrame, int]] = {}
        self._calibrated: dict[TopKSettings, tuple[tuple[str, Callable[[], Catalogue]], dict]] = {}
        if self.plan == "broadcast":
            if rows is None:
                rows = self.catalogue.toPandas()  # the broadcast plan's premise: the catalogue fits on the driver
            self.items = to_catalogue(rows)
            if self.search == "ivf":  # shipped once its probes are chosen, for the users asked for
                self.items.ivf = build_index(self.items.vectors, recommend.ivf_lists)
                self.figures["ivf_lists"] = self.items.ivf.lists
            else:
                self.source = catalogue_source(spark, self.items, recommend, matrix_dir)

    def recommend(self, user_vectors: DataFrame, settings: TopKSettings) -> DataFrame:
        """Rows of RECOMMENDATIONS scored with ``settings`` for every user in ``user_vectors`` (user_id, vector); with
        ``recommend.new_item_slots``, that many of each list's places go to the best new items."""
        recs = self._recommend(user_vectors, settings)
        slots = min(self.section.new_item_slots, settings.k)
        if slots == 0 or self.new_item_recommender is None:  # no new item in the catalogue
            return recs
        fresh = self.new_item_recommender.recommend(user_vectors, replace(settings, k=slots, mmr_trade_off=None))
        return with_new_item_slots(recs, fresh, settings.k, slots)

    @functools.cached_property
    def new_item_recommender(self) -> Recommender | None:
        """A Recommender over the catalogue's new items alone (fewer than ``recommend.new_item_interactions``
        training interactions), built on first use; None where there are none."""
        new = new_items(self.item_vectors, self.interactions, self.section.new_item_interactions)
        self.figures["new_items"] = new.count()
        if not self.figures["new_items"]:
            return None
        # a new-item catalogue is small: searched exactly unless it reaches ivf_min_items itself
        plain = self.section.model_copy(update={"new_item_slots": 0, "search": "auto"})
        return Recommender(
            self.spark,
            self.item_vectors.join(new, on="item_id", how="left_semi"),
            self.interactions,
            self.segments,
            plain,
            self.matrix_dir,
            self.with_popularity,
            self.score_parts,
        )

    def _recommend(self, user_vectors: DataFrame, settings: TopKSettings) -> DataFrame:
        if settings.popularity_weight > 0 and not self.with_popularity:
            raise ValueError("a popularity weight needs a Recommender built with_popularity")
        partitions = scoring_tasks(self.spark, self.section.partitions)
        users = user_frame(user_vectors, self.segments, self.interactions, self.section.exclude_seen, partitions)
        if self.search == "ivf":
            source, recall = self.calibrated(user_vectors, settings)
            self.figures.update(recall)
            recs = broadcast_plan(users, source, settings)
        elif self.source is not None:  # the broadcast plan
            recs = broadcast_plan(users, self.source, settings)
        else:
            recs = sharded_plan(
                users,
                self.catalogue,
                settings,
                self.section,
                self.dim,
                self.user_count(user_vectors),
                self.n_items,
                partitions,
            )
        # The worker that holds the whole catalogue finds each reason among the user's history; a shard
        # holds part of the catalogue, and without exclude_seen no history is shipped: joins find them.
        if settings.explain and self.joined_reasons:
            recs = reasons_by_join(recs, self.interactions, self.item_vectors)
        return recs

    def calibrated(
        self, user_vectors: DataFrame, settings: TopKSettings
    ) -> tuple[tuple[str, Callable[[], Catalogue]], dict]:
        """The catalogue source whose IVF probes reach ``recommend.min_recall`` for ``settings`` on a
        sample of ``user_vectors``, and the recall figures; chosen once per settings value. Where no
        probe count reaches it, ``search: ivf`` stops (ConfigError) and ``auto`` searches exactly."""
        if settings not in self._calibrated:
            sample = recall_sample(
                user_vectors, self.segments, self.interactions, self.section.exclude_seen, self.section.recall_users
            )
            try:
                probes, figures = calibrate_probes(self.items, sample, settings, self.section.min_recall)
            except ConfigError as short:
                if self.section.search != "auto":
                    raise
                log.warning("%s; recommend.search auto: searching every item exactly instead", short)
                exact = replace(self.items, ivf=None, derived={})
                source = catalogue_source(self.spark, exact, self.section, self.matrix_dir)
                self._calibrated[settings] = (source, {"search": "exact", "ivf_recall_short": True})
                return self._calibrated[settings]
            assert self.items.ivf is not None
            self.items.ivf = replace(self.items.ivf, probes=probes)
            source = catalogue_source(self.spark, self.items, self.section, self.matrix_dir)
            self._calibrated[settings] = (source, figures)
        return self._calibrated[settings]

    def user_count(self, user_vectors: DataFrame) -> int:
        """How many users ``user_vectors`` holds for the sharded plan's blocks: counted once per users
        frame, however many lists are asked for it (evaluate's weight grid asks one per weight)."""
        known = self._user_counts.get(id(user_vectors))
        if known is None or known[0] is not user_vectors:
            known = self._user_counts[id(user_vectors)] = (user_vectors, user_vectors.count())
        return known[1]

    @property
    def joined_reasons(self) -> bool:
        """Whether reasons and seen items come by a join (sharded plan, or seen items kept) rather than
        in the worker."""
        return self.plan == "sharded" or not self.section.exclude_seen


def recommendations(
    spark: SparkSession,
    user_vectors: DataFrame,
    item_vectors: DataFrame,
    interactions: DataFrame,
    segments: DataFrame | None,
    settings: Recommend,
    matrix_dir: str | None = None,
) -> tuple[DataFrame, dict]:
    """The recommendations DataFrame of ``user_vectors`` against ``item_vectors`` (``interactions`` for seen items,
    ``segments`` for popularity, the matrix through ``matrix_dir``, ``spark``) under the recommend section
    ``settings``, and figures about how it is
    computed (plan, sizes)."""
    topk = executor_settings(TopKSettings, settings)
    recommender = Recommender(
        spark,
        item_vectors,
        interactions,
        segments,
        settings,
        matrix_dir,
        with_popularity=topk.popularity_weight > 0,
        score_parts=topk.score_parts,
    )
    recs = recommender.recommend(user_vectors, topk)  # with an IVF index: its recall, among the figures
    figures = dict(recommender.figures)
    if topk.explain and recommender.joined_reasons:
        figures["reasons"] = "joined"
    return recs, figures


def new_items(item_vectors: DataFrame, interactions: DataFrame, fewer_than: int) -> DataFrame:
    """(item_id): the items of ``item_vectors`` with fewer than ``fewer_than`` training interactions."""
    counts = interactions.groupBy("item_id").agg(F.count("*").alias("n"))
    known = counts.where(F.col("n") >= fewer_than).select("item_id")
    return item_vectors.select("item_id").join(known, on="item_id", how="left_anti").distinct()


def with_new_item_slots(recs: DataFrame, fresh: DataFrame, k: int, slots: int) -> DataFrame:
    """Each user's k items: the first k - ``slots`` of ``recs``, the best ``slots`` of ``fresh`` (the new
    items' own lists: at least that many new items per list, one among the first counting), then
    ``recs``' next where places are left; ranked by score as every list is (ties by item id), so a new
    item sits where its score puts it."""
    placed = recs.select(
        "*", F.when(F.col("rank") <= k - slots, F.col("rank")).otherwise(F.col("rank") + k).alias("_slot")
    ).unionByName(fresh.select("*", (F.col("rank") + (k - slots)).alias("_slot")))
    by_item = Window.partitionBy("user_id", "item_id").orderBy("_slot")
    by_slot = Window.partitionBy("user_id").orderBy("_slot", "item_id")
    by_score = Window.partitionBy("user_id").orderBy(F.desc("score"), F.asc("item_id"))
    kept = (
        placed.withColumn("_first", F.row_number().over(by_item))
        .where(F.col("_first") == 1)
        .withColumn("_n", F.row_number().over(by_slot))
        .where(F.col("_n") <= k)
    )
    return kept.withColumn("rank", F.row_number().over(by_score).cast("int")).select(*RECOMMENDATION_COLUMNS)


def reasons_by_join(recs: DataFrame, interactions: DataFrame, item_vectors: DataFrame) -> DataFrame:
    """Each recommendation's reason in ``recs`` from joins with ``interactions`` and ``item_vectors``: every item
    of the user's history (other than the
    recommended item itself) against it, the most similar kept, ties by the smaller id: the reasons
    the broadcast plan's workers give. Its cost is k x history dot products per user, shuffled."""
    history = interactions.select("user_id", F.col("item_id").alias("because_item_id")).distinct()
    vectors = item_vectors.select("item_id", "vector")
    history_vectors = vectors.select(F.col("item_id").alias("because_item_id"), F.col("vector").alias("because_vector"))
    dot = F.aggregate(F.zip_with("vector", "because_vector", lambda x, y: x * y), F.lit(0.0), lambda acc, x: acc + x)
    pairs = (
        recs.select("user_id", "item_id")
        .join(vectors, on="item_id", how="inner")
        .join(history, on="user_id", how="inner")
        .where(F.col("because_item_id") != F.col("item_id"))
        .join(history_vectors, on="because_item_id", how="inner")
        .select("user_id", "item_id", "because_item_id", dot.alias("because_similarity"))
    )
    best = Window.partitionBy("user_id", "item_id").orderBy(F.desc("because_similarity"), F.asc("because_item_id"))
    chosen = pairs.withColumn("_pick", F.row_number().over(best)).where(F.col("_pick") == 1).drop("_pick")
    return (
        recs.drop("because_item_id", "because_similarity")
        .join(chosen, on=["user_id", "item_id"], how="left")
        .select(*RECOMMENDATION_COLUMNS)
    )


def check_matrix_settings(recommend: Recommend) -> None:
    """Exit 2 when ``recommend``'s matrix settings cannot work together (a file source with no path)."""
    if recommend.matrix_source == "file" and not recommend.matrix_path:
        raise ConfigError(
            "recommend.matrix_source=file needs recommend.matrix_path (a path every executor reads); "
            "matrix_source: auto needs none"
        )
