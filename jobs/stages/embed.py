"""Stage 1, embed: item and user texts -> content hash -> embed only what is new -> vectors.

The content hash covers (model id, normalised text): the same text is embedded once however many
items or users share it, and a later run over the same model reuses every vector it already has.
Outputs: ``item_vectors`` (item_id, vector, text_hash, model_id) and ``text_vectors`` (user_id,
kind, item_id, vector, text_hash, model_id) where kind is ``profile`` (the user's own text) or
``review`` (the text of one of their interactions).
"""

from __future__ import annotations

import functools
import logging
import time

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segrec.jobs.config import executor_settings
from segrec.jobs.context import RunContext
from segrec.jobs.io.counts import row_counts
from segrec.jobs.session import spread, udf_partitions
from segrec.jobs.sources.model_info import model_identity
from segrec.jobs.vectors.encoding import embedding_udf, text_hash
from segrec.udfs.encoder import EncoderSettings

log = logging.getLogger("segrec")

VECTOR_OUTPUTS = ("item_vectors", "text_vectors")


# ------------------------------------------------------------------------------------ transforms


def item_texts(items: DataFrame, model_id: str) -> DataFrame:
    """``items`` that have text, with the hash of (``model_id``, text)."""
    return items.where(F.col("text").isNotNull()).select("item_id", "text", text_hash(model_id).alias("text_hash"))


def user_texts(users: DataFrame | None, interactions: DataFrame, model_id: str) -> DataFrame:
    """Every user-side text: the user's own from ``users`` (``profile``) and their reviews in
    ``interactions`` (``review``), hashed with ``model_id``."""
    reviews = interactions.where(F.col("text").isNotNull()).select(
        "user_id", F.lit("review").alias("kind"), "item_id", "text"
    )
    texts = reviews
    if users is not None:
        profiles = users.where(F.col("text").isNotNull()).select(
            "user_id", F.lit("profile").alias("kind"), F.lit(None).cast("string").alias("item_id"), "text"
        )
        texts = profiles.unionByName(reviews)
    return texts.withColumn("text_hash", text_hash(model_id))


def distinct_texts(*frames: DataFrame) -> DataFrame:
    """(text_hash, text), one row per hash."""
    union = functools.reduce(DataFrame.unionByName, [frame.select("text_hash", "text") for frame in frames])
    return union.dropDuplicates(["text_hash"])


def known_vectors(previous: list[DataFrame], model_id: str) -> DataFrame | None:
    """(text_hash, vector) already computed by ``model_id`` in the ``previous`` outputs."""
    known = None
    for frame in previous:
        part = frame.where(F.col("model_id") == model_id).select("text_hash", "vector")
        known = part if known is None else known.unionByName(part)
    return known.dropDuplicates(["text_hash"]) if known is not None else None


def embed_texts(texts: DataFrame, settings: EncoderSettings, partitions: int) -> DataFrame:
    """(text_hash, vector) for each (text_hash, text) row of ``texts``, encoded with ``settings`` and spread
    over ``partitions`` tasks."""
    return spread(texts, partitions, "text_hash").select(
        "text_hash", embedding_udf(settings)(F.col("text")).alias("vector")
    )


def attach_vectors(texts: DataFrame, vectors: DataFrame, model_id: str, keys: list[str]) -> DataFrame:
    """``texts`` (``keys``, text_hash) with their ``vectors`` and the ``model_id`` that made them."""
    return texts.join(vectors, on="text_hash", how="inner").select(
        *keys, "vector", "text_hash", F.lit(model_id).alias("model_id")
    )


# ------------------------------------------------------------------------------------------ stage


