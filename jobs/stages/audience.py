"""Stage 7, audience: who should get this item, this kind of item, or this brief.

Reads the requests (``audience.requests``), ``items`` (and the items source itself for attribute
requests), the user vectors and the item vectors of their space, ``interactions``, ``segments``,
``user_interests`` and ``suppressions``. Writes ``audiences`` (request_id, user_id, rank, score,
segment_id, the reason), ``audience_summary`` and ``audience_segments``, and its requests' rejects into
``rejects``. Suppressed users are never scored; users who already have a requested item are left out
of an item request (``audience.exclude_owners``); with ``audience.max_per_user`` a user is in at most
that many audiences of the night.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segrec.jobs.audiences.requests import (
    SOURCE,
    annotate_requests,
    split_requests,
    target_pairs,
    with_unmatched_rejected,
)
from segrec.jobs.audiences.scoring import (
    Targets,
    candidates,
    capped,
    matching_interests,
    owned_requests,
    reasons,
    segment_view,
)
from segrec.jobs.audiences.targets import brief_targets, item_targets, request_terms
from segrec.jobs.config import executor_settings
from segrec.jobs.context import RunContext
from segrec.jobs.errors import InputError
from segrec.jobs.sources.inputs import check_columns, read_source
from segrec.jobs.towers.training import trained_model
from segrec.jobs.vectors.spaces import TEXT_SPACE, item_vectors_for, space_of
from segrec.udfs.encoder import EncoderSettings

log = logging.getLogger("segrec")


def read_requests(ctx: RunContext) -> DataFrame:
    """The requests of ``ctx``'s config as read, their mapped columns checked (exit 2 naming the source and
    column)."""
    source = ctx.config.audience.requests
    if source is None:
        raise InputError(
            "audience: audience.requests is not set: give a path or table of requests "
            "(columns: an id and one of items, attribute or brief)"
        )
    raw = read_source(ctx.spark, SOURCE, source)
    cols = source.columns
    roles = {"id": [cols.id], "text": [c for c in (cols.items, cols.attribute, cols.brief, cols.size) if c]}
    if cols.min_score:
        roles["rating"] = [cols.min_score]
    check_columns(raw, SOURCE, source, roles)
    return raw


def raw_items(ctx: RunContext) -> tuple[DataFrame, list[str]]:
    """``ctx``'s items source as read (attribute requests filter on its own columns), and those columns."""
    source = ctx.config.inputs.items
    raw = read_source(ctx.spark, "items", source)
    return raw, [c for c in raw.columns if not c.startswith("_")]


def with_rejects(ctx: RunContext, rejected: DataFrame) -> None:
    """Replace the requests' earlier rejects in ``ctx``'s ``rejects`` with tonight's ``rejected`` rows."""
    store = ctx.store
    others = store.read("rejects", needed_by="audience").where(F.col("source") != SOURCE)
    store.write(others.unionByName(rejected), "rejects")


def request_targets(ctx: RunContext, kept: list, pairs: DataFrame, requests: DataFrame, space: str) -> Targets:
    """Each ``kept`` request's (rows of ``requests``) target vector in ``space`` (its items from ``pairs``, or
    its brief embedded with ``ctx``'s encoder), depth and threshold, in request-id order."""
    settings = ctx.config.audience
    item_vectors = item_vectors_for(ctx.store, space)
    found = item_targets(pairs, item_vectors)
    briefs = requests.where(F.col("kind") == "brief").select("request_id", "brief")
    if any(row["kind"] == "brief" for row in kept):
        model = trained_model(ctx) if space != TEXT_SPACE else None
        weights = model.weights if model is not None else None
        found.update(brief_targets(briefs, executor_settings(EncoderSettings, ctx.config), weights))
    ids, vectors, depth, thresholds = [], [], [], []
    for row in kept:
        request = row["request_id"]
        if request not in found:  # its items have no vector in this space (embed did not run on them)
            raise InputError(f"audience: request {request} has no target vector: run embed (or run) first")
        size = audience_size(row, settings.size)
        ids.append(request)
        vectors.append(found[request])
        if size is not None and settings.max_per_user is not None:
            size = math.ceil(size * settings.pool)
        depth.append(size)
        thresholds.append(row["min_score"])
    return Targets(ids, np.stack(vectors), depth, thresholds)


def audience_size(request, default: int) -> int | None:
    """The users a ``request`` asks for: its own size, else all above its min_score when it gives one,
    else the ``default`` (``audience.size``)."""
    if request["size"] is not None:
        return int(request["size"])
    return None if request["min_score"] is not None else default


