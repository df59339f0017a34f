"""The segmenter seam: one class per clustering algorithm behind the segment stage (``segment.algorithm``).

A segmenter fits an MLlib model with k segments, loads a saved one, gives its centres, places users
(nearest centre, soft memberships over cosine), names the refit that scores its stability on executors
(``udfs.clustering.REFITS``), and, where the algorithm has them, the broad segments each segment drills
down from. The stage, evaluate and the stability curve only talk to this interface, so a new algorithm
(a Gaussian mixture, a density method) is one class registered in ``SEGMENTERS``, its name added to
``segment.algorithm``, and a refit in ``REFITS`` (docs/extending.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pyspark.ml.clustering import BisectingKMeans, BisectingKMeansModel, KMeans, KMeansModel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from segrec.jobs.config import Segment, executor_settings
from segrec.jobs.errors import InputError
from segrec.udfs.schemas import SEGMENT_ASSIGNMENT, spark_schema
from segrec.udfs.segments import AssignSettings, assign, normalise_rows

SEGMENT_SCHEMA = spark_schema(SEGMENT_ASSIGNMENT)


class Segmenter(ABC):
    """One clustering algorithm, configured by the ``segment`` section ``settings``."""

    name: ClassVar[str]  # segment.algorithm's value
    model_class: ClassVar[Any]  # the MLlib model class its fits save as

    def __init__(self, settings: Segment) -> None:
        self.settings = settings

    @abstractmethod
    def estimator(self, k: int) -> Any:
        """The MLlib estimator with ``k`` segments: cosine distance, seeded, on ``features``."""

    def fit(self, feats: DataFrame, k: int) -> Any:
        """A model of ``k`` segments fitted on ``feats`` (user_id, features)."""
        return self.estimator(k).fit(feats)

    @staticmethod
    def centres(model: Any) -> np.ndarray:
        """The model's segment centres (k, d), float32, in segment order."""
        return np.array(model.clusterCenters(), dtype=np.float32)

    def assign(self, user_vectors: DataFrame, centres: np.ndarray) -> DataFrame:
        """(user_id, segment_id, distance, top_segments, top_weights) for ``user_vectors`` (user_id, vector)
        cut by ``centres``, on executors: the nearest centre, and the soft memberships (softmax over cosine /
        ``segment.temperature``, the ``segment.memberships`` highest)."""
        return nearest_centre_segments(user_vectors, centres, executor_settings(AssignSettings, self.settings))

    def parents(self, feats: DataFrame, segments: DataFrame, n_segments: int) -> tuple[DataFrame, np.ndarray] | None:
        """(segment_id, parent_id) and the broad segments' centres, for an algorithm whose ``n_segments``
        segments (``segments``: user_id, segment_id over ``feats``) drill down from broader ones; None
        for a flat one."""
        return None


class KMeansSegmenter(Segmenter):
    """MLlib KMeans (cosine, k-means|| seeding): flat segments."""

    name = "kmeans"
    model_class = KMeansModel

    def estimator(self, k: int) -> KMeans:
        """MLlib KMeans with ``k`` segments and the section's seed, iterations and tolerance."""
        s = self.settings
        return KMeans(
            k=k,
            seed=s.seed,
            maxIter=s.max_iter,
            tol=s.tol,
            initMode="k-means||",
            distanceMeasure="cosine",
            featuresCol="features",
            predictionCol="prediction",
        )


class BisectingSegmenter(Segmenter):
    """MLlib BisectingKMeans (cosine): each segment under one of ``segment.parents`` broad segments."""

    name = "bisecting"
    model_class = BisectingKMeansModel

    def estimator(self, k: int) -> BisectingKMeans:
        """MLlib BisectingKMeans with ``k`` leaves and the section's seed and iterations."""
        s = self.settings
        return BisectingKMeans(
            k=k,
            seed=s.seed,
            maxIter=s.max_iter,
            distanceMeasure="cosine",
            featuresCol="features",
            predictionCol="prediction",
        )

    def parents(self, feats: DataFrame, segments: DataFrame, n_segments: int) -> tuple[DataFrame, np.ndarray] | None:
        """The same seeded bisection stopped at ``segment.parents`` leaves gives the broad segments; each of
        the ``n_segments`` segments' parent is the broad segment most of its users (``segments`` over
        ``feats``) descend through (ties: the lower id). None when there are no more segments than parents."""
        if self.settings.parents >= n_segments:
            return None
        broad = self.fit(feats, self.settings.parents)
        votes = (
            broad.transform(feats)
            .select("user_id", F.col("prediction").cast("int").alias("parent_id"))
            .join(segments.select("user_id", "segment_id"), on="user_id", how="inner")
            .groupBy("segment_id", "parent_id")
            .count()
        )
        first = Window.partitionBy("segment_id").orderBy(F.desc("count"), F.asc("parent_id"))
        chosen = votes.withColumn("_r", F.row_number().over(first)).where(F.col("_r") == 1)
        return chosen.select("segment_id", "parent_id"), self.centres(broad)


# segment.algorithm -> its segmenter.
SEGMENTERS: dict[str, type[Segmenter]] = {cls.name: cls for cls in (KMeansSegmenter, BisectingSegmenter)}


def segmenter_for(settings: Segment) -> Segmenter:
    """The segmenter ``settings.algorithm`` names."""
    return SEGMENTERS[settings.algorithm](settings)


def load_model(path: str) -> Any:
    """A saved model of any registered segmenter; exit 2 naming the path when none loads."""
    problem = ""
    for segmenter in SEGMENTERS.values():
        try:
            return segmenter.model_class.load(path)
        except Exception as exc:  # Spark raises a JVM error class that differs by version and session
            problem = problem or str(exc).splitlines()[0]
    raise InputError(f"cannot load a segment model from {path}: {problem}: run `segrec segment` in fit mode")


def nearest_centre_segments(user_vectors: DataFrame, centres: np.ndarray, settings: AssignSettings) -> DataFrame:
    """(user_id, segment_id, distance, top_segments, top_weights) of ``user_vectors`` cut by ``centres``
    with ``settings``, computed on executors."""
    unit = normalise_rows(centres)

    @F.pandas_udf(SEGMENT_SCHEMA)  # type: ignore[call-overload]  # pyspark stubs: DDL strings
    def place(vectors: pd.Series) -> pd.DataFrame:
        matrix = np.stack(vectors.to_numpy()) if len(vectors) else np.zeros((0, unit.shape[1]), np.float32)
        segment, distance, top_ids, top_weights = assign(matrix, unit, settings)
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
