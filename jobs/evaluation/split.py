"""Hold-out split for offline evaluation: per user, the last n interactions by time are held out.

Without timestamps the held-out interactions are chosen at random with a seed (a hash of the user,
the item and the seed, so the choice does not depend on partitioning). A user keeps at least one
training interaction: users with n or fewer interactions hold out all but one, and users with a single
interaction hold out nothing (they form the cold slice).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def holdout_split(interactions: DataFrame, n: int, seed: int = 42) -> tuple[DataFrame, DataFrame]:
    """(train, held_out), both with the columns of ``interactions``: the newest ``n`` rows of each user held
    out, never all of them (ties and rows without time ordered by a hash seeded with ``seed``); every row
    lands in exactly one."""
    random_order = F.xxhash64("user_id", "item_id", F.lit(seed))
    newest_first = Window.partitionBy("user_id").orderBy(
        F.col("timestamp").desc_nulls_last(), random_order, F.col("item_id").desc()
    )
    per_user = Window.partitionBy("user_id")
    ranked = interactions.withColumn("_recent", F.row_number().over(newest_first)).withColumn(
        "_count", F.count("*").over(per_user)
    )
    held = F.col("_recent") <= F.least(F.lit(n), F.col("_count") - 1)
    columns = interactions.columns
    return ranked.where(~held).select(*columns), ranked.where(held).select(*columns)
