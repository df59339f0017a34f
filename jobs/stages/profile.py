"""Stage 3, profile: one vector per user, in the space segment and recommend will use.

With trained towers (``train.enabled`` and a saved model) the user tower places each user in the
learned space (``towers.training.learned_user_vectors``); otherwise the user is the mix of their own text
vectors and the vectors of the items they interacted with (``vectors.text_profiles.user_vectors``). Output:
``user_vectors`` with its ``space``. Users with no signal on either side are written to ``rejects``
with reason ``no_signal``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segrec.jobs.context import RunContext
from segrec.jobs.towers.training import learned_user_vectors, trained_model
from segrec.jobs.vectors.spaces import TEXT_SPACE, TRAINED_ITEM_VECTORS, check_finite
from segrec.jobs.vectors.text_profiles import user_vectors

NO_SIGNAL = "no_signal"


def no_signal_rejects(profiles: DataFrame) -> DataFrame:
    """Rejects rows (reason no_signal) for the ``profiles`` without a vector: no text and no history."""
    return profiles.where(F.col("vector").isNull()).select(
        F.lit("users").alias("source"),
        F.lit(None).cast("long").alias("row_ordinal"),
        F.col("user_id").alias("id"),
        F.lit(NO_SIGNAL).alias("reason"),
        F.to_json(F.struct("user_id", "n_items", "n_texts")).alias("raw"),
    )


def run(ctx: RunContext) -> dict:
    """One vector per user for the run ``ctx``: reads ``interactions``, ``users``, ``item_vectors``,
    ``text_vectors`` and ``rejects`` (and with trained towers ``trained_item_vectors``), writes
    ``user_vectors`` and ``rejects`` (no_signal users). Returns the stage's figures (space, users by
    the sides they have)."""
    store, settings = ctx.store, ctx.config.profile
    interactions = store.read("interactions", needed_by="profile")
    users = store.read("users") if store.exists("users") else None
    item_vectors = store.read("item_vectors", needed_by="profile")
    text_vectors = store.read("text_vectors", needed_by="profile")
    previous_rejects = store.read("rejects", needed_by="profile")
    model = trained_model(ctx)
    source = ctx.config.inputs.interactions

    with ctx.manifest.stage("profile") as figures:
        if model is not None:
            learned = store.read(TRAINED_ITEM_VECTORS, needed_by="profile with a trained model")
            built = learned_user_vectors(users, interactions, learned, text_vectors, model, ctx.config)
            space = model.model_id
        else:
            built = user_vectors(
                users, interactions, item_vectors, text_vectors, settings, source.feedback, source.implicit_weight
            )
            space = TEXT_SPACE
        figures["space"] = space
        profiles = store.write_staged(built.withColumn("space", F.lit(space)), "profiles")
        rejects = previous_rejects.where(F.col("reason") != NO_SIGNAL).unionByName(no_signal_rejects(profiles))
        store.write_together({"user_vectors": profiles.where(F.col("vector").isNotNull()), "rejects": rejects})
        store.drop_staged("profiles")
        check_finite(store.read("user_vectors"), "user_vectors", "user_id")
        ctx.manifest.record_output("user_vectors")
        ctx.manifest.record_output("rejects")
        summary = (
            store.read("user_vectors")
            .agg(
                F.count("*").alias("users"),
                F.sum(F.when((F.col("n_texts") > 0) & (F.col("n_items") > 0), 1).otherwise(0)).alias("both"),
                F.sum(F.when(F.col("n_items") == 0, 1).otherwise(0)).alias("text_only"),
                F.sum(F.when(F.col("n_texts") == 0, 1).otherwise(0)).alias("items_only"),
            )
            .collect()[0]
        )
        no_signal = store.read("rejects").where(F.col("reason") == NO_SIGNAL).count()
        figures.update(
            user_vectors=summary["users"],
            both_sides=summary["both"],
            text_only=summary["text_only"],
            items_only=summary["items_only"],
            no_signal=no_signal,
        )
        ctx.manifest.rejects_by_reason.setdefault("users", {})[NO_SIGNAL] = no_signal
    return figures
