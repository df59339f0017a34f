"""Stage 4, segment: MLlib KMeans (cosine) on user vectors, per-user segments, segment portraits.

k is fixed or chosen over [k_min, k_max] for reproducibility (Hennig 2007; Dolnicar & Leisch 2010):
each k is fitted with MLlib on a seeded sample of users, then every segment's Jaccard stability is
scored over bootstrap refits of that sample (one Spark task per k, ``udfs.clustering``). ``auto`` picks
the most segments that all come back (see :func:`choose_k`); the manifest keeps the curve. Outputs:
- ``segments``: user_id, segment_id, distance (1 - cosine to the centroid), top_segments and
  top_weights (the 3 highest soft memberships, softmax over cosine / temperature);
- ``segment_summary``: segment_id, parent_id (bisecting: its broad segment), size, share, stability
  and its plain word, label_terms and engaged_items ranked by how much more the segment has them than
  the whole population (words every segment shares drop out), representative_items (nearest the
  centroid), nearest_segment, and a one-line description of what sets the segment apart. Terms and
  engaged items are shown only when ``segment.min_term_users`` of the segment's users share them, so
  a portrait never singles a person out;
- ``user_interests``: each user's interest tags, the terms of their history and own text that set
  them apart from everyone (TF-IDF), under the same rule;
- ``segment_model``: the fitted model (Spark ML persistence), so ``segment.mode: assign`` places
  new users without refitting. A refit reports its agreement with the previous ``segments``.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from pyspark.ml.clustering import BisectingKMeansModel, KMeansModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy.optimize import linear_sum_assignment

from segrec.jobs.config import Segment
from segrec.jobs.context import RunContext
from segrec.jobs.errors import InputError
from segrec.jobs.io import local_path
from segrec.jobs.segmentation import (
    SegmentModel,
    assess,
    assign_segments,
    centres_of,
    features,
    fit,
    parents_of,
    summarise,
    user_interests,
    user_terms,
)
from segrec.jobs.vectors import item_vectors_for, space_of

log = logging.getLogger("segrec")


def load_model(path: str) -> SegmentModel:
    """A saved KMeans or BisectingKMeans model; exit 2 naming the path when neither loads."""
    problem = ""
    for kind in (KMeansModel, BisectingKMeansModel):
        try:
            return kind.load(path)
        except Exception as exc:  # Spark raises a JVM error class that differs by version and session
            problem = problem or str(exc).splitlines()[0]
    raise InputError(f"segment.mode=assign: cannot load a segment model from {path}: {problem}")


def saved_parents(spark: SparkSession, store, settings: Segment) -> DataFrame | None:
    """Assign mode: the parents the fitted run recorded in ``segment_summary`` (bisecting), if any."""
    if settings.algorithm != "bisecting" or not store.exists("segment_summary"):
        return None
    rows = (
        store.read("segment_summary").where(F.col("parent_id").isNotNull()).select("segment_id", "parent_id").collect()
    )
    return spark.createDataFrame([tuple(r) for r in rows], "segment_id int, parent_id int") if rows else None


def agreement(previous: DataFrame, current: DataFrame) -> float | None:
    """Share of users in both runs whose segment matches, after matching segments one-to-one."""
    pairs = (
        previous.select("user_id", F.col("segment_id").alias("old"))
        .join(current.select("user_id", F.col("segment_id").alias("new")), on="user_id", how="inner")
        .groupBy("old", "new")
        .count()
        .collect()
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


def stability_figures(shipped: dict, settings: Segment) -> dict:
    """The manifest's figures for the shipped segments' stability, and a warning naming the segments
    that did not come back in the bootstrap refits."""
    weak = {i: j for i, j in enumerate(shipped["stability"]) if j is None or j < settings.min_stability}
    if weak:
        log.warning(
            "segment: segment(s) %s are constructed, not reproducible (bootstrap Jaccard %s, below "
            "segment.min_stability %.2f): one way of cutting these users, not groups another sample gives "
            "back; read their portraits with care",
            ", ".join(map(str, weak)),
            ", ".join("-" if j is None else f"{j:.2f}" for j in weak.values()),
            settings.min_stability,
        )
    return {
        "segment_stability": shipped["stability"],
        "mean_stability": shipped["mean_stability"],
        "reproducible_segments": shipped["reproducible"],
        "constructed_segments": sorted(weak),
        "silhouette": shipped["silhouette"],
    }


def run(ctx: RunContext) -> dict:
    """Segment the users for the run ``ctx``: reads ``user_vectors``, ``interactions``, ``items``, the
    item vectors of the users' space and ``users``; writes ``segments``, ``segment_summary``,
    ``user_interests`` and (fit mode) ``segment_model``. Returns the stage's figures (k, stability per
    segment, the curve k was chosen on, agreement with the previous run)."""
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
            centroids = centres_of(model)
            first = user_vectors.select("vector").first()
            dim = len(first["vector"]) if first else centroids.shape[1]
            if centroids.shape[1] != dim:
                raise InputError(f"segment model has {centroids.shape[1]}-dim centroids, user vectors have {dim}")
            shipped, curve, parents = (
                assess(spark, feats, centroids, settings, n_users),
                None,
                saved_parents(spark, store, settings),
            )
            figures["mode"] = "assign"
        else:
            model, curve, shipped = fit(spark, feats, settings, n_users)
            centroids = centres_of(model)
            if curve is not None:
                figures["stability_by_k"] = curve
            figures["mode"] = "fit"
        figures.update(stability_figures(shipped, settings))

        segments = store.write_staged(assign_segments(user_vectors, centroids, settings.temperature), "segments_new")
        if settings.mode == "fit":
            hierarchy = parents_of(feats, segments, settings, len(centroids))
            parents = hierarchy[0] if hierarchy else None
            if store.exists("segments"):
                figures["agreement_with_previous"] = agreement(store.read("segments"), segments)
        feats.unpersist()
        terms = store.write_staged(user_terms(users, items, interactions, settings.min_term_users), "user_terms")
        summary = summarise(
            spark, segments, terms, items, interactions, item_vectors, centroids, settings, shipped, parents
        )
        outputs = {
            "segments": segments,
            "segment_summary": summary,
            "user_interests": user_interests(terms, settings.interest_terms, settings.min_term_users),
        }
        store.write_together(outputs)
        if settings.mode == "fit":
            store.save_model(model, "segment_model")
            ctx.manifest.record_output("segment_model")
            log_to_tracker(ctx, centroids, curve)
        store.drop_staged("segments_new")
        store.drop_staged("user_terms")
        for name in outputs:
            ctx.manifest.record_output(name)

        table = [row.asDict(recursive=True) for row in store.read("segment_summary").orderBy("segment_id").collect()]
        figures.update(k=len(centroids), users=n_users)
        ctx.manifest.segments = table
    return figures


def log_to_tracker(ctx: RunContext, centroids: np.ndarray, curve: dict[int, dict] | None) -> None:
    """k, the stability curve, and the model: its centroids (all that assigning users needs) and, where
    the output store is on this machine's file system, the Spark ML model directory itself."""
    tracker = ctx.tracker
    if not tracker.enabled:
        return
    tracker.log_metrics({"segment.k": len(centroids)})
    for k, point in sorted((curve or {}).items()):
        tracker.log_metrics(
            {"segment.mean_stability": point["mean_stability"], "segment.reproducible": point["reproducible"]},
            step=int(k),
        )
    tracker.log_json({"k": len(centroids), "centroids": centroids.tolist()}, "models/segment_model/centroids.json")
    folder = local_path(ctx.store.path("segment_model"))
    if os.path.isdir(folder):
        tracker.log_artifacts(folder, "models/segment_model/spark")
