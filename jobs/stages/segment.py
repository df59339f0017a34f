"""Stage 4, segment: users cut into segments by the configured segmenter (``segment.algorithm``: MLlib
KMeans or BisectingKMeans, cosine; ``segments.segmenters``), per-user segments, segment portraits.

k is fixed or chosen over [k_min, k_max] for reproducibility (Hennig 2007; Dolnicar & Leisch 2010):
each k is fitted on a seeded sample of users, then every segment's Jaccard stability is scored over
bootstrap refits of that sample with the same algorithm (one Spark task per k, ``udfs.clustering``).
``auto`` picks the most segments that all come back (``segments.stability.choose_k``); the manifest
keeps the curve. Outputs:
- ``segments``: user_id, segment_id, distance (1 - cosine to the centroid), top_segments and
  top_weights (the ``segment.memberships`` highest soft memberships, softmax over cosine / temperature);
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
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segrec.jobs.config import Segment
from segrec.jobs.context import RunContext
from segrec.jobs.errors import InputError
from segrec.jobs.io.store import OutputStore, local_path
from segrec.jobs.segments.continuity import (
    IDS_FILE,
    Continuity,
    SegmentIds,
    carried,
    centre_shift,
    in_stable_ids,
    match,
    overlap,
    relabel,
    transitions,
)
from segrec.jobs.segments.fitting import assess, features, fit
from segrec.jobs.segments.page import PAGE, write_page
from segrec.jobs.segments.portraits import summarise, user_interests, user_terms
from segrec.jobs.segments.segmenters import load_model, segmenter_for
from segrec.jobs.segments.stability import stability_point
from segrec.jobs.vectors.spaces import item_vectors_for, space_of
from segrec.udfs.schemas import DATASETS, SEGMENT_CONTINUITY, spark_schema

log = logging.getLogger("segrec")

REPORT = "segment_report"  # the segment owners' page, a directory under output.path


@dataclass(frozen=True)
class SavedSegments:
    """A saved segment model with its stable ids, and the store (run) it was read from."""

    model: Any  # the fitted MLlib model of a registered segmenter
    ids: SegmentIds
    path: str
    store: OutputStore | None  # None: a model_path outside the output


def saved_segments(store: OutputStore, settings: Segment, latest: bool) -> SavedSegments | None:
    """The model ``settings.model_path`` names, else ``store``'s newest up to this run (``latest``)
    or before it (the previous run's, when this run is about to fit its own); None when there is none."""
    if settings.model_path:
        source, path = None, settings.model_path
    else:
        source = store.latest("segment_model") if latest else store.previous("segment_model")
        if source is None:
            return None
        path = source.path("segment_model")
    model = load_model(path)
    k = len(model.clusterCenters())
    where = f"{path}/{IDS_FILE}"
    try:
        data = store.fs.read_bytes(where) if store.fs.exists(where) else None
    except Exception:  # a model_path on a file system this store's cannot open: it has no ids file for us
        data = None
    ids = SegmentIds.numbered(k) if data is None else SegmentIds.from_json(data, where, k)
    return SavedSegments(model, ids, path, source)


def saved_parents(spark: SparkSession, saved: SavedSegments) -> DataFrame | None:
    """The parents the run that fitted ``saved`` recorded in its ``segment_summary``, by centre, as a
    DataFrame of ``spark``, if any (a segmenter with broad segments records them; a flat one leaves
    parent_id null)."""
    if saved.store is None or not saved.store.exists("segment_summary"):
        return None
    rows = (
        saved.store.read("segment_summary")
        .where(F.col("parent_id").isNotNull())
        .select("segment_id", "parent_id")
        .collect()
    )
    centre = {stable: c for c, stable in enumerate(saved.ids.ids)}
    found = [(centre[r["segment_id"]], r["parent_id"]) for r in rows if r["segment_id"] in centre]
    return spark.createDataFrame(found, "segment_id int, parent_id int") if found else None


def carried_stability(saved: SavedSegments, settings: Segment) -> dict | None:
    """The stability figures the run that fitted ``saved`` measured, by centre (a night that keeps the
    model does not bootstrap again; reproducible by ``settings.min_stability``); None where its summary
    is not there to read."""
    if saved.store is None or not saved.store.exists("segment_summary"):
        return None
    rows = {
        r["segment_id"]: r
        for r in saved.store.read("segment_summary").select("segment_id", "stability", "size").collect()
    }
    if any(stable not in rows for stable in saved.ids.ids):
        return None
    stability = [rows[stable]["stability"] for stable in saved.ids.ids]
    sizes = [rows[stable]["size"] for stable in saved.ids.ids]
    return stability_point(stability, sizes, settings.min_stability, None)


def fit_night_segments(store: OutputStore, ids: SegmentIds) -> tuple[str | None, DataFrame | None]:
    """(run date, segments) of the dated run of ``store`` that fitted the model of ``ids``, when that run's
    ``segments`` are still there and it is not the previous run's: drift is measured since the fit, so
    that small nightly moves add up to a refit. (None, None) otherwise."""
    fitted = ids.fitted_on
    if not store.run_date or not fitted or fitted >= store.run_date or fitted == store.previous_date("segments"):
        return None, None
    night = store.dated(fitted)
    return (fitted, night.read("segments")) if night.exists("segments") else (None, None)


def drift(pairs: list[tuple[int | None, int | None, int]], ids: SegmentIds) -> float:
    """The share of tonight's users in ``pairs`` who are new, or nearest a centre of ``ids`` other than their segment in
    ``pairs``' earlier run (the fit's night, else the previous run): what ``segment.refit: drift``
    compares with ``segment.drift_threshold``."""
    tonight = sum(users for _, new, users in pairs if new is not None)
    stayed = sum(users for old, new, users in pairs if new is not None and old is not None and ids.ids[new] == old)
    return round(1.0 - stayed / tonight, 6) if tonight else 0.0


def stability_figures(shipped: dict, settings: Segment, ids: list[int]) -> dict:
    """The manifest's figures for the ``shipped`` segments' stability (by the stable ``ids``; reproducible
    by ``settings.min_stability``), and a warning naming
    the segments that did not come back in the bootstrap refits."""
    weak = {ids[i]: j for i, j in enumerate(shipped["stability"]) if j is None or j < settings.min_stability}
    if weak:
        log.warning(
            "segment: %d of %d segments are reproducible, holding %.0f%% of users; segment(s) %s are "
            "constructed (bootstrap Jaccard %s, below segment.min_stability %.2f): one way of cutting these "
            "users, not groups another sample gives back, so their ids mean little from night to night",
            len(ids) - len(weak),
            len(ids),
            100 * shipped["reproducible_share"],
            ", ".join(map(str, weak)),
            ", ".join("-" if j is None else f"{j:.2f}" for j in weak.values()),
            settings.min_stability,
        )
    return {
        "segment_stability": {str(ids[i]): j for i, j in enumerate(shipped["stability"])},
        "mean_stability": shipped["mean_stability"],
        "reproducible_segments": len(ids) - len(weak),
        "reproducible_share": shipped["reproducible_share"],
        "constructed_segments": sorted(weak),
        "silhouette": shipped["silhouette"],
    }


def run(ctx: RunContext) -> dict:
    """Segment the users for the run ``ctx``: reads ``user_vectors``, ``interactions``, ``items``, the
    item vectors of the users' space, ``users`` and the previous run's ``segments`` and segment model;
    writes ``segments``, ``segment_summary``, ``segment_transitions``, ``user_interests`` and (when it
    fitted or kept a model) ``segment_model`` with its stable ids. Returns the stage's figures (k,
    stability per segment, the curve k was chosen on, whether it refitted and why, continuity with the
    previous run)."""
    store, settings, spark = ctx.store, ctx.config.segment, ctx.spark
    user_vectors = store.read("user_vectors", needed_by="segment")
    interactions = store.read("interactions", needed_by="segment")
    items = store.read("items", needed_by="segment")
    item_vectors = item_vectors_for(store, space_of(user_vectors))  # the user vectors' own space
    users = store.read("users") if store.exists("users") else None
    before = store.previous("segments")
    previous_segments = before.read("segments") if before is not None else None
    run_date = store.run_date or datetime.now(timezone.utc).date().isoformat()

    with ctx.manifest.stage("segment") as figures:
        figures["previous_run"] = None if before is None else (before.run_date or "the undated previous output")
        segmenter = segmenter_for(settings)
        # MLlib's features, cached and counted only where a model is fitted or bootstrapped
        feats = features(user_vectors).cache()
        saved = loaded = None
        if settings.mode == "assign" or settings.refit == "drift":
            saved = loaded = saved_segments(store, settings, latest=settings.mode == "assign")
            first = user_vectors.select("vector").first()
            if saved is None and settings.mode == "assign":
                raise InputError(
                    f"segment.mode=assign needs a segment model under {store.path('segment_model')} (or "
                    "segment.model_path): run `segrec segment` in fit mode first"
                )
            if (
                saved is not None
                and first is not None
                and segmenter.centres(saved.model).shape[1] != len(first["vector"])
            ):
                raise InputError(
                    f"segment model {saved.path} has {segmenter.centres(saved.model).shape[1]}-dim centroids, user "
                    f"vectors have {len(first['vector'])}: refit (segment.mode: fit, segment.refit: always)"
                )

        curve, parents, shipped = None, None, None
        if saved is not None:
            segments = store.write_staged(
                segmenter.assign(user_vectors, segmenter.centres(saved.model)), "segments_new"
            )
            pairs = overlap(previous_segments, segments)
            if settings.mode == "assign":
                figures["mode"], figures["model"] = "assign", saved.path
            else:
                since, reference = fit_night_segments(store, saved.ids)
                moved = drift(pairs if reference is None else overlap(reference, segments), saved.ids)
                figures["drift"], figures["drift_since"] = moved, since or figures["previous_run"]
                shipped = carried_stability(saved, settings) if moved < settings.drift_threshold else None
                if shipped is not None:
                    figures["mode"], figures["model"] = "kept", saved.path
                    figures["refit_reason"] = (
                        f"drift {moved:.3f} below segment.drift_threshold {settings.drift_threshold}: "
                        "users placed with the previous run's model"
                    )
                else:
                    figures["refit_reason"] = (
                        f"drift {moved:.3f} reached segment.drift_threshold {settings.drift_threshold}"
                        if moved >= settings.drift_threshold
                        else "the previous run's stability figures are not there to carry: refitted"
                    )
                    saved = None
        if saved is not None:
            model, ids = saved.model, saved.ids
            centroids = segmenter.centres(model)
            if shipped is None:
                shipped = assess(spark, feats, centroids, settings, feats.count())
            else:
                figures["stability_from"] = saved.path
            parents = saved_parents(spark, saved)
            continuity = carried(pairs, ids)
        else:
            model, curve, shipped = fit(spark, feats, settings, feats.count())
            centroids = segmenter.centres(model)
            if curve is not None:
                figures["stability_by_k"] = curve
            figures["mode"] = "fit"
            segments = store.write_staged(segmenter.assign(user_vectors, centroids), "segments_new")
            hierarchy = segmenter.parents(feats, segments, len(centroids))
            parents = hierarchy[0] if hierarchy else None
            pairs = overlap(previous_segments, segments)
            previous_model = (
                loaded  # the model a drift check loaded: the previous run's
                if loaded is not None and not settings.model_path
                else saved_segments(store, settings.model_copy(update={"model_path": None}), latest=False)
            )
            continuity = match(
                pairs,
                len(centroids),
                previous_model.ids if previous_model else None,
                settings.keep_id_jaccard,
                run_date,
            )
            if previous_model is not None:
                figures["centre_shift"] = centre_shift(
                    segmenter.centres(previous_model.model), centroids, previous_model.ids.ids, continuity.ids.ids
                )
        ids = continuity.ids
        figures.update(stability_figures(shipped, settings, ids.ids))
        figures.update(continuity_figures(continuity, pairs))
        feats.unpersist()

        terms = store.write_staged(user_terms(users, items, interactions, settings.min_term_users), "user_terms")
        summary = summarise(
            spark, segments, terms, items, interactions, item_vectors, centroids, settings, shipped, parents
        )
        outputs = {
            "segments": with_previous(
                relabel(segments, ids.ids, ("segment_id",), ("top_segments",)), previous_segments
            ),
            "segment_summary": with_continuity(
                spark, relabel(summary, ids.ids, ("segment_id", "nearest_segment")), continuity
            ),
            "segment_transitions": spark.createDataFrame(
                transitions(in_stable_ids(pairs, ids), settings.min_term_users),
                spark_schema(DATASETS["segment_transitions"]),
            ),
            "user_interests": user_interests(terms, settings.interest_terms, settings.min_term_users),
        }
        store.write_together(outputs)
        if figures["mode"] != "assign":
            store.save_model(model, "segment_model", {IDS_FILE: ids.to_json()})
            ctx.manifest.record_output("segment_model")
            log_to_tracker(ctx, centroids, curve)
        store.drop_staged("segments_new")
        store.drop_staged("user_terms")
        for name in outputs:
            ctx.manifest.record_output(name)

        table = [row.asDict(recursive=True) for row in store.read("segment_summary").orderBy("segment_id").collect()]
        figures.update(k=len(centroids), users=figures["users_tonight"])
        ctx.manifest.segments = table
        figures["report"] = publish_report(ctx, table, figures["retired_segments"])
        ctx.manifest.record_output(REPORT)
    return figures


def publish_report(ctx: RunContext, summary: list[dict], retired: list[dict]) -> str:
    """Write ``ctx``'s run's segment page (``segment_report/index.html``, with the sizes plot where dated runs
    give a trend) from ``summary`` (the segment_summary rows written), the transitions written and
    the ``retired`` ids; returns the page's path."""
    store = ctx.store
    transitions = [row.asDict() for row in store.read("segment_transitions").collect()]
    earlier = store.history("segment_summary")
    if earlier is not None:
        history = earlier.select("segment_id", F.col("run_date").cast("string").alias("run_date"), "size").toPandas()
    else:
        history = pd.DataFrame(
            {
                "segment_id": [r["segment_id"] for r in summary],
                "run_date": "this run",
                "size": [r["size"] for r in summary],
            }
        )
    label = f"run {store.run_date}" if store.run_date else f"run {ctx.manifest.run_id}"
    with tempfile.TemporaryDirectory(prefix="segrec-segments-") as local:
        write_page(local, label, summary, transitions, retired, history)
        folder = store.publish_directory(local, REPORT)
    return f"{folder}/{PAGE}"


def continuity_figures(continuity: Continuity, pairs: list[tuple[int | None, int | None, int]]) -> dict:
    """The manifest's record of how tonight's segments relate to the previous run's (``continuity``, and
    the user ``pairs`` of both runs)."""
    tonight = sum(users for _, new, users in pairs if new is not None)
    return {
        "agreement_with_previous": continuity.agreement,
        "new_users": sum(users for old, new, users in pairs if old is None and new is not None),
        "departed_users": sum(users for old, new, users in pairs if old is not None and new is None),
        "users_tonight": tonight,
        "segments_vs_previous": [
            {
                "segment_id": stable,
                "status": continuity.status[stable],
                "status_ids": continuity.status_ids[stable],
                "matched_jaccard": continuity.matched_jaccard[stable],
                "previous_size": continuity.previous_size.get(stable),
            }
            for stable in sorted(continuity.ids.ids)
        ],
        "retired_segments": continuity.retired,
    }


def with_previous(segments: DataFrame, previous: DataFrame | None) -> DataFrame:
    """``segments`` with each user's ``previous_segment_id`` from the ``previous`` run's segments (null for a
    user new tonight)."""
    if previous is None:
        return segments.withColumn("previous_segment_id", F.lit(None).cast("int"))
    before = previous.select("user_id", F.col("segment_id").cast("int").alias("previous_segment_id"))
    return segments.join(before, on="user_id", how="left").select(*DATASETS["segments"].names)


def with_continuity(spark: SparkSession, summary: DataFrame, continuity: Continuity) -> DataFrame:
    """``summary`` (in stable ids) with each segment's status from ``continuity``, the ids involved, matched
    Jaccard (a DataFrame of ``spark``),
    previous size and the date its id first appeared."""
    seen = {stable: continuity.ids.first_seen.get(stable) for stable in continuity.ids.ids}
    rows = [
        (
            stable,
            continuity.status[stable],
            continuity.status_ids[stable],
            continuity.matched_jaccard[stable],
            continuity.previous_size.get(stable),
            None if day is None else date.fromisoformat(day),
        )
        for stable, day in seen.items()
    ]
    table = spark.createDataFrame(rows, spark_schema(pa.schema([("segment_id", pa.int32()), *SEGMENT_CONTINUITY])))
    current = summary.join(table, on="segment_id", how="left").select(*DATASETS["segment_summary"].names)
    retired = [retired_row(r) for r in continuity.retired]
    if retired:
        current = current.unionByName(spark.createDataFrame(retired, spark_schema(DATASETS["segment_summary"])))
    return current.orderBy("segment_id")


def retired_row(retired: dict) -> tuple:
    """The ``segment_summary`` row of an id that retires tonight: size 0, status ``retired``, the id
    most of its members went to, its previous size and first date."""
    went_to = retired["went_to"]
    moved = "" if went_to is None else f": most of its members are now in segment {went_to}"
    first = retired.get("first_seen")
    return (
        retired["segment_id"],
        None,  # parent_id
        0,  # size
        0.0,  # share
        None,  # stability
        None,  # stability_class
        [],  # label_terms
        [],  # representative_items
        [],  # engaged_items
        None,  # nearest_segment
        f"retired tonight{moved}",
        "retired",
        [] if went_to is None else [went_to],
        None,  # matched_jaccard
        retired.get("previous_size"),
        None if first is None else date.fromisoformat(first),
    )


def log_to_tracker(ctx: RunContext, centroids: np.ndarray, curve: dict[int, dict] | None) -> None:
    """Log to ``ctx``'s tracker k, the stability ``curve``, and the model: its ``centroids`` (all that assigning
    users needs) and, where
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
