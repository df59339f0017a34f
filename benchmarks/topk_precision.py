"""The top-k fast pass in float32 against bfloat16, in one Python process (no Spark): same users, same
items, same k; prints seconds, the ratio, the share of users the first candidate pass could not prove
(widened), and whether the two precisions gave identical lists and scores (they must).

    python benchmarks/topk_precision.py                         # random unit vectors, 10,000 x 20,000 x 384
    python benchmarks/topk_precision.py --vectors output        # the demo's user and item vectors (after a run)
    python benchmarks/topk_precision.py --ks 10 50 --repeat-users 10
    python benchmarks/topk_precision.py --margins 8 16          # also: the first pass's candidate margin

Where bfloat16 is slower (small catalogues with large k: the exact pass dominates), set
recommend.precision: float32.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import scorer_settings, unit_rows  # (also puts the repository on sys.path)

from segrec.udfs.topk import exact as topk
from segrec.udfs.topk.catalogue import Catalogue, SeenItems
from segrec.udfs.topk.exact import top_k


def vectors_from(output: Path) -> tuple[np.ndarray, np.ndarray]:
    items = pd.read_parquet(output / "item_vectors").sort_values("item_id")
    users = pd.read_parquet(output / "user_vectors")
    stack = lambda column: np.stack(column.to_numpy()).astype(np.float32)  # noqa: E731
    return stack(users["vector"]), stack(items["vector"])


def timed_lists(users, catalogue, seen, k, precision):
    before = dict(topk.SELECTION)
    started = time.perf_counter()
    blocks = top_k(
        users,
        np.full(len(users), -1),
        SeenItems.from_lists(seen),
        catalogue,
        scorer_settings(k, 64.0, precision),
    )
    arrays = [np.concatenate(parts) for parts in zip(*blocks, strict=True)]
    seconds = time.perf_counter() - started
    widened = (topk.SELECTION["widened"] - before["widened"]) / max(1, topk.SELECTION["users"] - before["users"])
    return seconds, widened, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=Path, help="an output folder with user_vectors and item_vectors")
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--seen", type=int, default=20, help="random seen items masked per user")
    parser.add_argument("--repeat-users", type=int, default=1, help="stack the users this many times")
    parser.add_argument(
        "--margins",
        type=int,
        nargs="*",
        default=[],
        help="also time the bfloat16 pass with these first-pass margins (udfs.topk.CANDIDATE_MARGIN; "
        "the first is the baseline of the ratios)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(7)
    if args.vectors:
        users, items = vectors_from(args.vectors)
        source = f"vectors from {args.vectors}"
    else:
        users, items = unit_rows(rng, args.users, args.dim), unit_rows(rng, args.items, args.dim)
        source = "random unit vectors"
    users = np.vstack([users] * args.repeat_users)
    catalogue = Catalogue(item_ids=np.arange(len(items)).astype(str), vectors=items)
    seen = [rng.choice(len(items), size=min(args.seen, len(items) - 1), replace=False) for _ in range(len(users))]
    timed_lists(users[:50], catalogue, seen[:50], 10, "bfloat16")  # warm-up: copies, norms, kernels

    print(
        f"{len(users)} users x {len(items)} items x {items.shape[1]} dims ({source}), "
        f"{torch.get_num_threads()} torch threads, native bfloat16: {topk.native_bfloat16()}"
    )
    print(f"{'k':>4}{'float32 s':>12}{'bfloat16 s':>12}{'widened':>10}{'identical':>11}{'float32 / bfloat16':>21}")
    for k in args.ks:
        f32, _, exact = timed_lists(users, catalogue, seen, k, "float32")
        b16, widened, fast = timed_lists(users, catalogue, seen, k, "bfloat16")
        same = all(np.array_equal(a, b) for a, b in zip(exact, fast, strict=True))
        print(f"{k:>4}{f32:>12.3f}{b16:>12.3f}{widened:>10.1%}{'yes' if same else 'NO':>11}{f32 / b16:>20.2f}x")
    if args.margins:
        compare_margins(users, catalogue, seen, args.ks, args.margins)


def compare_margins(users, catalogue, seen, ks, margins) -> None:
    """The bfloat16 pass with each first-pass margin (candidates = k + k // 2 + margin), in this run."""
    default = topk.CANDIDATE_MARGIN
    print(f"\nfirst-pass margin (bfloat16; the shipped margin is {default})")
    print(
        f"{'k':>4}{'margin':>8}{'candidates':>12}{'bfloat16 s':>12}{'widened':>10}{'identical':>11}"
        f"{'baseline / this':>17}"
    )
    try:
        for k in ks:
            baseline = lists = None
            for margin in margins:
                topk.CANDIDATE_MARGIN = margin
                seconds, widened, arrays = timed_lists(users, catalogue, seen, k, "bfloat16")
                baseline, lists = baseline or seconds, lists or arrays
                same = all(np.array_equal(a, b) for a, b in zip(lists, arrays, strict=True))
                print(
                    f"{k:>4}{margin:>8}{topk.candidate_count(k, len(catalogue.item_ids)):>12}{seconds:>12.3f}"
                    f"{widened:>10.1%}{'yes' if same else 'NO':>11}{baseline / seconds:>16.2f}x"
                )
    finally:
        topk.CANDIDATE_MARGIN = default


if __name__ == "__main__":
    main()
