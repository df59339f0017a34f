"""Baselines for offline evaluation, each built from the training interactions it is given and nothing else.

- most popular: items ranked by distinct training users, the same list for everyone, seen items masked;
- ALS: Spark ML ALS with implicit feedback (every training interaction is a 1), seeded, a small grid
  tuned on a validation split by the caller; scored as user factor . item factor;
- random: a uniformly random permutation of the unseen items per user, seeded by (seed, user id).

``BASELINES`` registers each one: evaluate builds every registered baseline, in order, and the report
shows every model it measured. A new baseline is a function of ``BaselineInputs`` registered with
``@baseline("name")`` (docs/extending.md walks through one).

Most popular and ALS reuse the recommend stage's top-k scorer (a broadcast item matrix, blocked
scoring, seen items masked, ties by item id): popularity is a one-dimensional "vector" per item and
a constant 1 per user, ALS factors are the vectors themselves. So every baseline is held to exactly
the same masking and tie rules as our model.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segrec.jobs.config import Evaluate, Recommend, executor_settings
from segrec.jobs.evaluation.list_quality import item_user_counts
from segrec.jobs.recommendations.top_k import OUTPUT_SCHEMA, Recommender
from segrec.jobs.towers.als import AlsParams, als_factors
from segrec.udfs.schemas import RECOMMENDATION_COLUMNS
from segrec.udfs.topk.settings import TopKSettings

# The whole catalogue in each worker, seen items masked: the recommend stage's broadcast plan.
BROADCAST = Recommend(plan="broadcast", exclude_seen=True)


def plain_top_k(
    spark: SparkSession, users: DataFrame, items: DataFrame, train: DataFrame, k: int, matrix_dir: str | None
) -> DataFrame:
    """Each of ``users``' k best ``items`` by user vector . item vector, their ``train`` items masked, with
    no popularity and no reasons; scored with ``spark``'s top-k plan (the item matrix through
    ``matrix_dir`` when set)."""
    settings = executor_settings(
        TopKSettings, BROADCAST, k=k, popularity_weight=0.0, mmr_trade_off=None, explain=False, score_parts=False
    )
    return Recommender(spark, items, train, None, BROADCAST, matrix_dir).recommend(users, settings)


def only(users: DataFrame, scored: DataFrame | None) -> DataFrame:
    """``users`` restricted to ``scored``'s user ids (None: all of them)."""
    return users if scored is None else users.join(scored, on="user_id", how="left_semi")


def listed_users(train: DataFrame, scored: DataFrame | None) -> DataFrame:
    """(user_id): the users a baseline that needs no history lists: ``scored`` (evaluate's new users, who
    have no training row, among them), or every user of ``train``."""
    return train.select("user_id").distinct() if scored is None else scored.select("user_id").distinct()


def most_popular(
    spark: SparkSession,
    train: DataFrame,
    item_ids: DataFrame,
    k: int,
    scored: DataFrame | None = None,
    matrix_dir: str | None = None,
) -> DataFrame:
    """Top k of ``item_ids`` by popularity in ``train`` for every training user (or every user in
    ``scored``, new users too), seen items masked, ties by item id; scored with ``spark`` (the item
    matrix through ``matrix_dir`` when set)."""
    counts = item_user_counts(train)
    top = counts.agg(F.max("users")).collect()[0][0] or 1
    items = (
        item_ids.select("item_id")
        .join(counts, on="item_id", how="left")
        .select("item_id", F.array((F.coalesce("users", F.lit(0)) / F.lit(top)).cast("float")).alias("vector"))
    )
    users = listed_users(train, scored).select("user_id", F.array(F.lit(1.0).cast("float")).alias("vector"))
    return plain_top_k(spark, users, items, train, k, matrix_dir)


def als(
    spark: SparkSession,
    train: DataFrame,
    params: AlsParams,
    max_iter: int,
    seed: int,
    k: int,
    scored: DataFrame | None = None,
    matrix_dir: str | None = None,
) -> DataFrame:
    """Fit implicit ALS with ``params`` on all of ``train`` (``max_iter`` iterations, ``seed``) and return
    its top k per user (or per user in ``scored``), seen items masked; scored with ``spark`` (the item
    matrix through ``matrix_dir`` when set)."""
    with als_factors(train, params, max_iter, seed) as (users, items):
        # The item matrix is collected in here; the users' factors are read again when the lists are.
        user_vectors = only(users.select("user_id", F.col("factor").alias("vector")), scored)
        item_vectors = items.select("item_id", F.col("factor").alias("vector"))
        return plain_top_k(spark, user_vectors, item_vectors, train, k, matrix_dir)


