"""Stage 6, evaluate: hold out each user's newest interactions, rebuild everything on the rest, and
score our model against baselines on the same split, in the same run.

Split: per user, the newest ``evaluate.holdout`` interactions are held out (seeded random without
timestamps; see ``jobs.evaluation.split``). The training interactions are the only interactions any model
sees: user vectors, segments, segment popularity, seen-masks, most-popular counts and ALS factors
are all built from them (``tests/test_evaluate.py`` checks this). Item and user texts are inputs,
not interactions, and are used as they are.

Tuning happens on a second split of the training data (the newest interactions of the training set
held out again): the hybrid's popularity weight (and segment count: ``evaluate.segment_ks``, or the k
that ``segment.k: auto`` chooses there) and the ALS grid are chosen there by NDCG at
``evaluate.tune_k``, then refitted on the whole training set and scored on the held-out set once.

Models: most_popular, als, random (baselines); content (cosine only, lambda 0), hybrid (cosine +
lambda * in-segment popularity, lambda tuned) and trained (the two-tower model of ``jobs.towers.training``, its
settings chosen over ``evaluate.train_grid``; learned space only). Metrics: ranking metrics at every k
(``jobs.evaluation.ranking``), list metrics (``jobs.evaluation.list_quality``), the cold-user, long-tail and
cold-item slices
(held-out rows whose item has no training interaction: most-popular and ALS cannot rank those items by
construction), segment quality.
Outputs: ``evaluation/metrics.json``, ``evaluation/report.md`` and PNG plots (``jobs.evaluation.report``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segrec.jobs.config import Config, executor_settings
from segrec.jobs.context import RunContext
from segrec.jobs.errors import InputError
from segrec.jobs.evaluation import baselines, report
from segrec.jobs.evaluation.audience_quality import audience_report
from segrec.jobs.evaluation.list_quality import Reference, list_metrics, long_tail_items, reference, segment_quality
from segrec.jobs.evaluation.ranking import ranking_metrics
from segrec.jobs.evaluation.results import EvaluationResult, ModelResult, Ranking, Split
from segrec.jobs.evaluation.split import holdout_split
from segrec.jobs.evaluation.targeting import targeting_report
from segrec.jobs.io.manifest import RunManifest
from segrec.jobs.io.store import OutputStore
from segrec.jobs.recommendations.top_k import Recommender
from segrec.jobs.segments.fitting import features, fit
from segrec.jobs.segments.segmenters import segmenter_for
from segrec.jobs.towers.als import AlsParams, als_factors, blend_weight, blended
from segrec.jobs.towers.training import (
    fit_towers,
    has_timestamps,
    learned_item_vectors,
    learned_user_vectors,
    with_cell,
)
from segrec.jobs.vectors.text_profiles import user_vectors
from segrec.udfs.topk.settings import TopKSettings

log = logging.getLogger("segrec")


@dataclass
class TrainingView:
    """What every model may use: the training interactions, and texts and their vectors."""

    train: DataFrame
    item_vectors: DataFrame
    text_vectors: DataFrame
    users: DataFrame | None
    # The users whose lists are scored (those with held-out rows, sampled by ``evaluate.sample_users``):
    # models are fitted on every training row, but only these users' lists are computed.
    scored: DataFrame | None = None

    def only_scored(self, df: DataFrame) -> DataFrame:
        """``df`` (a user_id column) restricted to the scored users."""
        return df if self.scored is None else df.join(self.scored, on="user_id", how="left_semi")


@dataclass
class OurModel:
    """Our pipeline rebuilt on one training set: profiles, segments and one list per weight."""

    profiles: DataFrame
    segments: DataFrame
    centroids: np.ndarray
    curve: dict[int, dict] | None  # the stability curve k was chosen on (k auto)
    stability: dict  # the segments' own bootstrap stability figures
    lists: dict[float, DataFrame] = field(default_factory=dict)


class Scratch:
    """The staged and cached intermediates of one evaluation, dropped together when it ends."""

    def __init__(self, store: OutputStore, manifest: RunManifest | None = None):
        self.store = store
        self.manifest = manifest
        self.names: list[str] = []
        self.frames: list[DataFrame] = []
        # Item matrix files for the workers on a session without broadcasts (Spark Connect).
        self.matrix_dir = store.staging_path("eval-catalogues")

    def progress(self, activity: str) -> None:
        """Log the ``activity`` the evaluation does now; the stage's progress lines repeat it while it lasts."""
        if self.manifest is not None:
            self.manifest.doing(activity)
        else:
            log.info("%s", activity)

    def keep(self, df: DataFrame, name: str) -> DataFrame:
        """``df`` written to evaluate's staging as ``name`` and read back (dropped at the end)."""
        self.names.append(name)
        return self.store.write_staged(df, f"eval-{name}")

    def cached(self, df: DataFrame) -> DataFrame:
        """``df`` cached until the evaluation ends."""
        self.frames.append(df.cache())
        return df

    def drop_all(self) -> None:
        """Unpersist every cached frame and delete every staged one."""
        for df in self.frames:
            df.unpersist()
        for name in self.names:
            self.store.drop_staged(f"eval-{name}")
        self.store.fs.delete(self.matrix_dir)


