"""Row counts of several DataFrames in one Spark job.

A stage that reconciles what went in with what came out needs a handful of counts. Taken one by one,
each is a job of its own, and on a small run the jobs' fixed cost is a visible part of the stage.
One aggregation over a union of the frames, tagged by name, answers all of them at once.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def row_counts(frames: dict[str, DataFrame]) -> dict[str, int]:
    """{name: rows} for every frame of ``frames`` (by name), 0 for an empty one, from a single job."""
    if not frames:
        return {}
    tagged = [frame.select(F.lit(name).alias("_frame")) for name, frame in frames.items()]
    union = tagged[0]
    for part in tagged[1:]:
        union = union.unionByName(part)
    found = {row["_frame"]: row["count"] for row in union.groupBy("_frame").count().collect()}
    return {name: int(found.get(name, 0)) for name in frames}