def run(ctx: RunContext) -> dict[str, int]:
    """Embed every item and user text for the run ``ctx``, reusing vectors of texts the same model
    embedded before: reads ``items``, ``users`` and ``interactions``, writes ``item_vectors`` and
    ``text_vectors`` (item_id or user_id, vector, model_id). Returns the stage's figures (texts
    embedded and reused, seconds encoding), also kept in the manifest."""
    config, store = ctx.config, ctx.store
    identity = model_identity(executor_settings(EncoderSettings, config))
    model_id = identity["model_id"]
    ctx.manifest.model = identity

    items = store.read("items", needed_by="embed")
    interactions = store.read("interactions", needed_by="embed")
    users = store.read("users") if store.exists("users") else None

    with ctx.manifest.stage("embed") as figures:
        items_t = item_texts(items, model_id)
        users_t = user_texts(users, interactions, model_id)
        needed = distinct_texts(items_t, users_t)

        # Vectors to reuse: this output's, evaluate's source run's, and a dated run's previous night's.
        stores = [store, ctx.reuse_from, store.previous(VECTOR_OUTPUTS[0]) if store.run_date else None]
        previous = [
            s.read(n)
            for s in stores
            if s is not None
            for n in VECTOR_OUTPUTS
            if config.embed.incremental and s.exists(n)
        ]
        known = known_vectors(previous, model_id)
        to_embed = needed if known is None else needed.join(known.select("text_hash"), "text_hash", how="left_anti")

        ctx.spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.embed.batch_rows))
        partitions = udf_partitions(ctx.spark, config.embed.partitions)
        # Written once to staging, so the UDF runs once whatever reads the vectors afterwards.
        started = time.perf_counter()
        fresh = store.write_staged(
            embed_texts(to_embed, executor_settings(EncoderSettings, config), partitions), "new_vectors"
        )
        # The job that runs the encoder (with the reads, hashing and shuffle before it), apart from the
        # stage's writes and counts: where a slow stage spends its time.
        figures["encode_seconds"] = round(time.perf_counter() - started, 3)
        vectors = fresh
        if known is not None:
            vectors = fresh.unionByName(known.join(needed.select("text_hash"), "text_hash", how="left_semi"))

        store.write_together(
            {
                "item_vectors": attach_vectors(items_t, vectors, model_id, ["item_id"]),
                "text_vectors": attach_vectors(users_t, vectors, model_id, ["user_id", "kind", "item_id"]),
            }
        )
        # Every count the figures and the reconciliation need, in one job (the staged vectors are
        # still there to count).
        counted = {
            "embedded": fresh,
            "item_vectors": store.read("item_vectors"),
            "text_vectors": store.read("text_vectors"),
            "item_texts": items_t,
            "items_without_text": items.where(F.col("text").isNull()),
            "user_texts": users_t,
        }
        if known is not None:  # else every distinct text was embedded, and the two counts are one
            counted["texts_distinct"] = needed
        counts = row_counts(counted)
        counts.setdefault("texts_distinct", counts["embedded"])
        store.drop_staged("new_vectors")
        for name in VECTOR_OUTPUTS:
            ctx.manifest.record_output(name)

        figures.update(
            model_id=model_id,
            texts_distinct=counts["texts_distinct"],
            embedded=counts["embedded"],
            reused=counts["texts_distinct"] - counts["embedded"],
            item_vectors=counts["item_vectors"],
            text_vectors=counts["text_vectors"],
            items_without_text=counts["items_without_text"],
        )
        check_reconciled(figures, counts["item_texts"], counts["user_texts"])
    return figures


def check_reconciled(figures: dict, item_texts_n: int, user_texts_n: int) -> None:
    """Every text that went in (``item_texts_n`` item and ``user_texts_n`` user texts) has its vector in
    ``figures``: anything else is a lost row, so the stage fails."""
    if figures["item_vectors"] != item_texts_n or figures["text_vectors"] != user_texts_n:
        raise RuntimeError(
            f"embed lost rows: {item_texts_n} item texts -> {figures['item_vectors']} item vectors, "
            f"{user_texts_n} user texts -> {figures['text_vectors']} text vectors"
        )
