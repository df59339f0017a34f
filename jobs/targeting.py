"""Does targeting a segment pay? Held-out engagement with each segment's top items, members against everyone.

For each segment, its top items are the ones its portrait shows (``segment.distinctive_items`` on the
training rows: what its users engage with more than the whole population, at least
``segment.min_term_users`` of them). On the held-out rows, a user *responds* to a segment when they
interact with one of its top items. Targeting lift = (share of the segment's members who respond) /
(share of all evaluated users who respond to the same items): what a campaign aimed at the segment
gains over one sent to everyone. The same figures for random segments of the same sizes (users placed
by a seeded hash) say what lift comes from chance alone; it should be about 1.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from segrec.jobs.config import Segment
from segrec.jobs.segment import distinctive_items


def top_items(segments: DataFrame, train: DataFrame, settings: Segment) -> DataFrame:
    """(segment_id, item_id): each segment's ``top_items`` portrait items from the training rows."""
    total = segments.count()
    scored = distinctive_items(segments, train, settings.min_term_users, total, settings.min_lift)
    rank = F.row_number().over(Window.partitionBy("segment_id").orderBy(F.desc("score"), F.asc("item_id")))
    return scored.withColumn("_rank", rank).where(F.col("_rank") <= settings.top_items).select("segment_id", "item_id")


def random_segments(segments: DataFrame, seed: int) -> DataFrame:
    """(user_id, segment_id): users placed in segments by a seeded hash of their id, each segment
    drawn with the share of users the real one has (so sizes match in expectation)."""
    sizes = sorted((r["segment_id"], r["count"]) for r in segments.groupBy("segment_id").count().collect())
    total = sum(n for _, n in sizes)
    draw = F.pmod(F.xxhash64(F.col("user_id"), F.lit(seed)), F.lit(1_000_000)) / F.lit(1_000_000.0)
    placed, upper = None, 0
    for segment_id, n in sizes:
        upper += n
        placed = (F.when(draw < upper / total, F.lit(segment_id)) if placed is None
                  else placed.when(draw < upper / total, F.lit(segment_id)))
    return segments.select("user_id", placed.otherwise(F.lit(sizes[-1][0])).cast("int").alias("segment_id"))


def targeting_lift(segments: DataFrame, train: DataFrame, held: DataFrame, settings: Segment) -> dict:
    """Per segment (members with held-out rows, their response rate, everyone's, the lift) and the mean
    lift over the segments that have top items and responders."""
    evaluated = held.select("user_id").distinct()
    members = segments.join(evaluated, on="user_id", how="left_semi")
    n_users = members.count()
    top = top_items(segments, train, settings)
    responses = held.select("user_id", "item_id").distinct().join(top, on="item_id", how="inner") \
        .select("user_id", "segment_id").distinct()  # a user responding to segment s's items
    everyone = responses.join(members.select("user_id"), on="user_id", how="left_semi") \
        .groupBy("segment_id").agg(F.count("*").alias("responders"))
    own = responses.join(members.select("user_id", "segment_id"), on=["user_id", "segment_id"], how="inner") \
        .groupBy("segment_id").agg(F.count("*").alias("member_responders"))
    rows = (
        members.groupBy("segment_id").agg(F.count("*").alias("members"))
        .join(everyone, on="segment_id", how="left")
        .join(own, on="segment_id", how="left")
        .join(top.groupBy("segment_id").agg(F.count("*").alias("top_items")), on="segment_id", how="left")
        .orderBy("segment_id").collect()
    )
    table = []
    for r in rows:
        member_rate = (r["member_responders"] or 0) / r["members"]
        everyone_rate = (r["responders"] or 0) / n_users if n_users else 0.0
        table.append({"segment_id": int(r["segment_id"]), "members": int(r["members"]), "top_items": int(r["top_items"] or 0),
                      "member_rate": round(member_rate, 4), "everyone_rate": round(everyone_rate, 4),
                      "lift": round(member_rate / everyone_rate, 3) if everyone_rate > 0 else None})
    lifts = [row["lift"] for row in table if row["lift"] is not None]
    return {"segments": table, "mean_lift": round(sum(lifts) / len(lifts), 3) if lifts else None}


def targeting_report(segments: DataFrame, train: DataFrame, held: DataFrame, settings: Segment, seed: int) -> dict:
    """:func:`targeting_lift` of the segments, beside random segments of the same sizes in the same run."""
    return {"segments": targeting_lift(segments, train, held, settings),
            "random": targeting_lift(random_segments(segments, seed), train, held, settings)}
