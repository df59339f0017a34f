"""How much one interaction says about a user's taste: the feedback weight, shared by profile and train.

- explicit ratings: the rating centred on the user's own mean and scaled by the user's largest
  deviation, plus one: ``1 + (rating - mean) / max|rating - mean|``, in [0, 2]. Favourites weigh up to
  2, the least liked down to 0; a user whose ratings are all equal weighs every item 1. (Plain centred
  weights were measured and rejected: on short histories they give liked-but-below-mean items negative
  weight, and the planted personas then cluster at ARI 0.72 instead of 1.0.)
- implicit feedback (counts, plays, minutes): ``log(1 + count)`` (``implicit_weight: log1p``), or 1 for
  any interaction (``binary``).

A null rating weighs 1; a weight that is not finite (ratings so large that their mean overflows) weighs
1 too, so no NaN reaches a vector.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F


def finite_or(value: Column, default: float) -> Column:
    """``value``, or ``default`` where it is null, NaN or infinite."""
    bad = value.isNull() | F.isnan(value) | (F.abs(value) == float("inf"))
    return F.when(bad, F.lit(default)).otherwise(value)


def with_feedback_weight(
    interactions: DataFrame, feedback: str = "explicit", implicit_weight: str = "log1p"
) -> DataFrame:
    """``interactions`` plus a ``weight`` column for ``feedback`` explicit or implicit (``implicit_weight``;
    see the module docstring)."""
    if feedback == "implicit":
        if implicit_weight == "binary":
            return interactions.withColumn("weight", F.lit(1.0))
        count = F.greatest(F.col("rating").cast("double"), F.lit(0.0))
        weight = F.when(F.col("rating").isNull(), F.lit(1.0)).otherwise(F.log1p(count))
        return interactions.withColumn("weight", finite_or(weight, 1.0))
    by_user = Window.partitionBy("user_id")
    df = interactions.withColumn("_centred", F.col("rating") - F.avg("rating").over(by_user))
    df = df.withColumn("_spread", F.max(F.abs("_centred")).over(by_user))
    weight = F.when(F.col("rating").isNull() | (F.col("_spread") < 1e-9), F.lit(1.0)).otherwise(
        1.0 + F.col("_centred") / F.col("_spread")
    )
    return df.withColumn("weight", finite_or(weight, 1.0)).drop("_centred", "_spread")