# ---------------------------------------------------------------------------------- building


def with_segment_k(config: Config, k: int | None) -> Config:
    """The config with ``segment.k`` replaced (None: as configured)."""
    if k is None:
        return config
    return config.model_copy(update={"segment": config.segment.model_copy(update={"k": k})})


def build_profiles(config: Config, scratch: Scratch, data: TrainingView, tag: str) -> DataFrame:
    """Text-space user vectors from ``data``'s training rows under ``config``, kept in ``scratch`` as
    ``tag``; users without any signal left out."""
    profiles = user_vectors(data.users, data.train, data.item_vectors, data.text_vectors, config.profile)
    return scratch.keep(profiles, f"{tag}-profiles").where(F.col("vector").isNotNull())


def build_segments(
    spark: SparkSession, config: Config, scratch: Scratch, profiles: DataFrame, tag: str
) -> tuple[DataFrame, np.ndarray, dict[int, dict] | None, dict]:
    """Segments of ``profiles`` as the segment stage fits them under ``config`` with ``spark`` (always
    fitted: a saved model may have seen held-out data), kept in ``scratch`` as ``tag``: (segments,
    centroids, stability curve or None, their stability figures)."""
    feats = features(profiles).cache()
    model, curve, shipped = fit(spark, feats, config.segment, feats.count())
    feats.unpersist()
    segmenter = segmenter_for(config.segment)
    centroids = segmenter.centres(model)
    segments = scratch.keep(segmenter.assign(profiles, centroids), f"{tag}-segments")
    return segments, centroids, curve, shipped


def build_ours(
    spark: SparkSession,
    config: Config,
    scratch: Scratch,
    data: TrainingView,
    profiles: DataFrame,
    weights: list[float],
    k: int,
    tag: str,
) -> OurModel:
    """Segments of ``profiles`` (always fitted: a saved model may have seen held-out data), then one top-``k``
    list per popularity weight of ``weights``, from ``data`` under ``config`` with ``spark``, kept in
    ``scratch`` as ``tag``."""
    segments, centroids, curve, shipped = build_segments(spark, config, scratch, profiles, tag)
    ours = OurModel(profiles, segments, centroids, curve, shipped)
    # One catalogue for the whole weight grid: counted, collected and shipped to the workers once.
    recommender = Recommender(
        spark,
        data.item_vectors,
        data.train,
        segments,
        config.recommend,
        scratch.matrix_dir,
        with_popularity=max(weights) > 0,
    )
    users = data.only_scored(profiles)
    for i, weight in enumerate(weights):
        settings = executor_settings(
            TopKSettings, config, k=k, popularity_weight=weight, explain=False, score_parts=False
        )
        ours.lists[weight] = scratch.keep(recommender.recommend(users, settings), f"{tag}-recs-{i}")
    return ours


