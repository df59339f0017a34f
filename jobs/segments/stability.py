"""How reproducible a cut of the users is, and which k to ship.

k is fixed or chosen over [k_min, k_max] for reproducibility (Hennig 2007; Dolnicar & Leisch 2010):
each k is fitted on a seeded sample of users, then every segment's Jaccard stability is scored over
bootstrap refits of that sample with the algorithm that shipped (one Spark task per k,
``udfs.clustering``). ``auto`` picks the most segments that all come back (see :func:`choose_k`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segrec.jobs.config import Segment, executor_settings
from segrec.jobs.errors import InputError
from segrec.udfs.clustering import StabilitySettings, score_k, stability_word
from segrec.udfs.schemas import SEGMENT_STABILITY, spark_schema
from segrec.udfs.segments import normalise_rows

log = logging.getLogger("segrec")

STABILITY_SCHEMA = spark_schema(SEGMENT_STABILITY)


def stability_sample(feats: DataFrame, n_users: int, settings: Segment) -> tuple[DataFrame, bool]:
    """(sample, sampled): of the ``n_users`` users' ``feats``, at most about ``settings.stability_users``,
    each kept by a hash of its id (the
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
    """For each k, the reference segments ``centres[k]`` cut in the sample ``vectors`` (bootstrapped as
    ``settings`` say, one task per k of ``spark``): their sizes,
    bootstrap Jaccard stabilities and the cosine silhouette. One Spark task per k; the sample travels
    with the task (at most ``stability_users`` vectors)."""
    refits = executor_settings(StabilitySettings, settings)

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for k in batch["k"]:
                sizes, stability, silhouette = score_k(vectors, centres[int(k)], refits)
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
    """The largest k of the stability ``curve`` whose segments are all reproducible. Where no k is, the k
    whose reproducible segments hold the most users (``reproducible_share``; ties: more reproducible
    segments, the higher size-weighted mean stability, the higher silhouette, the smaller k): the
    segments a campaign can rely on reach as many people as the data allows, and the rest are marked
    constructed. Silhouette alone favours the smallest k on embeddings; stability says which segments
    another night's users would give back."""
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
    """The k range of ``settings`` that fits ``n_users`` users; exit 2 naming the key when none of it does."""
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


def stability_table(spark: SparkSession, figures: dict, settings: Segment) -> DataFrame:
    """(segment_id, stability, stability_class) from the shipped segments' stability ``figures``, words by
    ``settings.min_stability``, as a DataFrame of ``spark``."""
    rows = [(i, j, stability_word(j, settings.min_stability)) for i, j in enumerate(figures["stability"])]
    return spark.createDataFrame(rows, "segment_id int, stability double, stability_class string")