def run(ctx: RunContext) -> dict:
    """The audiences of the run ``ctx``'s requests: reads the requests, ``items``, ``user_vectors``, the
    item vectors of their space, ``interactions``, ``segments``, ``user_interests``, ``suppressions`` and
    ``rejects``; writes ``audiences``, ``audience_summary``, ``audience_segments`` and ``rejects``.
    Returns the stage's figures (requests kept and rejected, audience rows, owners and suppressed users
    left out)."""
    store, config = ctx.store, ctx.config
    settings = config.audience
    raw = read_requests(ctx)
    user_vectors = store.read("user_vectors", needed_by="audience")
    space = space_of(user_vectors)
    items = store.read("items", needed_by="audience")
    interactions = store.read("interactions", needed_by="audience")
    segments = store.read("segments") if store.exists("segments") else None
    interests = store.read("user_interests") if store.exists("user_interests") else None
    suppressions = store.read("suppressions") if store.exists("suppressions") else None

    with ctx.manifest.stage("audience") as figures:
        catalogue, item_columns = raw_items(ctx)
        annotated = annotate_requests(raw, settings.requests, item_columns, items, config.text.pii)  # type: ignore[arg-type]
        annotated = store.write_staged(annotated, "audience_requests")
        id_column = config.inputs.items.columns.id
        pairs = store.write_staged(
            target_pairs(annotated.where(F.col("_reason").isNull()), catalogue, id_column), "audience_pairs"
        )
        annotated = with_unmatched_rejected(annotated, pairs)
        kept_requests, rejected = split_requests(annotated)
        kept = sorted(kept_requests.collect(), key=lambda row: row["request_id"])
        figures["requests"] = len(kept)
        figures["requests_rejected"] = dict(
            sorted((r["reason"], r["count"]) for r in rejected.groupBy("reason").count().collect())
        )
        with_rejects(ctx, rejected)
        if not kept:
            where = settings.requests.location  # type: ignore[union-attr]
            raise InputError(f"audience: no valid request in {where}: see rejects (source {SOURCE})")
        if len(kept) > settings.max_requests:
            raise InputError(
                f"audience: {len(kept)} valid requests, above audience.max_requests {settings.max_requests}"
            )
        pairs = pairs.join(kept_requests.select("request_id"), on="request_id", how="left_semi")
        targets = request_targets(ctx, kept, pairs, kept_requests, space)

        users = user_vectors
        if suppressions is not None:
            users = users.join(suppressions, on="user_id", how="left_anti")
            figures["suppressed_users"] = user_vectors.count() - users.count()
        # Owners are left out of item requests only: for an attribute or a brief, users who already have
        # such items are the audience, not people to avoid.
        item_requests = kept_requests.where(F.col("kind") == "items").select("request_id")
        item_pairs = pairs.join(item_requests, on="request_id", how="left_semi")
        owned = owned_requests(interactions, item_pairs, targets.ids) if settings.exclude_owners else None
        ranked = store.write_staged(candidates(users, owned, targets), "audience_candidates")
        sizes = [audience_size(row, settings.size) for row in kept]
        audience = (
            capped(ranked, targets, sizes, settings.max_per_user) if settings.max_per_user is not None else ranked
        )
        audience = store.write_staged(audience, "audience_chosen")

        item_vectors = item_vectors_for(store, space)
        rows = audience.join(
            reasons(audience, interactions, item_vectors, targets), on=["request_id", "user_id"], how="left"
        )
        if interests is not None:
            terms = request_terms(kept_requests, pairs, items)
            rows = rows.join(matching_interests(audience, interests, terms), on=["request_id", "user_id"], how="left")
        else:
            rows = rows.withColumn("matching_interests", F.lit(None).cast("array<string>"))
        if segments is not None:
            rows = rows.join(segments.select("user_id", "segment_id"), on="user_id", how="left")
        else:
            rows = rows.withColumn("segment_id", F.lit(None).cast("int"))
        store.write(
            rows.select(
                "request_id",
                "user_id",
                F.col("rank").cast("int").alias("rank"),
                "score",
                F.col("segment_id").cast("int").alias("segment_id"),
                "because_item_id",
                "because_similarity",
                F.coalesce("matching_interests", F.array().cast("array<string>")).alias("matching_interests"),
            ),
            "audiences",
        )
        ctx.manifest.record_output("audiences")
        written = store.read("audiences")

        owners = (
            item_pairs.join(interactions.select("user_id", "item_id").distinct(), on="item_id", how="inner")
            .groupBy("request_id")
            .agg(F.countDistinct("user_id").alias("owners_excluded"))
            if settings.exclude_owners
            else None
        )
        summary = kept_requests.select(
            "request_id",
            "kind",
            F.col("size").alias("requested_size"),
            "min_score",
        )
        counts = pairs.groupBy("request_id").agg(F.count("*").alias("target_items"))
        got = written.groupBy("request_id").agg(
            F.count("*").alias("audience_size"), F.min("score").alias("lowest_score")
        )
        summary = summary.join(counts, on="request_id", how="left").join(got, on="request_id", how="left")
        summary = (
            summary.join(owners, on="request_id", how="left")
            if owners is not None
            else summary.withColumn("owners_excluded", F.lit(0))
        )
        store.write(
            summary.select(
                "request_id",
                "kind",
                F.coalesce("target_items", F.lit(0)).cast("long").alias("target_items"),
                F.coalesce("requested_size", F.when(F.col("min_score").isNull(), F.lit(settings.size)))
                .cast("long")
                .alias("requested_size"),
                "min_score",
                F.coalesce("audience_size", F.lit(0)).cast("long").alias("audience_size"),
                F.coalesce("owners_excluded", F.lit(0)).cast("long").alias("owners_excluded"),
                "lowest_score",
            ).orderBy("request_id"),
            "audience_summary",
        )
        ctx.manifest.record_output("audience_summary")
        if segments is not None:
            store.write(
                segment_view(written, segments).orderBy("request_id", F.desc("members"), "segment_id"),
                "audience_segments",
            )
            ctx.manifest.record_output("audience_segments")
        figures["audience_rows"] = written.count()
        for name in ("audience_requests", "audience_pairs", "audience_candidates", "audience_chosen"):
            store.drop_staged(name)
    return figures