def build_trained(
    spark: SparkSession, config: Config, scratch: Scratch, data: TrainingView, cell: dict, k: int, tag: str
) -> tuple[DataFrame, dict, tuple[DataFrame, DataFrame]]:
    """The two-tower model with one grid ``cell``'s settings over ``config``, kept in ``scratch`` as ``tag``
    (``spark``), trained on ``data.train`` under
    TorchDistributor as the train stage does, and its top-k lists: blended with ALS where
    ``train.als_weight`` resolves above 0, as the recommend stage scores them. The vectors returned are
    the towers' own (the learned space the segments and the cold-item ranking use)."""
    model, figures = fit_towers(
        spark,
        scratch.store,
        config,
        data.train,
        data.item_vectors,
        data.text_vectors,
        with_cell(config.train, cell),
        tag=f"eval-{tag}-towers",
    )
    items = scratch.keep(learned_item_vectors(data.item_vectors, model), f"{tag}-learned-items")
    users = learned_user_vectors(data.users, data.train, items, data.text_vectors, model, config)
    # every user's learned vector (the learned-space segments need them all); lists for the scored ones
    users = scratch.keep(users, f"{tag}-learned-users").where(F.col("vector").isNotNull())
    if config.recommend.new_item_slots:
        # The new items' places are the last of a list of recommend.k, as run ships it: a longer list
        # would push them past the cut-offs that matter (they rank by score, below the rest).
        k = min(k, config.recommend.k)
    settings = executor_settings(TopKSettings, config, k=k, popularity_weight=0.0, explain=False, score_parts=False)
    train = with_cell(config.train, cell)
    weight = blend_weight(train, figures["objective"])
    scored_users, scored_items = data.only_scored(users), items
    if weight > 0:  # blended with ALS as the train stage ships it, ALS fitted on the same training rows
        with als_factors(data.train, AlsParams.of(train), train.als_max_iter, train.seed) as factors:
            user_factors = scratch.keep(factors[0], f"{tag}-als-users")
            item_factors = scratch.keep(factors[1], f"{tag}-als-items")
        scored_users, scored_items = blended(scored_users, items, user_factors, item_factors, weight)
    recommender = Recommender(spark, scored_items, data.train, None, config.recommend, scratch.matrix_dir)
    recs = recommender.recommend(scored_users, settings)
    figures = {**figures, "model_id": model.model_id, "curve": model.curve, "als_weight": weight}
    return scratch.keep(recs, f"{tag}-trained-recs"), figures, (users, items)


def tune(spark: SparkSession, config: Config, scratch: Scratch, data: TrainingView, n_items: int) -> dict:
    """Choose the hybrid (segment count and popularity weight) and the ALS cell on a validation split
    of ``data``'s training rows (``n_items`` in the catalogue), under ``config`` with ``spark`` and
    ``scratch``."""
    settings = config.evaluate
    k = settings.tune_k
    train, validation = holdout_split(data.train, settings.holdout, settings.seed)
    validation = scratch.keep(data.only_scored(validation), "val-held")
    scored = scratch.cached(validation.select("user_id").distinct())
    inner = TrainingView(scratch.keep(train, "val-train"), data.item_vectors, data.text_vectors, data.users, scored)

    def ndcg(recs: DataFrame) -> float:
        return ranking_metrics(recs, validation, [k])[k]["ndcg"]

    def coverage(recs: DataFrame) -> float:
        # next to NDCG: what a larger weight costs in catalogue reach, for choosing a default
        return recs.where(F.col("rank") <= k).select("item_id").distinct().count() / n_items

    profiles = build_profiles(config, scratch, inner, "val")
    hybrid: list[dict[str, Any]] = []
    curves: dict[int, dict] = {}  # with segment.k auto: the stability curve each chosen k came from
    segment_ks: list[int | None] = [*settings.segment_ks] if settings.segment_ks else [None]
    for segment_k in segment_ks:
        scratch.progress(
            f"evaluate: tuning the hybrid (segment k {segment_k or 'as configured'}, "
            f"{len(settings.popularity_weights)} popularity weights)"
        )
        ours = build_ours(
            spark,
            with_segment_k(config, segment_k),
            scratch,
            inner,
            profiles,
            settings.popularity_weights,
            k,
            f"val-k{segment_k}",
        )
        # k auto: the k its bootstrap stability chose here is the hybrid's k, like its popularity weight
        # (the test side fits that k instead of choosing again: the choice costs a k-means fit and its
        # bootstrap refits per candidate k)
        chosen = segment_k if segment_k is not None else len(ours.centroids)
        if ours.curve is not None:
            curves[chosen] = ours.curve
        hybrid += [
            {
                "segment_k": chosen,
                "popularity_weight": w,
                "ndcg": round(ndcg(recs), 6),
                "coverage": round(coverage(recs), 4),
            }
            for w, recs in ours.lists.items()
        ]
    best = max(hybrid, key=lambda row: row["ndcg"])  # ties: the first (smaller weight, earlier k)
    cells = []
    grid = baselines.als_grid(settings.als.ranks, settings.als.reg_params, settings.als.alphas)
    for i, params in enumerate(grid):
        scratch.progress(f"evaluate: tuning ALS, cell {i + 1} of {len(grid)}: {params.as_dict()}")
        recs = baselines.als(
            spark, inner.train, params, settings.als.max_iter, settings.seed, k, inner.scored, scratch.matrix_dir
        )
        cells.append({**params.as_dict(), "ndcg": round(ndcg(recs), 6)})
    best_cell = max(cells, key=lambda c: c["ndcg"])  # ties: the first in grid order
    tuning = {
        "metric": f"ndcg@{k}",
        "hybrid": {
            "grid": hybrid,
            "best": {key: best[key] for key in ("segment_k", "popularity_weight")},
            **({"stability_by_k": curves[best["segment_k"]]} if best["segment_k"] in curves else {}),
        },
        "als": {"grid": cells, "best": {key: best_cell[key] for key in ("rank", "reg_param", "alpha")}},
    }
    if config.train.enabled and len(settings.train_grid) == 1:
        # One cell: nothing to choose between (the objective, with auto, is chosen inside its training).
        tuning["trained"] = {"grid": [], "best": settings.train_grid[0]}
    elif config.train.enabled:
        towers = []
        for i, cell in enumerate(settings.train_grid):
            scratch.progress(
                f"evaluate: tuning the towers, cell {i + 1} of {len(settings.train_grid)}: {cell or 'as configured'}"
            )
            recs, figures, _ = build_trained(spark, config, scratch, inner, cell, k, f"val-t{i}")
            towers.append({"cell": cell, "ndcg": round(ndcg(recs), 6), "final_loss": figures["final_loss"]})
        best_towers = max(towers, key=lambda c: c["ndcg"])  # ties: the first in grid order
        tuning["trained"] = {"grid": towers, "best": best_towers["cell"]}
    return tuning


