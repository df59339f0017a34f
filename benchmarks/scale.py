"""Cost per unit of work from 1x to 16x: every stage of `segrec run`, then a sampled `segrec evaluate`,
on synthetic data at three sizes, in one local Spark application.

    .venv/bin/python benchmarks/scale.py                       # 10K, 40K and 160K users (about 40 minutes here)
    .venv/bin/python benchmarks/scale.py --base-users 2000 --scales 1 4   # a quick look

Data: users grow with the scale, the catalogue at a tenth of the users, interactions with the users
(history lengths log-normal: median 6, a long tail past 100), item choice Zipf-skewed within a
persona (a few very popular items), 15% of choices outside the user's persona; every text is unique.
The model is the tests' tiny random BERT (the real model's throughput is `embed_throughput.py`'s
subject); the towers train one epoch.

Per stage: wall seconds, the unit of work and the cost per unit (microseconds per row; per user x item
pair for recommend), the peak RSS of the Python driver process and of the JVM (in local mode it holds
the executors too), the peak RSS of the Python workers (the train stage: its training processes), and
the shuffle bytes written (Spark's REST API, summed over the stage's Spark stages). Peaks are reset at
every stage's start (/proc/<pid>/clear_refs). The last table is each stage's cost per unit at the
largest scale over the smallest: the targets are within 1.5x, and the driver's peak within 1.5x.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
from common import local_spark, peak_rss_mb, pids_where, reset_peaks, worker_pids

from segrec.jobs.bootstrap.synthetic import _ADJECTIVES, PERSONAS, TINY_VOCAB_WORDS, save_tiny_bert

RUN_STAGES = ["validate", "embed", "train", "profile", "segment", "recommend"]
TARGET = 1.5


# ------------------------------------------------------------------------------------------ data


def generate(n_users: int, seed: int) -> dict[str, pd.DataFrame]:
    """Items, users and interactions with the skew of real catalogues (see the module docstring)."""
    rng = np.random.default_rng(seed)
    personas = list(PERSONAS)
    n_items = max(200, n_users // 10)
    item_persona = np.arange(n_items) % len(personas)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i:08d}" for i in range(n_items)],
            "title": [
                f"{_ADJECTIVES[(i // 7) % len(_ADJECTIVES)]} {PERSONAS[personas[p]]['things'][i % 10]} model {i}"
                for i, p in enumerate(item_persona)
            ],
            "description": [
                f"for anyone who loves {PERSONAS[personas[p]]['likes'][i % 5]}, series {i % 997}"
                for i, p in enumerate(item_persona)
            ],
        }
    )
    user_persona = rng.integers(0, len(personas), n_users)
    words = np.array(TINY_VOCAB_WORDS)
    extra = words[rng.integers(0, len(words), (n_users, 4))]
    users = pd.DataFrame(
        {
            "user_id": [f"u{u:09d}" for u in range(n_users)],
            "bio": [
                f"i am into {PERSONAS[personas[p]]['likes'][u % 5]}; {' '.join(e)} {u}"
                for u, (p, e) in enumerate(zip(user_persona, extra, strict=True))
            ],
        }
    )
    lengths = np.clip(np.round(rng.lognormal(np.log(6), 1.0, n_users)), 1, 500).astype(np.int64)
    owner = np.repeat(np.arange(n_users), lengths)
    # Zipf weights within each persona's items: the first items of a persona are its best sellers.
    chosen_persona = np.where(
        rng.random(len(owner)) < 0.85, user_persona[owner], rng.integers(0, len(personas), len(owner))
    )
    item = np.empty(len(owner), np.int64)
    for p in range(len(personas)):
        pool = np.flatnonzero(item_persona == p)
        weights = 1.0 / np.arange(1, len(pool) + 1) ** 1.1
        cdf = np.cumsum(weights) / weights.sum()
        at = np.flatnonzero(chosen_persona == p)
        item[at] = pool[np.minimum(np.searchsorted(cdf, rng.random(len(at))), len(pool) - 1)]
    step = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    interactions = pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy()[owner],
            "item_id": items["item_id"].to_numpy()[item],
            "rating": np.where(
                chosen_persona == user_persona[owner], rng.integers(4, 6, len(owner)), rng.integers(1, 4, len(owner))
            ).astype(float),
            "timestamp": 1_767_225_600 + step * 3_600 + rng.integers(0, 3_600, len(owner)),
        }
    ).drop_duplicates(["user_id", "item_id"])
    return {"items": items, "users": users, "interactions": interactions}


def generate_and_write(n_users: int, seed: int, directory: str) -> None:
    """In a child process, so that the data never sits in the driver whose memory is measured."""
    data = generate(n_users, seed)
    paths = write(data, Path(directory))
    counts = {name: len(frame) for name, frame in data.items()}
    (Path(directory) / "counts.json").write_text(json.dumps({"paths": paths, "counts": counts}))


def prepared(n_users: int, seed: int, directory: Path) -> tuple[dict[str, str], dict[str, int]]:
    """(paths, row counts) of a data set generated and written by a child process."""
    child = multiprocessing.get_context("spawn").Process(
        target=generate_and_write, args=(n_users, seed, str(directory))
    )
    child.start()
    child.join()
    if child.exitcode:
        raise RuntimeError(f"generating {n_users} users failed (exit {child.exitcode})")
    written = json.loads((directory / "counts.json").read_text())
    return written["paths"], written["counts"]


def write(data: dict[str, pd.DataFrame], directory: Path) -> dict[str, str]:
    paths = {}
    for name, frame in data.items():
        folder = directory / name
        folder.mkdir(parents=True)
        bounds = np.linspace(0, len(frame), 9).astype(int)  # several files, as a warehouse export has
        for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            frame.iloc[start:stop].to_parquet(folder / f"part-{i}.parquet", index=False)
        paths[name] = str(folder)
    return paths


def config(paths: dict[str, str], output: str, model: str, sample_users: int) -> dict:
    return {
        "spark": {"master": "local[2]"},
        "model": {"path": model},
        "inputs": {
            "items": {"path": paths["items"], "columns": {"id": "item_id", "text": ["title", "description"]}},
            "users": {"path": paths["users"], "columns": {"id": "user_id", "text": ["bio"]}},
            "interactions": {
                "path": paths["interactions"],
                "columns": {"user_id": "user_id", "item_id": "item_id", "rating": "rating", "timestamp": "timestamp"},
            },
        },
        "output": {"path": output},
        "train": {"dim": 32, "hidden": 64, "epochs": 1, "batch_size": 1024},
        "segment": {"k": 8},
        "recommend": {"k": 10},
        "evaluate": {
            "holdout": 2,
            "sample_users": sample_users,
            "popularity_weights": [0.0, 1.0],
            "train_grid": [{}],
            "random_baseline": False,
            "plots": False,
            "als": {"ranks": [16], "reg_params": [0.1], "alphas": [1.0], "max_iter": 5},
        },
    }


# ---------------------------------------------------------------------------------- measuring


def jvm_pids() -> list[int]:
    return pids_where(lambda cmd: b"java" in cmd.split(b"\0")[0] and b"pyspark-shell" in cmd)


def shuffle_bytes(spark, group: str) -> int:
    """Shuffle bytes written by the Spark stages of the jobs in ``group`` (Spark's REST API)."""
    sc = spark.sparkContext
    tracker = sc.statusTracker()
    stage_ids = {s for job in tracker.getJobIdsForGroup(group) for s in (tracker.getJobInfo(job).stageIds or [])}
    url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/stages?details=false"
    stages = json.load(urllib.request.urlopen(url))
    return sum(s.get("shuffleWriteBytes", 0) for s in stages if s["stageId"] in stage_ids)


def measure(spark, conf, command: str, group: str) -> dict:
    from segrec.jobs.pipeline import execute

    reset_peaks([os.getpid(), *jvm_pids(), *worker_pids()])
    spark.sparkContext.setJobGroup(group, command)
    started = time.perf_counter()
    manifest = execute(spark, conf, command)
    seconds = time.perf_counter() - started
    stages = manifest.stages
    if command == "evaluate":  # evaluate re-runs validate and embed (vectors reused): its own stage only
        seconds = stages["evaluate"]["seconds"]
    workers = peak_rss_mb(worker_pids())  # the train stage's training processes report their own peak
    if command == "train":
        workers = max(workers, stages["train"].get("training_peak_rss_mb") or 0)
    return {
        "seconds": seconds,
        "driver_mb": peak_rss_mb([os.getpid()]),
        "jvm_mb": peak_rss_mb(jvm_pids()),
        "workers_mb": workers,
        "shuffle_mb": shuffle_bytes(spark, group) / 2**20,
        "figures": stages[command],
    }


def units(stage: str, counts: dict[str, int]) -> tuple[float, str]:
    users, items, rows = counts["users"], counts["items"], counts["interactions"]
    return {
        "validate": (users + items + rows, "input rows"),
        "embed": (users + items, "texts"),
        "train": (rows, "interactions"),
        "profile": (rows + users, "interactions + users"),
        "segment": (users, "users"),
        "recommend": (users * items, "user x item pairs"),
        "evaluate": (rows, "interactions"),
    }[stage]


# --------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-users", type=int, default=10_000)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sample-users", type=int, default=2_000, help="evaluate.sample_users at every scale")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()

    from segrec.jobs.config import config_from_dict

    spark = local_spark("segrec-scale", args.cores, driver_memory="8g", ui=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="segrec-scale-") as tmp:
        model = save_tiny_bert(f"{tmp}/tiny-bert")
        # a warm-up pass first (JIT, Python workers, the model in their cache), not recorded
        for scale in [0] + args.scales:
            paths, counts = prepared(args.base_users * scale or 1_000, scale, Path(tmp) / f"in-{scale}")
            conf = config_from_dict(config(paths, f"{tmp}/out-{scale}", model, args.sample_users))
            print(
                f"{f'{scale}x' if scale else 'warm-up'}: {counts['users']} users, {counts['items']} items, "
                f"{counts['interactions']} interactions",
                flush=True,
            )
            for stage in RUN_STAGES + ["evaluate"]:
                result = measure(spark, conf, stage, f"{scale}-{stage}")
                if not scale:
                    continue
                n, unit = units(stage, counts)
                rows.append(
                    {
                        "scale": scale,
                        "stage": stage,
                        "seconds": round(result["seconds"], 1),
                        "unit": unit,
                        "units": n,
                        "us_per_unit": result["seconds"] / n * 1e6,
                        "driver_mb": round(result["driver_mb"]),
                        "jvm_mb": round(result["jvm_mb"]),
                        "workers_mb": round(result["workers_mb"]),
                        "shuffle_mb": round(result["shuffle_mb"], 1),
                    }
                )
                print(
                    f"  {stage:<9} {result['seconds']:8.1f} s  {rows[-1]['us_per_unit']:10.3f} us per {unit}",
                    flush=True,
                )
    spark.stop()
    report(pd.DataFrame(rows), args)


def report(table: pd.DataFrame, args) -> None:
    shown = table.copy()
    shown["us_per_unit"] = shown["us_per_unit"].map(lambda v: f"{v:.4g}")
    print()
    print(shown.to_string(index=False))
    first, last = min(args.scales), max(args.scales)
    print(f"\ngrowth from {first}x to {last}x ({last // first}x the users), target within {TARGET}x:")
    for stage in RUN_STAGES + ["evaluate"]:
        a = table[(table.scale == first) & (table.stage == stage)].iloc[0]
        b = table[(table.scale == last) & (table.stage == stage)].iloc[0]
        cost = b.us_per_unit / a.us_per_unit
        driver = b.driver_mb / a.driver_mb
        print(
            f"  {stage:<9} cost per {a.unit}: {cost:.2f}x ({'within' if cost <= TARGET else 'OVER'} target); "
            f"driver peak {a.driver_mb} -> {b.driver_mb} MB: {driver:.2f}x "
            f"({'within' if driver <= TARGET else 'OVER'} target); JVM {a.jvm_mb} -> {b.jvm_mb} MB"
        )


if __name__ == "__main__":
    sys.exit(main())
