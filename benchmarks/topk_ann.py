"""Approximate top-k (recommend.search: ivf) against the exact stage as the catalogue grows: users/s and recall@k.

    .venv/bin/python benchmarks/topk_ann.py                      # 16K, 256K and 1M items, dim 64 and 128 (~30 min)
    .venv/bin/python benchmarks/topk_ann.py --items 16384 65536 --dims 64 --users 5000   # a quick look
    .venv/bin/python benchmarks/topk_ann.py --items 1048576 --dims 64 --users 100000 --explain  # reasons on

Per catalogue size and dimension, one local Spark application, the same inputs read from parquet as the
recommend stage reads them (user vectors, item vectors, 20 seen items per user):
  (a) the recommend stage with ``search: exact`` (broadcast plan, the default CPU pass);
  (b) the same stage with ``search: ivf`` and ``min_recall`` 0.95: the IVF index built on the driver,
      its probes chosen on the stage's own sample of 1,000 users (exact lists against IVF lists, on the
      driver), then every user scored on the workers.
Both write their lists to parquet (the same cost on both sides). The timings of (b) are split into the
index build, the probe choice and the scoring, because a nightly job over many users pays the first two
once per catalogue and the third per user; users/s is users over the scoring, and over the whole stage.
recall@k is (b)'s lists against (a)'s over every user, not only the stage's sample. One warm-up of both
on a catalogue of at most 16K items runs first (the JVM's and the workers' first runs are slower).

The vectors are synthetic unit vectors, so the structure an IVF index relies on is set by hand:
``--spread`` (default 1.0) is the noise around each of n/256 Gaussian cluster centres, relative to the
centres' own norm, for items and users alike (users near the clusters they like). ``--spread 0``
draws uniform random unit vectors instead: no structure at all, the worst case of any IVF index, where
reaching the recall needs most lists. Trained towers' and sentence embeddings are clustered; how much is
a property of the data, so the table states what the spread was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import local_spark, peak_rss_mb, python_worker_peak_rss_mb, reset_peaks, worker_pids


def vectors(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray | None, spread: float) -> np.ndarray:
    """``n`` float32 unit rows of ``dim`` values: around random ``centres`` with noise ``spread`` times the
    centres' norm, or uniform on the sphere when ``centres`` is None."""
    rows = rng.standard_normal((n, dim), dtype=np.float32)
    if centres is not None:
        rows = centres[rng.integers(0, len(centres), n)] + spread * rows / np.sqrt(dim)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def write_inputs(root: str, n_users: int, n_items: int, dim: int, seen: int, spread: float, seed: int) -> None:
    """user_vectors, item_vectors and interactions as parquet under ``root``, written with pyarrow."""
    rng = np.random.default_rng(seed)
    centres = None
    if spread > 0:  # centres of norm about 1, as the noise's
        centres = rng.standard_normal((max(64, n_items // 256), dim), dtype=np.float32) / np.sqrt(dim)
    items, users = vectors(rng, n_items, dim, centres, spread), vectors(rng, n_users, dim, centres, spread)
    item_ids = pa.array([f"i{i:08d}" for i in range(n_items)])
    user_ids = pa.array([f"u{u:08d}" for u in range(n_users)])

    def table(ids: pa.Array, id_name: str, rows: np.ndarray) -> pa.Table:
        flat = pa.array(rows.reshape(-1), pa.float32())
        offsets = pa.array(np.arange(0, rows.size + 1, dim, dtype=np.int32))
        return pa.table({id_name: ids, "vector": pa.ListArray.from_arrays(offsets, flat)})

    pq.write_table(table(user_ids, "user_id", users), f"{root}/user_vectors.parquet")
    pq.write_table(table(item_ids, "item_id", items), f"{root}/item_vectors.parquet")
    owners = np.repeat(np.arange(n_users), seen)
    picks = rng.integers(0, n_items, n_users * seen)
    events = pa.table({"user_id": user_ids.take(pa.array(owners)), "item_id": item_ids.take(pa.array(picks))})
    pq.write_table(events, f"{root}/interactions.parquet")


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def run_side(spark, inputs, settings, out: str) -> dict:
    """One recommend stage over ``inputs`` with ``settings``, its lists written to ``out``: seconds in
    total and per part, the stage's figures and the peak RSS of the Python workers and driver."""
    from segrec.jobs.config import executor_settings
    from segrec.jobs.recommendations.top_k import Recommender
    from segrec.udfs.topk.settings import TopKSettings

    reset_peaks(worker_pids() + [os.getpid()])
    topk = executor_settings(TopKSettings, settings)
    started = time.perf_counter()
    recommender, build = timed(lambda: Recommender(spark, inputs[1], inputs[2], None, settings))
    choose = 0.0
    if recommender.search == "ivf":
        _, choose = timed(lambda: recommender.calibrated(inputs[0], topk))
    recs = recommender.recommend(inputs[0], topk)
    _, score = timed(lambda: recs.write.mode("overwrite").parquet(out))
    return {
        "total": time.perf_counter() - started,
        "build": build,
        "choose": choose,
        "score": score,
        "figures": recommender.figures,
        "worker_mb": python_worker_peak_rss_mb(),
        "driver_mb": peak_rss_mb([os.getpid()]),
    }


def recall(spark, exact: str, approximate: str) -> float:
    """Mean over users of the share of their exact list's items that the approximate list holds."""
    from pyspark.sql import functions as F

    truth = spark.read.parquet(exact).select("user_id", "item_id")
    found = spark.read.parquet(approximate).select("user_id", "item_id", F.lit(1).alias("hit"))
    per_user = (
        truth.join(found, on=["user_id", "item_id"], how="left")
        .groupBy("user_id")
        .agg((F.sum(F.coalesce("hit", F.lit(0))) / F.count("*")).alias("recall"))
    )
    return float(per_user.agg(F.avg("recall")).collect()[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[16384, 262144, 1048576])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seen", type=int, default=20, help="interactions per user")
    parser.add_argument("--spread", type=float, default=1.0, help="noise around the cluster centres; 0: uniform")
    parser.add_argument("--min-recall", type=float, default=0.95)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--explain", action="store_true", help="reasons on, on both sides (recommend.explain)")
    args = parser.parse_args()

    from segrec.jobs.config import Recommend

    spark = local_spark("topk-ann-benchmark", args.cores, driver_memory="8g")
    root = tempfile.mkdtemp(prefix="segrec-ann-")
    exact_settings = Recommend(k=args.k, plan="broadcast", search="exact", explain=args.explain)
    ivf_settings = exact_settings.model_copy(update={"search": "ivf", "min_recall": args.min_recall})
    rows = []
    try:
        sizes = [(dim, n) for dim in args.dims for n in args.items]
        warm_up_size = (min(args.dims), min(16384, min(args.items)))
        for warm_up, (dim, n) in [(True, warm_up_size)] + [(False, s) for s in sizes]:
            data = f"{root}/in-{dim}-{n}"
            os.makedirs(data, exist_ok=True)
            if not os.path.exists(f"{data}/item_vectors.parquet"):
                write_inputs(data, args.users, n, dim, args.seen, args.spread, seed=n + dim)
            names = ("user_vectors", "item_vectors", "interactions")
            inputs = tuple(spark.read.parquet(f"{data}/{name}.parquet") for name in names)
            exact = run_side(spark, inputs, exact_settings, f"{root}/exact")
            approximate = run_side(spark, inputs, ivf_settings, f"{root}/ivf")
            if warm_up:
                continue
            got = recall(spark, f"{root}/exact", f"{root}/ivf")
            rows.append((dim, n, exact, approximate, got))
            print(
                f"dim {dim} items {n}: exact {exact['total']:.1f} s, ivf {approximate['total']:.1f} s "
                f"(build {approximate['build']:.1f}, probes {approximate['choose']:.1f}, "
                f"score {approximate['score']:.1f}), "
                f"recall@{args.k} {got:.4f}, {approximate['figures']}",
                flush=True,
            )
    finally:
        spark.stop()
        shutil.rmtree(root, ignore_errors=True)

    spread = f"clusters of n/256 items, spread {args.spread:g}" if args.spread > 0 else "uniform random vectors"
    reasons = "reasons on" if args.explain else "reasons off"
    print(f"\ntop-{args.k} of {args.users} users, {args.seen} seen each, local[{args.cores}], {spread}, {reasons}")
    head = (
        f"{'dim':>4} {'items':>8} {'exact s':>8} {'exact u/s':>9} {'ivf s':>7} {'build':>6} {'probes':>7} "
        f"{'score':>6} {'lists':>6} {'probes':>6} {'recall':>7} {'ivf u/s':>8} {'u/s x':>6} {'stage x':>7} "
        f"{'wkr MB e/i':>11} {'drv MB e/i':>11}"
    )
    print(head)
    for dim, n, exact, approximate, got in rows:
        figures = approximate["figures"]
        scoring_rate = args.users / approximate["score"]
        exact_rate = args.users / exact["total"]
        print(
            f"{dim:>4} {n:>8} {exact['total']:>8.1f} {exact_rate:>9.0f} {approximate['total']:>7.1f} "
            f"{approximate['build']:>6.1f} {approximate['choose']:>7.1f} {approximate['score']:>6.1f} "
            f"{figures.get('ivf_lists', '-'):>6} {figures.get('ivf_probes', '-'):>6} {got:>7.4f} "
            f"{scoring_rate:>8.0f} {scoring_rate / exact_rate:>6.1f} {exact['total'] / approximate['total']:>7.1f} "
            f"{exact['worker_mb']:>5.0f}/{approximate['worker_mb']:<5.0f} "
            f"{exact['driver_mb']:>5.0f}/{approximate['driver_mb']:<5.0f}"
        )
    print(
        f"\nu/s x: the IVF stage's users/s over its scoring against the exact stage's over the whole stage "
        f"(target >= 20 at recall@{args.k} >= {args.min_recall:g}); stage x: whole stage over whole stage, "
        "index build and probe choice included (paid once per catalogue by a job over many more users)"
    )


if __name__ == "__main__":
    main()
