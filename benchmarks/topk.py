"""Top-k throughput: the recommend stage against ALS, a SQL cross join, and the matrix-multiply floor.

    python benchmarks/topk.py                                   # quick: 5,000 users x 2,000 items x 384
    python benchmarks/topk.py --users 50000 --items 20000       # the issue's large size (skips the cross join)
    python benchmarks/topk.py --users 50000 --items 20000 --device cuda   # (a) on GPU 0, where there is one

Same user and item vectors, same k, one run, local[N]; (a) and (b) each run once as a warm-up (the
JVM compiles its hot paths over the first runs, and every Python worker starts and imports torch),
then are the best of --repeats timings; every run is printed, warm-up first (this machine's timings
vary by up to ~30% from one to the next):
  (a) this stage (broadcast plan, seen items masked), forced with Spark's no-op sink, each timing
      with a fresh catalogue broadcast and the seen-item join included; its three inputs (user vectors,
      item vectors, interactions) are read from parquet files, as `segrec run`'s recommend stage reads
      the previous stages' outputs (--inputs memory: from Spark's in-memory cache instead, from which
      the seen lists take about twice as long to build: benchmarks/topk_parts.py, part 4); with each
      recommendation's reason (recommend.explain, the default), and timed again without it, and again
      in two tasks per core (the default on a cluster; a local master's is one per core); with
      --learned-parts the items carry learned parts, as trained towers' do, and the explained run also
      computes each score's learned part;
  (b) Spark ML ALS recommendForAllUsers at the same rank (fitted with one iteration, untimed; only the
      recommendation is timed), forced the same way;
  (c) a plain Spark SQL cross join: dot product with zip_with/aggregate, then a window keeping the top k
      (only below --crossjoin-max pairs: it is far too slow beyond);
  (d) the floor: users x items x dims x 2 FLOPs at this machine's measured matrix-multiply rate (torch,
      all cores, or GPU 0 with --device cuda): at the float32 rate, and at the bfloat16 rate where (a)'s
      candidate pass runs in bfloat16 (CPUs with native bfloat16; --precision), the time no top-k
      computed from that product can beat. (a)'s lists are exact either way (float64 rescoring);
  (e) faiss (``pip install faiss-cpu``, the bench extra): an exact inner-product index (IndexFlatIP)
      over the same item vectors, searched for k + the most items any user has seen, the seen items
      then removed and k kept, in one process with --cores threads: index build, search and
      filtering timed, best of --repeats after a warm-up (numpy arrays in memory: no Spark, no reads
      or writes). Skipped when faiss is not installed, or with --device cuda.
  (f) the stage's data path alone: (a) with a scorer that returns nothing (the catalogue collected,
      broadcast and loaded by every worker, the user vectors read, the seen lists built and joined,
      every batch sent to the Python workers), best of --repeats after a warm-up: what Spark costs
      before any product, so (a) - (f) is what scoring adds, set against the floor (d).
Prints a table, then the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import pandas as pd
from common import local_spark, python_worker_peak_rss_mb, unit_rows


def matmul_gflops(dim: int, device: str = "cpu", dtype: str = "float32") -> float:
    """Measured GEMM rate (GFLOP/s), best of 20, of the faster of numpy's BLAS and torch (float32 on the
    CPU), or torch alone (bfloat16, GPU), with all cores."""
    import torch

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2048, dim)).astype(np.float32), rng.standard_normal((dim, 4096)).astype(np.float32)
    ta, tb = (torch.from_numpy(x).to(device).to(getattr(torch, dtype)) for x in (a, b))

    def product() -> None:
        ta @ tb
        if device != "cpu":
            torch.cuda.synchronize(device)

    product()  # warm-up
    best = min(_timed(product) for _ in range(20))
    if device == "cpu" and dtype == "float32":
        a @ b
        best = min(best, *(_timed(lambda: a @ b) for _ in range(20)))
    return 2 * 2048 * 4096 * dim / best / 1e9


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def best_of(repeats: int, timing) -> tuple[float, list[float]]:
    """The best of ``repeats`` timings after one warm-up run, and every timing (warm-up first)."""
    timings = [timing() for _ in range(repeats + 1)]
    return min(timings[1:]), timings


def parquet_copy(spark, df, path: str):
    """``df`` written to parquet at ``path`` and read back (not cached)."""
    df.write.mode("overwrite").parquet(path)
    return spark.read.parquet(path)


def force(df) -> float:
    """Seconds to compute every row of ``df`` (no output written)."""
    return _timed(lambda: df.write.format("noop").mode("overwrite").save())


def data_path(spark, user_vectors, item_vectors, interactions, settings):
    """(f): the broadcast plan's frame of users through mapInArrow, each worker loading the catalogue
    as the stage's scorer does, and returning no rows."""
    from segrec.jobs.recommendations.top_k import OUTPUT_SCHEMA, Recommender, scoring_tasks, user_frame
    from segrec.udfs.topk.catalogue import cached_catalogue

    recommender = Recommender(spark, item_vectors, interactions, None, settings)
    key, load = recommender.source
    users = user_frame(
        user_vectors, None, interactions, settings.exclude_seen, scoring_tasks(spark, settings.partitions)
    )

    def nothing(batches):
        cached_catalogue(key, load)
        for _ in batches:
            pass
        yield from ()

    return users.mapInArrow(nothing, OUTPUT_SCHEMA)


