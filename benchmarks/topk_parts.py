"""Pieces of the recommend stage against the code they replaced, each ratio measured in this run:

    python benchmarks/topk_parts.py                  # 20,000 items x 384, blocks as the stage cuts them, k = 10
    python benchmarks/topk_parts.py --skip-spark     # only the in-process parts (no Spark)

1. candidate selection per block of fast scores (one torch thread, as in a Spark worker): torch.topk
   over every column against best_fast_scores (group maxima, then np.argpartition over the best
   groups) at group sizes 8, 16 and 32, in bfloat16 and float32, on the scores of random unit vectors;
   then the group maxima searched directly (np.argpartition over every one) against through groups
   of 4, 8 and 16 again (MAXIMA_GROUP); then the bfloat16 products of 64 blocks with the catalogue held
   as rows (n, d) against held as contiguous columns (d, n);
2. seen-item pairs deduplicated with np.unique against SeenItems.from_pairs (np.sort + diff), for
   10,000 users x 20 items;
3. the broadcast plan's batch format: the stage's user frame (vectors, seen ids) through mapInPandas
   against mapInArrow, each with an identity-like function returning k rows per user (the conversion
   cost alone, no scoring), local[2], best of --repeats;
4. the seen-item lists (the stage's collect_set per user over the interactions) with the interactions
   read from Spark's in-memory cache against read from parquet (benchmarks/topk.py's --inputs);
5. three pieces of a block's scoring on one thread, each against the code it replaced: the bfloat16
   group maxima as int16 keys (bfloat16_group_keys) against a bfloat16 amax; the bfloat16 products and
   group maxima of 12,416 users in blocks sized for 6 bytes per score against 12 (block_rows); the exact
   pass gathering EXACT_USERS users' candidates at a time against the whole block's at once.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import pandas as pd
import torch
from common import best_seconds, local_spark, unit_rows  # (also puts the repository on sys.path)

from segrec.udfs.topk import exact as topk
from segrec.udfs.topk.catalogue import Catalogue, SeenItems


def selection(items: int, dim: int, rows: int, k: int, repeats: int) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    users, vectors = unit_rows(rng, rows, dim), unit_rows(rng, items, dim)
    count = topk.candidate_count(k, items) + 1
    print(f"\n1. selection of {count} of {items} scores per user, blocks of {rows} users, 1 thread (ms per block)")
    print(f"{'dtype':<10}{'torch.topk':>12}{'group':>7}{'grouped':>10}{'topk / grouped':>16}")
    default = topk.GROUP
    for dtype in (torch.bfloat16, torch.float32):
        scores = (torch.from_numpy(users) @ torch.from_numpy(vectors).T).to(dtype)
        plain = best_seconds(lambda scores=scores: torch.topk(scores, count, dim=1, sorted=True), repeats)
        for group in (8, 16, 32):
            topk.GROUP = group
            expected = torch.topk(scores, count, dim=1).values.float().numpy()
            assert np.array_equal(topk.best_fast_scores(scores, count)[0], expected)
            grouped = best_seconds(lambda scores=scores: topk.best_fast_scores(scores, count), repeats)
            name = str(dtype).split(".")[1]
            print(f"{name:<10}{plain * 1e3:>12.2f}{group:>7}{grouped * 1e3:>10.2f}{plain / grouped:>15.1f}x")
        topk.GROUP = default
        # The second level: the group maxima searched through groups again (MAXIMA_GROUP), or not.
        second = topk.MAXIMA_GROUP
        timings = {}
        for group in (None, 4, 8, 16):
            topk.MAXIMA_GROUP = group or items  # as wide as the row: np.argpartition over every maximum
            assert np.array_equal(topk.best_fast_scores(scores, count)[0], expected)
            timings[group] = best_seconds(lambda scores=scores: topk.best_fast_scores(scores, count), repeats)
        topk.MAXIMA_GROUP = second
        print(
            f"{'':<10}maxima (group {default}) searched directly {timings[None] * 1e3:.2f} ms; through groups of "
            + ", ".join(f"{g}: {t * 1e3:.2f} ms ({timings[None] / t:.2f}x)" for g, t in timings.items() if g)
        )
    # The bfloat16 products of a task's 64 blocks, one after another as a worker computes them, against
    # the catalogue's bfloat16 copy (a worker caches it): held as rows (n, d) and multiplied through its
    # transposed view, or held as contiguous columns (d, n), as fast_similarities holds it.
    blocks = torch.from_numpy(unit_rows(rng, 64 * rows, dim)).bfloat16().split(rows)
    catalogue = torch.from_numpy(vectors).bfloat16()
    columns = catalogue.T.contiguous()

    def products(catalogue_as) -> None:
        for b in blocks:
            b @ catalogue_as  # each block's scores freed before the next, as in the worker

    as_rows = best_seconds(lambda: products(catalogue.T), repeats)
    as_columns = best_seconds(lambda: products(columns), repeats)
    print(
        f"the bfloat16 products of 64 such blocks: catalogue as rows (n, d) {as_rows * 1e3:.1f} ms, "
        f"as columns (d, n) {as_columns * 1e3:.1f} ms: {as_rows / as_columns:.2f}x"
    )


def deduplication(items: int, repeats: int) -> None:
    rng = np.random.default_rng(1)
    rows = np.repeat(np.arange(10_000), 20)
    positions = rng.integers(0, items, len(rows))
    unique = best_seconds(lambda: np.unique(rows * items + positions), repeats)
    pairs = best_seconds(lambda: SeenItems.from_pairs(rows, positions), repeats)
    print(
        f"\n2. deduplicating {len(rows)} seen pairs: np.unique {unique * 1e3:.2f} ms, "
        f"SeenItems.from_pairs {pairs * 1e3:.2f} ms: {unique / pairs:.1f}x"
    )


def batch_format(users: int, items: int, dim: int, k: int, repeats: int) -> None:
    import pyarrow as pa
    from pyspark.sql import functions as F

    from segrec.jobs.recommendations.top_k import user_frame

    rng = np.random.default_rng(2)
    spark = local_spark("topk-parts", 2, driver_memory="4g")
    user_df = spark.createDataFrame(
        pd.DataFrame({"user_id": [f"u{i:07d}" for i in range(users)], "vector": list(unit_rows(rng, users, dim))}),
        "user_id string, vector array<float>",
    )
    events = spark.createDataFrame(
        pd.DataFrame(
            {
                "user_id": [f"u{u:07d}" for u in np.repeat(np.arange(users), 20)],
                "item_id": [f"i{i:07d}" for i in rng.integers(0, items, users * 20)],
            }
        )
    )
    events.cache().count()
    frame = user_frame(user_df, None, events, exclude_seen=True, partitions=4).cache()
    frame.count()
    schema = "user_id string, rank int, item_id string, score double"

    def with_pandas(batches):
        for b in batches:
            n, ids = len(b), b["user_id"].to_numpy()
            np.stack(b["vector"].to_numpy())
            np.concatenate([s for s in b["seen"] if s is not None])
            yield pd.DataFrame(
                {
                    "user_id": np.repeat(ids, k),
                    "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
                    "item_id": np.repeat(ids, k),
                    "score": np.zeros(n * k),
                }
            )

    def with_arrow(batches):
        for b in batches:
            n, ids = b.num_rows, b.column("user_id").to_numpy(zero_copy_only=False)
            b.column("vector").flatten().to_numpy().reshape(n, -1)
            b.column("seen").flatten().to_numpy(zero_copy_only=False)
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(np.repeat(ids, k)),
                    pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), n)),
                    pa.array(np.repeat(ids, k)),
                    pa.array(np.zeros(n * k)),
                ],
                names=["user_id", "rank", "item_id", "score"],
            )

    def force(df):
        return lambda: df.write.format("noop").mode("overwrite").save()

    as_pandas = best_seconds(force(frame.mapInPandas(with_pandas, schema)), repeats)
    as_arrow = best_seconds(force(frame.mapInArrow(with_arrow, schema)), repeats)
    print(f"\n3. {users} users x {dim} dims with seen ids, k = {k} rows out, local[2], best of {repeats}:")
    print(
        f"   mapInPandas {as_pandas:.3f} s, mapInArrow {as_arrow:.3f} s: {as_pandas / as_arrow:.2f}x "
        f"({as_pandas - as_arrow:.3f} s saved)"
    )

    with tempfile.TemporaryDirectory(prefix="segrec-parts-") as folder:
        events.write.parquet(f"{folder}/interactions")
        from_parquet = spark.read.parquet(f"{folder}/interactions")

        def seen_lists(df):
            return force(df.groupBy("user_id").agg(F.collect_set("item_id").alias("seen")))

        cached = best_seconds(seen_lists(events), repeats)
        parquet = best_seconds(seen_lists(from_parquet), repeats)
    spark.stop()
    print(f"\n4. seen lists of {users} users from {users * 20} interactions, local[2], best of {repeats}:")
    print(f"   from Spark's cache {cached:.3f} s, from parquet {parquet:.3f} s: {cached / parquet:.2f}x")


def scoring(items: int, dim: int, k: int, repeats: int) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    vectors, count = unit_rows(rng, items, dim), topk.candidate_count(k, items) + 1
    catalogue = Catalogue(item_ids=np.arange(items).astype(str), vectors=vectors)
    columns = topk.bfloat16_columns(catalogue, "cpu")  # the worker's copy, as fast_similarities holds it
    # blocks as the stage sized them before (12 bytes per score) and sizes them now without a boost (6)
    old_rows, new_rows = (
        topk.block_rows(items, 64.0, k, dim, topk.bytes_per_score("bfloat16", boost)) for boost in (True, False)
    )
    users = unit_rows(rng, 64 * old_rows, dim)
    w = items // topk.GROUP
    print(f"\n5. a block's scoring, 1 thread, {items} items x {dim}, k = {k} (ms)")

    def grouped(scores):
        return scores[:, : topk.GROUP * w].unflatten(1, (topk.GROUP, w))

    scores = torch.from_numpy(users[:new_rows]).bfloat16() @ columns
    as_bfloat16 = best_seconds(lambda: grouped(scores).amax(dim=1).float().numpy(), repeats)
    as_keys = best_seconds(lambda: topk.bfloat16_group_keys(grouped(scores), count), repeats)
    print(
        f"   group maxima of {new_rows} users: bfloat16 amax {as_bfloat16 * 1e3:.2f}, int16 keys "
        f"{as_keys * 1e3:.2f}: {as_bfloat16 / as_keys:.2f}x"
    )

    def products(rows):
        for start in range(0, len(users), rows):
            topk.bfloat16_group_keys(grouped(torch.from_numpy(users[start : start + rows]).bfloat16() @ columns), count)

    old_blocks, new_blocks = (best_seconds(lambda r=r: products(r), repeats) for r in (old_rows, new_rows))
    print(
        f"   products and group maxima of {len(users)} users: blocks of {old_rows} (12 bytes per score) "
        f"{old_blocks * 1e3:.1f}, of {new_rows} (6 bytes) {new_blocks * 1e3:.1f}: {old_blocks / new_blocks:.2f}x"
    )
    candidates = rng.integers(0, items, (new_rows, count - 1))
    segments = np.full(new_rows, -1)

    def exact():
        return topk.exact_scores(users[:new_rows], candidates, segments, catalogue, "cpu", 0.0)[0]

    chunk = topk.EXACT_USERS
    chunked = best_seconds(exact, repeats)
    topk.EXACT_USERS = new_rows  # the whole block in one gather, as before
    whole, at_once = best_seconds(exact, repeats), exact()
    topk.EXACT_USERS = chunk
    assert np.array_equal(at_once, exact())  # the same sums either way
    print(
        f"   exact pass of {new_rows} users x {count - 1} candidates: one gather {whole * 1e3:.2f}, "
        f"{chunk} users at a time {chunked * 1e3:.2f}: {whole / chunked:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument(
        "--block", type=int, help="users per block in part 1 (default: the stage's for a bfloat16 pass at block_mb 64)"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--users", type=int, default=50_000, help="users through Spark in part 3")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-spark", action="store_true")
    args = parser.parse_args()
    block = args.block or topk.block_rows(args.items, 64.0, args.k, args.dim, topk.bytes_per_score("bfloat16", False))
    selection(args.items, args.dim, block, args.k, args.repeats)
    deduplication(args.items, args.repeats)
    scoring(args.items, args.dim, args.k, args.repeats)
    if not args.skip_spark:
        batch_format(args.users, args.items, args.dim, args.k, args.repeats)


if __name__ == "__main__":
    main()
