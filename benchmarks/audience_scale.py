"""Audiences at scale: the audience stage's scorer against Spark ML ALS ``recommendForItemSubset``.

    python benchmarks/audience_scale.py                                  # quick: 100,000 users x 100 requests
    python benchmarks/audience_scale.py --users 1000000 --requests 500   # the issue's size

Same users, same requests, one run, local[--cores]. Users' unit vectors are generated on executors and
written to parquet first, so both sides read materialised data:
  (a) segrec: ``jobs.audiences.scoring.candidates`` (every user scored against every request's target
      vector in mapInPandas, each partition keeping its best --size per request, a window merging the
      partial results), forced with Spark's no-op sink; nothing that grows with users is collected;
  (b) ALS: a model fitted untimed on --als-interactions random interactions per user at rank --dim,
      then ``recommendForItemSubset`` for --requests items with --size users each, forced the same way.
Each side runs once as a warm-up, then the best of --repeats. Prints users x requests per second for
each and the ratio (a) / (b).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import pandas as pd
from common import local_spark, unit_rows


def best_of(fn, repeats: int) -> tuple[float, list[float]]:
    """The best of ``repeats`` timings of ``fn`` after one warm-up run; every timing, warm-up first."""
    runs = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return min(runs[1:]), runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--size", type=int, default=1000, help="users per audience")
    parser.add_argument("--als-interactions", type=int, default=5, help="per user, for the ALS fit")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    from segrec.jobs.audiences.scoring import Targets, candidates

    spark = local_spark("audience-scale", args.cores, driver_memory="8g")
    folder = tempfile.mkdtemp(prefix="segrec-audience-bench-")
    dim, seed = args.dim, args.seed

    @F.pandas_udf("array<float>")  # type: ignore[call-overload]
    def vector_of(ids: pd.Series) -> pd.Series:
        rows = [np.random.default_rng([seed, int(i)]).standard_normal(dim).astype(np.float32) for i in ids]
        return pd.Series([row / np.linalg.norm(row) for row in rows])

    users_path = f"{folder}/users"
    (
        spark.range(args.users, numPartitions=args.cores * 2)
        .select(F.format_string("u%09d", "id").alias("user_id"), vector_of("id").alias("vector"))
        .write.parquet(users_path)
    )
    users = spark.read.parquet(users_path)
    rng = np.random.default_rng(seed)
    targets = Targets(
        [f"r{i:04d}" for i in range(args.requests)],
        unit_rows(rng, args.requests, dim),
        [args.size] * args.requests,
        [None] * args.requests,
    )

    def ours() -> None:
        candidates(users, None, targets).write.format("noop").mode("overwrite").save()

    items = args.requests * 4
    interactions = spark.range(args.users * args.als_interactions, numPartitions=args.cores * 2).select(
        (F.col("id") % args.users).cast("int").alias("u"),
        (F.abs(F.xxhash64("id", F.lit(seed))) % items).cast("int").alias("i"),
        F.lit(1.0).alias("r"),
    )
    interactions.write.parquet(f"{folder}/interactions")
    fitted = time.perf_counter()
    model = ALS(rank=dim, maxIter=1, implicitPrefs=True, userCol="u", itemCol="i", ratingCol="r", seed=seed).fit(
        spark.read.parquet(f"{folder}/interactions")
    )
    fit_seconds = time.perf_counter() - fitted
    subset = spark.range(args.requests).select(F.col("id").cast("int").alias("i"))

    def als() -> None:
        model.recommendForItemSubset(subset, args.size).write.format("noop").mode("overwrite").save()

    ours_best, ours_runs = best_of(ours, args.repeats)
    als_best, als_runs = best_of(als, args.repeats)
    pairs = args.users * args.requests
    print(f"machine: {platform.processor() or platform.machine()}, local[{args.cores}]")
    print(f"users {args.users:,} x requests {args.requests} x dim {dim}, audience size {args.size}")
    for label, best, runs in (
        ("(a) segrec audience scorer", ours_best, ours_runs),
        ("(b) ALS recommendForItemSubset", als_best, als_runs),
    ):
        shown = ", ".join(f"{r:.2f}" for r in runs)
        print(f"{label:32s} {best:8.2f} s  {pairs / best:14,.0f} users x requests / s  (runs {shown})")
    print(f"ALS fit (untimed above): {fit_seconds:.1f} s")
    print(f"ratio (a) / (b) in users x requests per second: {als_best / ours_best:.2f}x")
    spark.stop()


if __name__ == "__main__":
    main()
