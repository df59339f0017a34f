"""Fitting segments through the segmenter seam: k fixed or chosen for reproducibility, and the shipped
cut's stability, scored by refitting the algorithm that shipped."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segrec.jobs.config import Segment
from segrec.jobs.errors import InputError
from segrec.jobs.segments.segmenters import segmenter_for
from segrec.jobs.segments.stability import check_k_range, choose_k, sample_vectors, stability_by_k, stability_sample

log = logging.getLogger("segrec")


def features(user_vectors: DataFrame) -> DataFrame:
    """(user_id, features): ``user_vectors``' arrays as the ML vectors MLlib's estimators read."""
    return user_vectors.select("user_id", array_to_vector(F.col("vector")).alias("features"))


def fit(
    spark: SparkSession, feats: DataFrame, settings: Segment, n_users: int
) -> tuple[Any, dict[int, dict] | None, dict]:
    """(model, curve, shipped) for the ``n_users`` users' ``feats`` under ``settings``: the fitted model,
    the stability curve it was chosen on (k auto; None for a fixed k) and the shipped segments' own
    stability figures (sizes in the sample, Jaccard, silhouette), computed with ``spark``."""
    segmenter = segmenter_for(settings)
    sample, sampled = stability_sample(feats, n_users, settings)
    vectors = sample_vectors(sample)
    if settings.k == "auto":
        k_min, k_max = check_k_range(settings, n_users)
        models = {k: segmenter.fit(sample, k) for k in range(k_min, k_max + 1)}
        curve = stability_by_k(spark, vectors, {k: segmenter.centres(m) for k, m in models.items()}, settings)
        k = choose_k(curve)
        model = segmenter.fit(feats, k) if sampled else models[k]
    else:
        if n_users < 3:
            raise InputError(f"segment: {n_users} user vector(s); fitting segments needs at least 3 users")
        curve, k = None, min(settings.k, n_users - 1)
        if k != settings.k:
            log.warning("segment.k=%d exceeds users - 1: using k=%d", settings.k, k)
        model = segmenter.fit(feats, k)
    shipped = (
        curve[k]
        if curve is not None and not sampled
        else stability_by_k(spark, vectors, {k: segmenter.centres(model)}, settings)[k]
    )
    if sampled:
        sample.unpersist()
    return model, curve, shipped


def assess(spark: SparkSession, feats: DataFrame, centroids: np.ndarray, settings: Segment, n_users: int) -> dict:
    """The stability figures of given ``centroids`` (a saved model's) on the ``n_users`` users' ``feats``,
    bootstrapped as ``settings`` say, with ``spark``."""
    sample, sampled = stability_sample(feats, n_users, settings)
    figures = stability_by_k(spark, sample_vectors(sample), {len(centroids): centroids}, settings)[len(centroids)]
    if sampled:
        sample.unpersist()
    return figures
