"""Does targeting a segment pay? Held-out engagement with each segment's top items, members against everyone.

For each segment, its top items are the ones its portrait shows (``segment.distinctive_items`` on the
training rows: what its users engage with more than the whole population, at least
``segment.min_term_users`` of them). A campaign offers each top item to the users who have not had it
yet: the (user, top item) pairs without a training interaction. A pair *responds* when the held-out
rows hold it. Targeting lift = (response rate of the members' pairs) / (response rate of every
evaluated user's pairs for the same items): what aiming the campaign at the segment gains over sending
it to everyone. (Counting users instead of pairs would punish a segment for having already consumed
its own top items, which a campaign would not offer again.) The same figures for random segments of
the same sizes (users placed by seeded hashes, several draws) say what lift comes from chance alone:
about 1.
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from segrec.jobs.config import Segment
from segrec.jobs.segments.portraits import distinctive_items


def top_items(segments: DataFrame, train: DataFrame, settings: Segment) -> DataFrame:
    """(segment_id, item_id): each of ``segments``' ``settings.top_items`` portrait items from the ``train`` rows."""
    total = segments.count()
    scored = distinctive_items(segments, train, settings.min_term_users, total, settings.min_lift)
    rank = F.row_number().over(Window.partitionBy("segment_id").orderBy(F.desc("score"), F.asc("item_id")))
    return scored.withColumn("_rank", rank).where(F.col("_rank") <= settings.top_items).select("segment_id", "item_id")


def random_segments(segments: DataFrame, seed: int) -> DataFrame:
    """(user_id, segment_id): users placed in segments by a hash of their id seeded with ``seed``, each segment
    drawn with the share of users the real one has (so sizes match in expectation)."""
    sizes = sorted((r["segment_id"], r["count"]) for r in segments.groupBy("segment_id").count().collect())
    total = sum(n for _, n in sizes)
    draw = F.pmod(F.xxhash64(F.col("user_id"), F.lit(seed)), F.lit(1_000_000)) / F.lit(1_000_000.0)
    bounds = np.cumsum([n for _, n in sizes]) / total
    placed = F.when(draw < float(bounds[0]), F.lit(sizes[0][0]))
    for (segment_id, _), upper in zip(sizes[1:], bounds[1:], strict=True):
        placed = placed.when(draw < float(upper), F.lit(segment_id))
    return segments.select("user_id", placed.otherwise(F.lit(sizes[-1][0])).cast("int").alias("segment_id"))


def targeting_lift(segments: DataFrame, train: DataFrame, held: DataFrame, settings: Segment) -> dict:
    """Per segment (top items from ``train`` under ``settings``): members with held-out rows, top items, the
    response rate of the members' open
    (user, top item) pairs and of everyone's, and the lift; with the mean lift over the segments
    that have top items. Pairs are counted, never listed: open pairs = users x items - pairs seen in
    training, so the cost does not grow with users x items."""
    evaluated = held.select("user_id").distinct()
    members = segments.join(evaluated, on="user_id", how="left_semi").select("user_id", "segment_id")
    n_users = members.count()
    top = top_items(segments, train, settings)
    seen = train.select("user_id", "item_id").distinct().join(members, on="user_id", how="left_semi")
    responded = held.select("user_id", "item_id").distinct().join(seen, on=["user_id", "item_id"], how="left_anti")

    def count(pairs: DataFrame, name: str) -> tuple[DataFrame, DataFrame]:
        """(segment_id, name) over every evaluated user, and over the segment's own members."""
        per_item = pairs.join(top, on="item_id", how="inner")
        everyone = per_item.groupBy("segment_id").agg(F.count("*").alias(f"{name}_all"))
        own = (
            per_item.join(members, on=["user_id", "segment_id"], how="inner")
            .groupBy("segment_id")
            .agg(F.count("*").alias(f"{name}_members"))
        )
        return everyone, own

    frames = [*count(seen, "seen"), *count(responded, "responses")]
    table = (
        members.groupBy("segment_id")
        .agg(F.count("*").alias("members"))
        .join(top.groupBy("segment_id").agg(F.count("*").alias("top_items")), on="segment_id", how="left")
    )
    for frame in frames:
        table = table.join(frame, on="segment_id", how="left")
    rows = []
    for r in table.orderBy("segment_id").collect():
        items = r["top_items"] or 0
        open_members = r["members"] * items - (r["seen_members"] or 0)
        open_all = n_users * items - (r["seen_all"] or 0)
        member_rate = (r["responses_members"] or 0) / open_members if open_members else 0.0
        everyone_rate = (r["responses_all"] or 0) / open_all if open_all else 0.0
        rows.append(
            {
                "segment_id": int(r["segment_id"]),
                "members": int(r["members"]),
                "top_items": int(items),
                "member_rate": round(member_rate, 5),
                "everyone_rate": round(everyone_rate, 5),
                "lift": round(member_rate / everyone_rate, 3) if everyone_rate > 0 else None,
            }
        )
    lifts = [row["lift"] for row in rows if row["lift"] is not None]
    return {"segments": rows, "mean_lift": round(sum(lifts) / len(lifts), 3) if lifts else None}


def targeting_report(
    segments: DataFrame, train: DataFrame, held: DataFrame, settings: Segment, seed: int, draws: int = 5
) -> dict:
    """:func:`targeting_lift` of the segments (``train``, ``held``, ``settings``), beside ``draws`` random
    placements (seeded from ``seed``) of the same sizes in
    the same run: a single draw's mean lift swings by a few tenths on a thousand users, so the chance
    level is the mean over the draws (each draw's lift is kept; ``segments`` holds the first's)."""
    chance = [targeting_lift(random_segments(segments, seed + i), train, held, settings) for i in range(draws)]
    lifts = [draw["mean_lift"] for draw in chance if draw["mean_lift"] is not None]
    return {
        "segments": targeting_lift(segments, train, held, settings),
        "random": {
            "segments": chance[0]["segments"],
            "draws": lifts,
            "mean_lift": round(sum(lifts) / len(lifts), 3) if lifts else None,
        },
    }