def faiss_topk(users: np.ndarray, items: np.ndarray, events: pd.DataFrame, k: int, threads: int) -> np.ndarray:
    """(users, k) item indices: IndexFlatIP's exact top k + max seen, seen items removed, k kept."""
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    depth = k + int(events.groupby("user").size().max())
    _, found = index.search(users, depth)
    n_items = len(items)
    seen_keys = np.sort(events["user"].to_numpy() * n_items + events["item"].to_numpy())
    keys = np.arange(len(users))[:, None] * n_items + found
    at = np.minimum(np.searchsorted(seen_keys, keys), len(seen_keys) - 1)
    drop = (seen_keys[at] == keys) | (found < 0)
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]  # unseen first, in faiss's order
    return np.take_along_axis(found, order, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seen", type=int, default=20, help="interactions per user (masked by (a))")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where (a) scores: cuda puts the products and the top-k on GPU 0",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="(a)'s candidate pass (recommend.precision); auto: bfloat16 on CPUs with native bfloat16",
    )
    parser.add_argument(
        "--inputs",
        choices=["parquet", "memory"],
        default="parquet",
        help="where (a) reads its inputs: parquet files (as the stage does), or Spark's cache",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timings of (a) and (b); the best is reported")
    parser.add_argument(
        "--learned-parts",
        action="store_true",
        help="items carry learned parts (trained towers): (a) with reasons also computes learned_similarity",
    )
    parser.add_argument("--crossjoin-max", type=float, default=2.5e7, help="largest users x items for (c)")
    args = parser.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda needs a CUDA GPU: torch.cuda.is_available() is False here")

    from pyspark.ml.recommendation import ALS
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from segrec.jobs.config import Recommend
    from segrec.jobs.recommendations.top_k import recommendations

    rng = np.random.default_rng(7)
    users, items = unit_rows(rng, args.users, args.dim), unit_rows(rng, args.items, args.dim)
    events = pd.DataFrame(
        {
            "user": np.repeat(np.arange(args.users), args.seen),
            "item": rng.integers(0, args.items, args.users * args.seen),
        }
    ).drop_duplicates()
    from segrec.udfs.topk.settings import candidate_precision

    device = "cuda:0" if args.device == "cuda" else "cpu"
    precision = candidate_precision(args.precision, device)
    # bfloat16 first: numpy's BLAS threads, which the float32 rate also times, keep spinning for a while
    # after their last product and took a core from the bfloat16 product timed next (one run measured
    # 812 GFLOP/s there, against 2,892 in the run before it, on the same machine).
    bfloat16 = matmul_gflops(args.dim, device, "bfloat16") if precision == "bfloat16" else None
    gflops = {"float32": matmul_gflops(args.dim, device)}
    if bfloat16 is not None:
        gflops["bfloat16"] = bfloat16

    spark = local_spark("topk-benchmark", args.cores, driver_memory="6g")
    user_df = (
        spark.createDataFrame(
            pd.DataFrame({"user_id": [f"u{i:07d}" for i in range(args.users)], "vector": list(users)}),
            "user_id string, vector array<float>",
        )
        .repartition(2 * args.cores)
        .cache()
    )
    item_frame = pd.DataFrame({"item_id": [f"i{i:07d}" for i in range(args.items)], "vector": list(items)})
    item_schema = "item_id string, vector array<float>"
    if args.learned_parts:  # as trained towers' vectors carry: a learned part per item (a fifth cold)
        parts = unit_rows(rng, args.items, args.dim) * 0.3
        item_frame["learned_part"] = [None if i % 5 == 0 else p for i, p in enumerate(parts)]
        item_schema += ", learned_part array<float>"
    item_df = spark.createDataFrame(item_frame, item_schema).cache()
    event_df = spark.createDataFrame(
        pd.DataFrame({"user_id": [f"u{u:07d}" for u in events.user], "item_id": [f"i{i:07d}" for i in events.item]})
    ).cache()
    user_df.count(), item_df.count(), event_df.count()
    stage_inputs, inputs_dir = (user_df, item_df, event_df), None
    if args.inputs == "parquet":
        inputs_dir = tempfile.mkdtemp(prefix="segrec-topk-")
        stage_inputs = tuple(
            parquet_copy(spark, df, os.path.join(inputs_dir, name))
            for name, df in (("user_vectors", user_df), ("item_vectors", item_df), ("interactions", event_df))
        )

    settings = Recommend(k=args.k, plan="broadcast", device=args.device, precision=args.precision)
    # Both sides alike: one full warm-up run, then the best of --repeats (the first runs in a JVM are
    # slower; every run is printed). Each run of (a) ships its own catalogue.
    ours, our_runs = best_of(args.repeats, lambda: force(recommendations(spark, *stage_inputs, None, settings)[0]))
    # the same stage without each recommendation's reason (recommend.explain, on by default)
    unexplained = settings.model_copy(update={"explain": False})
    plain, plain_runs = best_of(
        args.repeats, lambda: force(recommendations(spark, *stage_inputs, None, unexplained)[0])
    )
    # (a) in twice as many tasks, two per core: the default on a cluster (one per core on a local master)
    doubled = settings.model_copy(update={"partitions": 2 * spark.sparkContext.defaultParallelism})
    two_per_core, two_runs = best_of(
        args.repeats, lambda: force(recommendations(spark, *stage_inputs, None, doubled)[0])
    )
    worker_rss = python_worker_peak_rss_mb()
    path, path_runs = best_of(args.repeats, lambda: force(data_path(spark, *stage_inputs, settings)))

    ratings = spark.createDataFrame(events.assign(rating=1.0)).cache()
    als = ALS(
        rank=args.dim,
        maxIter=1,
        regParam=0.1,
        implicitPrefs=True,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        seed=7,
        coldStartStrategy="drop",
    )
    model = als.fit(ratings)
    model.userFactors.count(), model.itemFactors.count()
    als_seconds, als_runs = best_of(args.repeats, lambda: force(model.recommendForAllUsers(args.k)))

    pairs = args.users * args.items
    cross_seconds = None
    if pairs <= args.crossjoin_max:
        u = stage_inputs[0].select("user_id", F.col("vector").alias("u"))  # (a)'s inputs
        i = stage_inputs[1].select("item_id", F.col("vector").alias("v"))
        dot = F.aggregate(F.zip_with("u", "v", lambda x, y: x * y), F.lit(0.0), lambda acc, x: acc + x)
        scored = u.join(i, how="cross").select("user_id", "item_id", dot.alias("score"))
        ranked = scored.withColumn(
            "rank", F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("score"), "item_id"))
        ).where(F.col("rank") <= args.k)
        cross_seconds = force(ranked)
    spark.stop()
    if inputs_dir:
        shutil.rmtree(inputs_dir, ignore_errors=True)
    faiss_seconds = None
    try:
        import faiss  # noqa: F401
    except ImportError:
        print("(e) faiss skipped: pip install faiss-cpu (the bench extra)")
    else:
        if args.device == "cpu":
            faiss_seconds, faiss_runs = best_of(
                args.repeats, lambda: _timed(lambda: faiss_topk(users, items, events, args.k, args.cores))
            )

    floors = {dtype: pairs * args.dim * 2 / (rate * 1e9) for dtype, rate in gflops.items()}
    print(
        f"\ntop-{args.k}: {args.users} users x {args.items} items x {args.dim} dims, local[{args.cores}], "
        f"(a) and (b) best of {args.repeats}, (a)'s inputs from {args.inputs}"
    )
    print(f"{'side':<52}{'seconds':>10}")
    print(f"{'(a) segrec recommend (broadcast, ' + args.device + ', ' + precision + ' pass)':<52}{ours:>10.2f}")
    print(f"{'(a) without explanations (recommend.explain false)':<52}{plain:>10.2f}")
    two_side = f"(a) in two tasks per core (recommend.partitions {doubled.partitions})"
    print(f"{two_side:<52}{two_per_core:>10.2f}")
    print(f"{'(b) ALS recommendForAllUsers, rank ' + str(args.dim):<52}{als_seconds:>10.2f}")
    shown = f"{cross_seconds:>10.2f}" if cross_seconds is not None else f"{'skipped':>10}"
    print(f"{'(c) Spark SQL cross join + window':<52}{shown}")
    for dtype, rate in gflops.items():
        side = f"(d) floor: {dtype} matmul, {rate:.1f} GFLOP/s measured"
        print(f"{side:<52}{floors[dtype]:>10.2f}")
    if faiss_seconds is not None:
        print(f"{'(e) faiss IndexFlatIP, ' + str(args.cores) + ' threads, seen removed':<52}{faiss_seconds:>10.2f}")
    print(f"{'(f) the data path alone (no scoring)':<52}{path:>10.2f}")
    for side, runs in (
        ("(a)", our_runs),
        ("(a) no explain", plain_runs),
        ("(a) two per core", two_runs),
        ("(f)", path_runs),
        ("(b)", als_runs),
        *((("(e)", faiss_runs),) if faiss_seconds is not None else ()),
    ):
        print(f"{side} every run, s: warm-up {runs[0]:.2f}, then " + ", ".join(f"{t:.2f}" for t in runs[1:]))
    print(f"\npeak RSS of the largest Spark Python worker: {worker_rss:.0f} MB")
    print("\nratios (targets: (b)/(a) >= 10, (a)/(d) <= 2):")
    print(f"  ALS / ours          {als_seconds / ours:.1f}x")
    print(f"  explain on / off    {ours / plain:.2f}x (the cost of a reason beside every recommendation)")
    print(f"  two / one per core  {two_per_core / ours:.2f}x (what one task per core saves on a local master)")
    if faiss_seconds is not None:
        print(f"  faiss / ours        {faiss_seconds / ours:.2f}x (users/s: ours / faiss; target >= 1.0)")
    if cross_seconds is not None:
        print(f"  cross join / ours   {cross_seconds / ours:.1f}x")
    for dtype, floor in floors.items():
        print(f"  ours / {dtype} floor {ours / floor:.1f}x")
    print(f"  data path / ours    {path / ours:.2f} (the share of (a) spent before any scoring)")
    for dtype, floor in floors.items():
        print(f"  (ours - data path) / {dtype} floor {(ours - path) / floor:.1f}x (what scoring adds)")


if __name__ == "__main__":
    main()
