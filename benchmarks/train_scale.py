"""Training cost as the catalogue and the interactions grow: seconds per interaction of one epoch, and each
training process's peak memory, through the train stage's own process code.

    .venv/bin/python benchmarks/train_scale.py                     # about 15 minutes here
    .venv/bin/python benchmarks/train_scale.py --interactions 20000 --items 16384 65536   # a quick look
    .venv/bin/python benchmarks/train_scale.py --load-only 4   # what reading 1 of 4 shards costs, against all

The examples are synthetic and written as the train stage writes them (the catalogue with each item's
training count; histories and user texts in one ``shard=<rank>`` folder per process), then
``udfs.towers.process.train_process`` runs in --processes processes joined by gloo, as TorchDistributor's
local mode starts them, for one epoch at the default train settings (dim 128, hidden 512, batch 512,
history 200, 8,192 sampled negatives, order-free objective). Text vectors have 64 values; users have
about 10 interactions each, items drawn Zipf-skewed; every user has a text.

Three sweeps in one run:
  items:        16K, 256K and 1M items at --interactions interactions;
  interactions: 1x, 4x and 16x --interactions at 16K items;
  processes:    the largest interaction count in one process and in --processes processes.
Per row: the epoch's seconds and microseconds per interaction (the processes train side by side on this
machine's cores: per interaction of the whole epoch), and the largest peak RSS among the processes. The
last lines are the growth ratios against the targets (cost per interaction within 1.5x; per-process
memory following its shard).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import ROOT

TEXT_DIM = 64
TARGET = 1.5


def vector_column(rows: np.ndarray) -> pa.Array:
    flat = pa.array(rows.reshape(-1), pa.float32())
    return pa.ListArray.from_arrays(pa.array(np.arange(0, rows.size + 1, rows.shape[1], dtype=np.int32)), flat)


def write_examples(root: str, n_items: int, n_interactions: int, processes: int, seed: int) -> None:
    """The three datasets of ``two_towers.training_frames`` under ``root``, sharded for ``processes``."""
    rng = np.random.default_rng(seed)
    item_ids = np.array([f"i{i:08d}" for i in range(n_items)])
    text = rng.standard_normal((n_items, TEXT_DIM), dtype=np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    n_users = max(1, n_interactions // 10)
    lengths = rng.multinomial(n_interactions - n_users, np.full(n_users, 1.0 / n_users)) + 1
    picks = np.minimum(rng.zipf(1.3, n_interactions) - 1, n_items - 1)
    picks = rng.permutation(n_items)[picks]  # popular items spread over the id range
    counts = np.bincount(picks, minlength=n_items)
    pq.write_table(
        pa.table({"item_id": item_ids, "vector": vector_column(text), "count": counts.astype(np.int64)}),
        f"{root}/catalogue.parquet",
    )
    user_ids = np.array([f"u{u:08d}" for u in range(n_users)])
    shard = np.arange(n_users) % processes  # the stage hashes the id; any even split reads the same
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    user_text = rng.standard_normal((n_users, TEXT_DIM), dtype=np.float32)
    for rank in range(processes):
        mine = np.flatnonzero(shard == rank)
        starts, ends = offsets[mine], offsets[mine + 1]
        flat = np.concatenate([picks[s:e] for s, e in zip(starts, ends, strict=True)])
        own_offsets = pa.array(np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int32))
        for name in ("sequences", "user_texts"):
            os.makedirs(f"{root}/{name}/shard={rank}", exist_ok=True)
        pq.write_table(
            pa.table(
                {
                    "user_id": user_ids[mine],
                    "items": pa.ListArray.from_arrays(own_offsets, pa.array(item_ids[flat])),
                    "weights": pa.ListArray.from_arrays(own_offsets, pa.array(np.ones(len(flat), np.float32))),
                }
            ),
            f"{root}/sequences/shard={rank}/part-0.parquet",
        )
        pq.write_table(
            pa.table({"user_id": user_ids[mine], "vector": vector_column(user_text[mine])}),
            f"{root}/user_texts/shard={rank}/part-0.parquet",
        )


PROCESS = """
import json, os, resource, sys
sys.path.insert(0, {root!r})
from segrec.jobs.config import executor_settings
from segrec.udfs.towers.process import TrainJob, train_process
from segrec.udfs.towers import TowerSettings
settings = executor_settings(TowerSettings, epochs=1, objective="order_free")
data = {data!r}
paths = (f"{{data}}/catalogue.parquet", f"{{data}}/sequences", f"{{data}}/user_texts")
job = TrainJob(*paths, settings, threads={threads})
result = train_process(job)
print(json.dumps({{
    "rank": int(os.environ["RANK"]),
    "seconds": result.curve[0]["seconds"] if result else None,
    "examples": result.examples if result else None,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}}))