def als_grid(ranks: list[int], reg_params: list[float], alphas: list[float]) -> list[AlsParams]:
    """Every ALS cell of the grid: each rank of ``ranks`` with each of ``reg_params`` and ``alphas``."""
    return [AlsParams(r, g, a) for r in ranks for g in reg_params for a in alphas]


def random_lists(
    train: DataFrame, item_ids: DataFrame, k: int, seed: int, scored: DataFrame | None = None
) -> DataFrame:
    """k unseen items of ``item_ids`` per user of ``train`` (or per user in ``scored``), uniformly at
    random, the same for the same (seed, user)."""
    catalogue = np.array(sorted(r["item_id"] for r in item_ids.select("item_id").collect()), dtype=object)
    seen = only(train, scored).groupBy("user_id").agg(F.collect_set("item_id").alias("seen"))
    users = listed_users(train, scored).join(seen, on="user_id", how="left")  # a new user: seen is null

    def draw(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield pd.DataFrame(
                [
                    row
                    for user, seen in batch.itertuples(index=False, name=None)
                    for row in draw_for_user(user, seen, catalogue, k, seed)
                ],
                columns=RECOMMENDATION_COLUMNS,
            )

    return users.mapInPandas(draw, OUTPUT_SCHEMA)


def draw_for_user(user: str, seen, catalogue: np.ndarray, k: int, seed: int) -> list[tuple]:
    """(user, rank, item, score, similarity, boost, no reason, no parts) rows: the first ``k`` of a
    permutation of the ``catalogue``'s items not in ``seen``, seeded by ``seed`` and ``user``."""
    rng = np.random.default_rng([seed, zlib.crc32(user.encode("utf-8"))])
    unseen = catalogue[~np.isin(catalogue, np.asarray(list(seen if seen is not None else ()), dtype=object))]
    picked = unseen[rng.permutation(len(unseen))[:k]]
    return [(user, rank, item, 0.0, 0.0, 0.0, None, None, None) for rank, item in enumerate(picked, start=1)]


# ------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class BaselineInputs:
    """What a baseline may use: the ``train`` interactions (nothing held out), the catalogue's
    ``item_ids``, the cut-off ``k``, the users to list (``scored``: None for every training user), the
    evaluate ``settings``, each baseline's ``tuned`` validation choice (``tuned["als"]["best"]``), and
    ``spark`` with ``matrix_dir`` for the top-k scorer."""

    spark: SparkSession
    train: DataFrame
    item_ids: DataFrame
    k: int
    scored: DataFrame | None
    settings: Evaluate
    tuned: dict[str, Any]
    matrix_dir: str | None


# name -> the function that lists its top k per user (None: not measured in this run), in report order.
BASELINES: dict[str, Callable[[BaselineInputs], DataFrame | None]] = {}


def baseline(name: str) -> Callable[[Callable[[BaselineInputs], DataFrame | None]], Callable]:
    """Register the decorated function as the baseline ``name`` (evaluate builds it, the report shows it)."""

    def register(build: Callable[[BaselineInputs], DataFrame | None]) -> Callable:
        if name in BASELINES:
            raise ValueError(f"baseline '{name}' is registered twice")
        BASELINES[name] = build
        return build

    return register


@baseline("most_popular")
def most_popular_lists(inputs: BaselineInputs) -> DataFrame:
    """The most popular unseen items of ``inputs``' training rows, the same ranking for everyone."""
    return most_popular(inputs.spark, inputs.train, inputs.item_ids, inputs.k, inputs.scored, inputs.matrix_dir)


@baseline("als")
def als_lists(inputs: BaselineInputs) -> DataFrame:
    """Implicit ALS at the grid cell validation chose (``inputs.tuned["als"]``)."""
    params = AlsParams(**inputs.tuned["als"]["best"])
    settings = inputs.settings
    return als(
        inputs.spark,
        inputs.train,
        params,
        settings.als.max_iter,
        settings.seed,
        inputs.k,
        inputs.scored,
        inputs.matrix_dir,
    )


@baseline("random")
def random_baseline_lists(inputs: BaselineInputs) -> DataFrame | None:
    """Seeded random unseen items for ``inputs``' users (``evaluate.random_baseline``; None when it is off)."""
    if not inputs.settings.random_baseline:
        return None
    return random_lists(inputs.train, inputs.item_ids, inputs.k, inputs.settings.seed, inputs.scored)
