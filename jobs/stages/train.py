"""Stage 2, train: a two-tower model learned from the interactions over the frozen text vectors.

``train.mode: fit`` trains the towers (``towers.training.fit_towers``) and saves them under ``towers``;
``apply`` loads the saved towers without retraining. Either way the item tower places every item,
items never seen in training through the text path alone (the cold-start promise):
``trained_item_vectors`` (item_id, vector, learned_part, model_id). The profile stage then places users
with the user tower, so segment and recommend work in the learned space. Where ``train.als_weight``
resolves above 0 (``auto``: with the order-free objective), fit also fits Spark ML ALS and writes its
factors (``als_user_factors``, ``als_item_factors``), which recommend blends into the score
(``jobs.towers.als``); ``apply`` keeps them, a new item having none.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segrec.jobs.context import RunContext
from segrec.jobs.errors import InputError
from segrec.jobs.towers.als import ALS_ITEM_FACTORS, ALS_USER_FACTORS, AlsParams, als_factors, blend_weight
from segrec.jobs.towers.training import (
    MODEL,
    MODEL_FILES,
    TrainedModel,
    fit_towers,
    learned_item_vectors,
    save_model,
    trained_model,
)
from segrec.jobs.vectors.spaces import TRAINED_ITEM_VECTORS, check_finite

log = logging.getLogger("segrec")


# ------------------------------------------------------------------------------------ transforms


# ------------------------------------------------------------------------------------- training


# ------------------------------------------------------------------------------- saving, loading


# ------------------------------------------------------------------------------------------ stage


def run(ctx: RunContext) -> dict:
    """Fit (or, in ``apply`` mode, load) the two-tower model for the run ``ctx`` and place every item
    with it: reads ``item_vectors`` (and ``interactions``, ``text_vectors`` to fit), writes ``towers``
    and ``trained_item_vectors``. Returns the stage's figures (model id, examples, loss, seconds);
    with ``train.enabled`` false it writes nothing and says so."""
    config, store = ctx.config, ctx.store
    with ctx.manifest.stage("train") as figures:
        if not config.train.enabled:
            figures["skipped"] = "train.enabled is false: profile, segment and recommend use the text vectors"
            return figures
        item_vectors = store.read("item_vectors", needed_by="train")
        if config.train.mode == "apply":
            # New items placed with the saved towers, nothing retrained (like segment's assign mode).
            model = trained_model(ctx)
            if model is None:
                raise InputError(
                    f"train.mode=apply needs a trained model under {store.path(MODEL)}: run train in fit mode first"
                )
            figures.update(mode="apply", model_id=model.model_id)
        else:
            interactions = store.read("interactions", needed_by="train")
            text_vectors = store.read("text_vectors", needed_by="train")
            model, fit_figures = fit_towers(ctx.spark, store, config, interactions, item_vectors, text_vectors)
            model = replace(model, als_weight=blend_weight(config.train, model.weights.settings.objective))
            if model.als_weight > 0:
                fit_figures.update(write_als_factors(ctx, interactions, model.model_id))
            fit_figures["als_weight"] = model.als_weight
            save_model(store, model)
            ctx.manifest.record_output(MODEL)
            figures.update(mode="fit", model_id=model.model_id, **fit_figures)
            ctx.manifest.train_curve = model.curve
            log_to_tracker(ctx, model, fit_figures)
        store.write(learned_item_vectors(item_vectors, model), TRAINED_ITEM_VECTORS)
        figures["items"] = check_finite(store.read(TRAINED_ITEM_VECTORS), TRAINED_ITEM_VECTORS, "item_id")
        ctx.manifest.record_output(TRAINED_ITEM_VECTORS)
    return figures


def write_als_factors(ctx: RunContext, interactions: DataFrame, model_id: str) -> dict:
    """Fit ALS on ``interactions`` with ``ctx``'s train section's ALS settings and write its user and item
    factors (``als_user_factors``, ``als_item_factors``) tagged with the towers' ``model_id``, which the
    recommend stage blends in. Returns figures (users and items with a factor, seconds)."""
    train, store = ctx.config.train, ctx.store
    started = time.perf_counter()
    tag = F.lit(model_id).alias("model_id")
    with als_factors(interactions, AlsParams.of(train), train.als_max_iter, train.seed) as (users, items):
        store.write_together(
            {
                ALS_USER_FACTORS: users.select("user_id", "factor", tag),
                ALS_ITEM_FACTORS: items.select("item_id", "factor", tag),
            }
        )
    figures = {
        "als_users": check_finite(store.read(ALS_USER_FACTORS), ALS_USER_FACTORS, "user_id", "factor"),
        "als_items": check_finite(store.read(ALS_ITEM_FACTORS), ALS_ITEM_FACTORS, "item_id", "factor"),
        "als_seconds": round(time.perf_counter() - started, 1),
    }
    for name in (ALS_USER_FACTORS, ALS_ITEM_FACTORS):
        ctx.manifest.record_output(name)
    return figures


def log_to_tracker(ctx: RunContext, model: TrainedModel, figures: dict) -> None:
    """The loss per epoch of ``model``, the fit's ``figures`` and the saved towers (as written, from ``ctx``'s
    output store), logged to ``ctx``'s tracker."""
    tracker = ctx.tracker
    if not tracker.enabled:
        return
    for point in model.curve:
        tracker.log_metrics({"train.loss": point["loss"]}, step=int(point["epoch"]))
    tracker.log_metrics({f"train.{key}": value for key, value in figures.items()})
    root = ctx.store.path(MODEL)
    tracker.log_files({name: ctx.store.fs.read_bytes(f"{root}/{name}") for name in MODEL_FILES}, "models/towers")