def build_all(
    spark: SparkSession, config: Config, scratch: Scratch, data: TrainingView, tuned: dict
) -> tuple[dict, OurModel, dict[str, tuple[DataFrame, DataFrame]]]:
    """Every model's top-k lists on ``data``'s training set (``config``, ``spark``, ``scratch``, and the
    ``tuned`` choices), k the largest cut-off; and the (user, item)
    vectors of the models that place items by their text (for the cold-item ranking)."""
    settings = config.evaluate
    k = max(settings.ks)
    best = tuned["hybrid"]["best"]
    weight = best["popularity_weight"]
    profiles = build_profiles(config, scratch, data, "test")
    ours = build_ours(
        spark, with_segment_k(config, best["segment_k"]), scratch, data, profiles, sorted({0.0, weight}), k, "test"
    )
    lists = {}
    inputs = baselines.BaselineInputs(
        spark, data.train, data.item_vectors, k, data.scored, settings, tuned, scratch.matrix_dir
    )
    for name, build in baselines.BASELINES.items():
        recs = build(inputs)
        if recs is not None:
            lists[name] = scratch.keep(recs, f"baseline-{name}")
    lists.update(content=ours.lists[0.0], hybrid=ours.lists[weight])
    vectors = {"content": (ours.profiles, data.item_vectors)}
    if "trained" in tuned:
        chosen = tuned["trained"]["best"] or "the configured settings"
        scratch.progress(f"evaluate: training the towers on all training rows with {chosen}")
        lists["trained"], figures, vectors["trained"] = build_trained(
            spark, config, scratch, data, tuned["trained"]["best"], k, "test"
        )
        tuned["trained"]["objective"] = figures["objective"]
        tuned["trained"]["als_weight"] = figures["als_weight"]
        if "objective_choice" in figures:
            tuned["trained"]["objective_choice"] = figures["objective_choice"]
    return lists, ours, vectors


def cold_item_ranking(
    spark: SparkSession,
    config: Config,
    scratch: Scratch,
    data: TrainingView,
    vectors: dict,
    cold_items: DataFrame,
    held: DataFrame,
    ks: list[int],
) -> dict[str, Ranking]:
    """Ranking metrics at ``ks`` of each text-reading model (``vectors``; ``data``, ``config``, ``spark``,
    ``scratch``) when it ranks only the ``cold_items``, those nobody interacted with
    in training, against the held-out rows of those items (the usual cold-start protocol: can the model
    tell which new item a user will pick?). ALS and most-popular have no score for such items."""
    relevant = held.join(cold_items, on="item_id", how="left_semi")
    settings = executor_settings(
        TopKSettings, config, k=max(ks), popularity_weight=0.0, explain=False, score_parts=False
    )
    results = {}
    for name, (users, items) in vectors.items():
        catalogue = items.join(cold_items, on="item_id", how="left_semi")
        users = users.join(relevant.select("user_id").distinct(), on="user_id", how="left_semi")
        recommender = Recommender(spark, catalogue, data.train, None, config.recommend, scratch.matrix_dir)
        recs = recommender.recommend(users, settings)
        recs = scratch.keep(recs, f"cold-only-{name}")
        results[name] = ranking_metrics(recs, relevant, ks)
    # The hybrid's popularity term is 0 for an item nobody interacted with: among cold items it ranks as content.
    results["hybrid"] = results["content"]
    return results