"""


LOAD = """
import json, resource
from segrec.jobs.config import executor_settings
from segrec.udfs.towers.process import TrainJob, load_training_data
from segrec.udfs.towers import TowerSettings
settings = executor_settings(TowerSettings, objective="order_free")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
data = load_training_data(TrainJob({catalogue!r}, {sequences!r}, {texts!r}, settings), 0)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps({{"interactions": len(data.flat_items), "grown_mb": grown}}))
"""


def load_growth(n_items: int, n_interactions: int, shards: int) -> dict:
    """How much reading its examples raises process 0's peak RSS above its imports, with the users in
    ``shards`` shards (1: every process reads every example, as before the shards)."""
    root = tempfile.mkdtemp(prefix="segrec-train-load-")
    try:
        write_examples(root, n_items, n_interactions, shards, seed=n_items + n_interactions)
        code = LOAD.format(
            catalogue=f"{root}/catalogue.parquet", sequences=f"{root}/sequences", texts=f"{root}/user_texts"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_once(data: str, processes: int, cores: int) -> dict:
    """One epoch of ``train_process`` in ``processes`` processes over the examples under ``data``."""
    code = PROCESS.format(root=str(ROOT), data=data, threads=max(1, cores // processes))
    port = str(free_port())
    children = []
    for rank in range(processes):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(processes),
            "LOCAL_WORLD_SIZE": "1",  # every rank reports its own figures (the stage's local mode exits early)
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        children.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True))
    outputs = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
    if any(child.returncode for child in children):
        raise SystemExit(f"a training process failed: {[child.returncode for child in children]}")
    first = next(o for o in outputs if o["rank"] == 0)
    return {"seconds": first["seconds"], "examples": first["examples"], "peak_mb": max(o["peak_mb"] for o in outputs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[16384, 262144, 1048576])
    parser.add_argument("--interactions", type=int, default=100_000, help="the 1x interaction count")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--load-only",
        type=int,
        metavar="SHARDS",
        help="only measure what loading the largest interaction count adds to process 0's peak RSS, "
        "unsharded and in SHARDS shards",
    )
    args = parser.parse_args()
    if args.load_only:
        largest = args.interactions * max(args.scales)
        for shards in (1, args.load_only):
            grown = load_growth(args.items[0], largest, shards)
            print(
                f"{largest} interactions in {shards} shard(s): process 0 reads {grown['interactions']} and its "
                f"peak RSS grows {grown['grown_mb']:.0f} MB above its imports"
            )
        return

    root = tempfile.mkdtemp(prefix="segrec-train-scale-")
    rows = []
    runs = [("items", n, args.interactions, args.processes) for n in args.items]
    runs += [("interactions", args.items[0], args.interactions * s, args.processes) for s in args.scales]
    largest = args.interactions * max(args.scales)
    runs += [("processes", args.items[0], largest, p) for p in (1, args.processes)]
    try:
        done: dict[tuple, dict] = {}
        for sweep, n_items, n_interactions, processes in runs:
            key = (n_items, n_interactions, processes)
            if key not in done:
                data = f"{root}/{n_items}-{n_interactions}-{processes}"
                os.makedirs(data)
                write_examples(data, n_items, n_interactions, processes, seed=n_items + n_interactions)
                started = time.perf_counter()
                done[key] = {**train_once(data, processes, args.cores), "wall": time.perf_counter() - started}
                shutil.rmtree(data, ignore_errors=True)
                figures = done[key]
                print(
                    f"{n_items} items, {n_interactions} interactions, {processes} processes: epoch "
                    f"{figures['seconds']:.1f} s, peak {figures['peak_mb']:.0f} MB per process",
                    flush=True,
                )
            rows.append((sweep, n_items, n_interactions, processes, done[key]))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\none epoch, default train settings, text vectors of {TEXT_DIM}, {args.cores} cores")
    print(f"{'sweep':<13}{'items':>9}{'interactions':>14}{'procs':>6}{'epoch s':>9}{'us/inter':>10}{'peak MB':>9}")
    for sweep, n_items, n_interactions, processes, figures in rows:
        per = figures["seconds"] / figures["examples"] * 1e6
        print(
            f"{sweep:<13}{n_items:>9}{n_interactions:>14}{processes:>6}{figures['seconds']:>9.1f}"
            f"{per:>10.1f}{figures['peak_mb']:>9.0f}"
        )

    def cost(sweep: str, pick) -> float:
        row = pick([r for r in rows if r[0] == sweep])
        return row[4]["seconds"] / row[4]["examples"]

    first, last = (lambda rs: rs[0]), (lambda rs: rs[-1])
    for sweep, what in (("items", "items"), ("interactions", "interactions")):
        ratio = cost(sweep, last) / cost(sweep, first)
        verdict = "within" if ratio <= TARGET else "over"
        print(f"cost per interaction, smallest to largest {what}: {ratio:.2f}x ({verdict} the {TARGET}x target)")
    one, many = (r[4]["peak_mb"] for r in rows if r[0] == "processes")
    shares = f"1 process {one:.0f} MB, {args.processes} processes {many:.0f} MB"
    print(f"peak memory per process at {largest} interactions: {shares}")
    print(f"(this benchmark's own peak: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
