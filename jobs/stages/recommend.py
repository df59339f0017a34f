"""Stage 5, recommend: each user's top k items in the user vectors' own space, seen items excluded.

Reads ``user_vectors``, the item vectors of their space, ``interactions`` and (for the popularity
boost) ``segments``; builds the lists with ``recommendations.top_k.recommendations`` (the plans and the score are
described there) and writes ``recommendations``; the manifest keeps a few users' lists for people.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segrec.jobs.context import RunContext
from segrec.jobs.errors import InputError
from segrec.jobs.evaluation.list_quality import list_churn
from segrec.jobs.recommendations.top_k import new_items, recommendations
from segrec.jobs.towers.als import ALS_ITEM_FACTORS, ALS_USER_FACTORS, blended
from segrec.jobs.towers.training import saved_als_weight
from segrec.jobs.vectors.spaces import TEXT_SPACE, item_vectors_for, space_of


def run(ctx: RunContext) -> dict:
    """Each user's top ``recommend.k`` items for the run ``ctx``: reads ``user_vectors``, the item
    vectors of their space, ``interactions`` and ``segments``; writes ``recommendations``. Returns the
    stage's figures (plan, items, rows and users written)."""
    store, settings = ctx.store, ctx.config.recommend
    user_vectors = store.read("user_vectors", needed_by="recommend")
    space = space_of(user_vectors)
    item_vectors = item_vectors_for(store, space)  # the user vectors' own space
    interactions = store.read("interactions", needed_by="recommend")
    segments = store.read("segments") if store.exists("segments") else None

    with ctx.manifest.stage("recommend") as figures:
        weight = als_weight(ctx, space)
        if weight > 0:
            user_vectors, item_vectors = blended(user_vectors, item_vectors, *read_als_factors(ctx, space), weight)
        figures["als_weight"] = weight
        matrix_dir = store.staging_path("catalogue")
        recs, plan_figures = recommendations(
            ctx.spark, user_vectors, item_vectors, interactions, segments, settings, matrix_dir
        )
        figures.update(plan_figures)
        new = new_items(item_vectors, interactions, settings.new_item_interactions)
        before = store.previous("recommendations")
        # An undated run replaces the previous lists in place: their pairs are kept aside first.
        previous_lists = (
            None
            if before is None
            else store.write_staged(before.read("recommendations").select("user_id", "item_id"), "previous_lists")
        )
        try:
            store.write(flag_new_items(recs, new), "recommendations")
        finally:
            store.fs.delete(matrix_dir)
        if before is not None and previous_lists is not None:
            figures["previous_run"] = before.run_date or "the undated previous output"
            figures.update(list_churn(previous_lists, store.read("recommendations")))
            store.drop_staged("previous_lists")
        ctx.manifest.record_output("recommendations")
        written = (
            store.read("recommendations")
            .agg(
                F.count("*").alias("rows"),
                F.countDistinct("user_id").alias("users"),
                F.count(F.when(F.col("new_item"), 1)).alias("new_item_picks"),
            )
            .collect()[0]
        )
        figures.update(
            rows=written["rows"], users=written["users"], k=settings.k, new_item_picks=written["new_item_picks"]
        )
        ctx.manifest.sample_recommendations = sample(store.read("recommendations"), store.read("items"))
    return figures


def als_weight(ctx: RunContext, space: str) -> float:
    """The weight of ALS's product in the score for user vectors in ``space`` (``ctx``'s run): the trained
    model's (train.als_weight as resolved when
    it was fitted) for user vectors in its space, 0 in the text space."""
    if space == TEXT_SPACE or not ctx.config.train.enabled:
        return 0.0
    return saved_als_weight(ctx.store, space)


def read_als_factors(ctx: RunContext, space: str) -> tuple[DataFrame, DataFrame]:
    """(user factors, item factors) the train stage wrote in ``ctx``'s output beside the model ``space``;
    exit 2 when they
    are missing or from another model."""
    factors = []
    for name in (ALS_USER_FACTORS, ALS_ITEM_FACTORS):
        source = ctx.store.latest(name) or ctx.store  # a dated night that applied the towers: the fit's night
        df = source.read(name, needed_by="recommend (train.als_weight above 0)")
        found = df.select("model_id").first()
        if found is not None and found["model_id"] != space:
            raise InputError(
                f"{name} was fitted beside {found['model_id']}, but the user vectors are in {space}: "
                "run train again (or set train.als_weight to 0 and run train)"
            )
        factors.append(df.drop("model_id"))
    return factors[0], factors[1]


def flag_new_items(recs: DataFrame, new: DataFrame) -> DataFrame:
    """``recs`` with ``new_item``: whether the item is one of ``new`` (item_id: items with too few
    training interactions for a learned embedding or an ALS factor, placed by their text alone)."""
    flagged = new.select("item_id", F.lit(True).alias("new_item"))
    return recs.join(flagged, on="item_id", how="left").select(
        *recs.columns, F.coalesce("new_item", F.lit(False)).alias("new_item")
    )


def sample(recs: DataFrame, items: DataFrame, users: int = 3, top: int = 5) -> list[dict]:
    """The first ``top`` ``users`` (by id) of ``recs`` with their items' text (``items``) and reason, for
    people to read."""
    first = recs.select("user_id").distinct().orderBy("user_id").limit(users)
    texts = items.select("item_id", "text")
    reasons = texts.select(F.col("item_id").alias("because_item_id"), F.col("text").alias("because_text"))
    rows = (
        recs.join(first, on="user_id", how="inner")
        .where(F.col("rank") <= top)
        .join(texts, on="item_id", how="left")
        .join(reasons, on="because_item_id", how="left")
        .orderBy("user_id", "rank")
        .collect()
    )
    return [
        {
            "user_id": r.user_id,
            "rank": r.rank,
            "item": f"{r.item_id}: {r.text}",
            "score": round(r.score, 4),
            "because": f"{r.because_item_id}: {r.because_text}" if r.because_item_id is not None else None,
            "because_similarity": round(r.because_similarity, 4) if r.because_similarity is not None else None,
            "new_item": r.new_item,
            **score_parts(r.similarity, r.popularity_boost, r.learned_similarity),
        }
        for r in rows
    ]


def score_parts(similarity: float, popularity_boost: float, learned_similarity: float | None) -> dict[str, float]:
    """Where a score came from, for people to read, from its ``similarity``, ``popularity_boost`` and
    ``learned_similarity``: the item's text, its learned embedding (trained
    towers: what users did with it), and its popularity in the user's segment."""
    parts = {"from_text": similarity, "from_popularity": popularity_boost}
    if learned_similarity is not None:
        parts = {
            "from_text": similarity - learned_similarity,
            "from_interactions": learned_similarity,
            "from_popularity": popularity_boost,
        }
    return {name: round(value, 4) for name, value in parts.items()}