def sampled_users(held: DataFrame, sample: float | None, seed: int) -> DataFrame:
    """The users with ``held`` rows, or a sample of them seeded by ``seed``: ``sample`` below 1 is a share (each
    user kept by a hash of its id, so the same users whatever the partitioning), 1 or more a count (the
    users with the smallest hashes, ties by id)."""
    users = held.select("user_id").distinct()
    if sample is None:
        return users
    order = F.xxhash64(F.col("user_id").cast("string"), F.lit(seed))
    if sample < 1:
        return users.where(F.pmod(order, F.lit(1_000_000)) < F.lit(int(round(sample * 1_000_000))))
    return users.orderBy(order, "user_id").limit(int(sample))


def new_user_split(
    train: DataFrame, held: DataFrame, share: float, seed: int
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(train, held, new users): with ``share`` > 0, a share of the users (by a hash of the id and ``seed``) lose
    every training interaction to the held-out rows, for every model alike: they are new users, known by
    their own text alone, and their held-out rows measure what each model recommends to someone with no
    history. Without: (train, held, no users)."""
    users = train.select("user_id").unionByName(held.select("user_id")).distinct()
    if not share:
        return train, held, users.limit(0)
    threshold = F.lit(int(round(share * 10_000)))
    new = users.where(F.pmod(F.xxhash64(F.col("user_id").cast("string"), F.lit(seed + 1)), F.lit(10_000)) < threshold)
    moved = train.join(new, on="user_id", how="left_semi")
    return train.join(new, on="user_id", how="left_anti"), held.unionByName(moved), new


def without_new_items(train: DataFrame, share: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """(train, removed): with ``share`` > 0, a share of the items of ``train`` (by a hash of the id and ``seed``, so the
    same items whatever the partitioning) lose every training interaction, for every model alike: they
    are new items, and their held-out rows measure who can recommend what nobody has touched yet."""
    if not share:
        return train, train.limit(0)
    new = F.pmod(F.xxhash64(F.col("item_id").cast("string"), F.lit(seed)), F.lit(10_000)) < F.lit(
        int(round(share * 10_000))
    )
    return train.where(~new), train.where(new)


# --------------------------------------------------------------------------------- scoring


def segment_figures(
    segments: DataFrame,
    stability: dict,
    curve: dict[int, dict] | None,
    data: TrainingView,
    held: DataFrame,
    config: Config,
) -> dict:
    """Bootstrap ``stability`` of each of ``segments``, the ``curve`` k was chosen on, and the targeting lift
    of each segment (and of random segments of the same sizes) on the ``held`` rows, from ``data``'s
    training rows under ``config``."""
    return {
        "k": len(stability["stability"]),
        "stability": stability["stability"],
        "mean_stability": stability["mean_stability"],
        "reproducible_segments": stability["reproducible"],
        "stability_by_k": curve,
        "targeting": targeting_report(
            segments, data.train, held, config.segment, config.evaluate.seed, config.evaluate.chance_draws
        ),
    }


def score(recs: DataFrame, held: DataFrame, ref: Reference, slices: dict[str, DataFrame], ks: list[int]) -> ModelResult:
    """Ranking metrics at ``ks``, list metrics (against ``ref``) and ``slices`` of one model's lists ``recs``,
    over the users with ``held`` items."""
    new_users = slices.get("new_users")
    warm = held if new_users is None else held.join(new_users, on="user_id", how="left_anti")
    recs_warm = recs.join(warm.select("user_id").distinct(), on="user_id", how="left_semi")
    return ModelResult(
        ranking=ranking_metrics(recs_warm, warm, ks),
        lists={k: list_metrics(recs_warm, ref, k) for k in ks},
        cold_users=ranking_metrics(recs, warm.join(slices["cold_users"], on="user_id", how="left_semi"), ks),
        long_tail=ranking_metrics(recs, warm.join(slices["long_tail_items"], on="item_id", how="left_semi"), ks),
        cold_items=ranking_metrics(recs, warm.join(slices["cold_items"], on="item_id", how="left_semi"), ks),
        # the new-user protocol: users known by their text alone, scored apart
        new_users=None
        if new_users is None
        else ranking_metrics(recs, held.join(new_users, on="user_id", how="left_semi"), ks),
    )


def make_slices(
    data: TrainingView,
    held: DataFrame,
    ref: Reference,
    config: Config,
    scratch: Scratch,
    new_users: DataFrame | None = None,
) -> tuple[dict[str, DataFrame], dict]:
    """The slices every model is scored on (DataFrames of user or item ids, from ``data``, ``held``, ``ref``
    and ``config``, cached in ``scratch``) and their sizes; held-out
    rows of ``new_users`` (the new-user protocol) are left out of every slice but their own."""
    settings = config.evaluate
    if new_users is not None:
        held = held.join(new_users, on="user_id", how="left_anti")
    per_user = data.train.groupBy("user_id").agg(F.count("*").alias("n"))
    cold = scratch.cached(per_user.where(F.col("n") <= settings.cold_max_train).select("user_id"))
    tail = long_tail_items(ref)
    # Items with no training interaction: only a model that reads item texts can rank them.
    cold_items = scratch.cached(
        data.item_vectors.select("item_id").join(data.train.select("item_id").distinct(), on="item_id", how="left_anti")
    )
    sizes = {
        "cold_users": {
            "max_train_interactions": settings.cold_max_train,
            "users": held.select("user_id").distinct().join(cold, on="user_id", how="left_semi").count(),
        },
        "long_tail": {
            "head_share": settings.head_share,
            "items": tail.count(),
            "held_out_rows": held.join(tail, on="item_id", how="left_semi").count(),
        },
        "cold_items": {
            "items": cold_items.count(),
            "held_out_rows": held.join(cold_items, on="item_id", how="left_semi").count(),
        },
    }
    slices = {"cold_users": cold, "long_tail_items": tail, "cold_items": cold_items}
    if new_users is not None:
        slices["new_users"] = new_users
        sizes["new_users"] = new_user_sizes(data, new_users, config.evaluate.cold_user_share)
    return slices, sizes


def new_user_sizes(data: TrainingView, new_users: DataFrame, share: float) -> dict:
    """How many ``new_users`` the new-user protocol (``share``) scores, and how many of them have a text
    of their own in ``data`` (the
    others are known by nothing: only most-popular and random lists reach them)."""
    with_text = new_users.join(
        data.text_vectors.select(F.col("user_id")).where(F.col("user_id").isNotNull()).distinct(),
        on="user_id",
        how="left_semi",
    )
    return {"cold_user_share": share, "users": new_users.count(), "with_text": with_text.count()}


# ----------------------------------------------------------------------------------- stage


def read_inputs(store: OutputStore, train: DataFrame) -> TrainingView:
    """What every model is built from: the ``train`` rows and ``store``'s validated inputs and vectors."""
    return TrainingView(
        train=train,
        item_vectors=store.read("item_vectors", needed_by="evaluate"),
        text_vectors=store.read("text_vectors", needed_by="evaluate"),
        users=store.read("users") if store.exists("users") else None,
    )


def evaluate(ctx: RunContext) -> EvaluationResult:
    """The whole evaluation of the run ``ctx``; returns what it measured (also written to ``evaluation/``)."""
    scratch = Scratch(ctx.store, ctx.manifest)
    try:
        return evaluate_with(ctx, scratch)
    finally:
        scratch.drop_all()


def evaluate_with(ctx: RunContext, scratch: Scratch) -> EvaluationResult:
    """The evaluation of ``ctx``'s run, staging its intermediate frames in ``scratch``."""
    spark, config, store = ctx.spark, ctx.config, ctx.store
    settings = config.evaluate
    started = time.perf_counter()
    interactions = store.read("interactions", needed_by="evaluate")
    train, held = holdout_split(interactions, settings.holdout, settings.seed)
    train, removed = without_new_items(train, settings.cold_item_share, settings.seed)
    train, held, new_users = new_user_split(train, held, settings.cold_user_share, settings.seed)
    data = read_inputs(store, scratch.keep(train, "train"))
    users_held = held.select("user_id").distinct().count() if settings.sample_users is not None else None
    data.scored = scratch.keep(sampled_users(held, settings.sample_users, settings.seed), "scored-users")
    held = scratch.keep(data.only_scored(held), "held")
    split = Split(
        train_rows=data.train.count(),
        held_out_rows=held.count(),
        users_evaluated=data.scored.count(),
        holdout_per_user=settings.holdout,
        holdout_by="time" if has_timestamps(interactions) else "seeded hash",
    )
    if users_held is not None:
        split.sample_users, split.users_with_held_out_rows = settings.sample_users, users_held
    if settings.cold_item_share:
        split.cold_item_share = settings.cold_item_share
        split.training_rows_of_new_items_removed = removed.count()
    protocol_users = scratch.keep(new_users, "new-users") if settings.cold_user_share else None
    if split.held_out_rows == 0:
        raise InputError("evaluate: no interaction could be held out (every user has a single interaction)")

    ref = reference(data.train, data.item_vectors, settings.head_share)
    ref.items = scratch.cached(ref.items)  # read by every model's list metrics at every k
    tuned = tune(spark, config, scratch, data, ref.n_items)
    log.info("evaluate: tuned %s", {k: v["best"] for k, v in tuned.items() if isinstance(v, dict)})
    lists, ours, vectors = build_all(spark, config, scratch, data, tuned)
    slices, slice_sizes = make_slices(data, held, ref, config, scratch, protocol_users)
    models = {name: score(recs, held, ref, slices, settings.ks) for name, recs in lists.items()}
    if slice_sizes["cold_items"]["held_out_rows"]:
        for name, figures in cold_item_ranking(
            spark, config, scratch, data, vectors, slices["cold_items"], held, settings.ks
        ).items():
            models[name].cold_items_only = figures

    scratch.progress("evaluate: segments and their targeting lift")
    quality = segment_quality(ours.profiles, ours.segments, ours.centroids)
    # the curve the text space's k was chosen on: validation's, where tuning chose it
    curve = ours.curve or tuned["hybrid"].get("stability_by_k")
    quality.update(segment_figures(ours.segments, ours.stability, curve, data, held, config))
    if "trained" in vectors:  # the learned space, where `run` ships its segments
        learned = build_segments(spark, config, scratch, vectors["trained"][0], "learned")
        quality["learned"] = segment_figures(learned[0], learned[3], learned[2], data, held, config)
    scratch.progress("evaluate: audiences and their precision")
    spaces: dict[str, tuple[DataFrame, DataFrame]] = {
        name: vectors[name] for name in ("trained", "content") if name in vectors
    }
    audiences = audience_report(
        spark,
        data.train,
        held,
        data.scored,
        spaces,
        ours.segments,
        ours.centroids,
        data.item_vectors,
        AlsParams(**tuned["als"]["best"]),
        settings,
        removed.select("item_id").distinct() if settings.cold_item_share else None,
    )
    result = EvaluationResult(
        run_id=store.run_id,
        split=split,
        tuning=tuned,
        slices=slice_sizes,
        segments=quality,
        models=models,
        seconds=round(time.perf_counter() - started, 1),
        baselines=list(baselines.BASELINES),
        audiences=audiences,
    )
    projection = report.projection(ours.profiles, ours.segments, settings.projection_sample, settings.seed)
    report.write(store, result, projection, settings, ctx.tracker)
    return result


def run(ctx: RunContext) -> dict:
    """The offline evaluation for the run ``ctx``: holds out each user's newest interactions, rebuilds
    our models and the baselines on the rest, and writes ``metrics.json``, ``report.md`` and plots
    under ``<output.path>/evaluation``. Returns the stage's figures (the table, ratios against each
    baseline)."""
    with ctx.manifest.stage("evaluate") as figures:
        result = evaluate(ctx)
        k = report.report_k(ctx.config.evaluate)
        figures.update(
            users=result.split.users_evaluated,
            held_out=result.split.held_out_rows,
            **{f"hybrid_{key}": value for key, value in result.tuning["hybrid"]["best"].items()},
        )
        ctx.manifest.evaluation_table = report.comparison_table(result, k)
        ctx.manifest.evaluation_ratios = report.ratio_lines(result, k) + [
            f"audiences, existing items: {line}"
            for line in report.audience_ratio_lines(result.audiences.get("existing_items", {}))
        ]
        ctx.manifest.record_output("report")
    return figures
