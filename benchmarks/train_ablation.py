"""The two-tower settings one change at a time, on the demo's own vectors (quality, not speed), beside
Spark ML ALS fitted on the same split in the same run.

    python3 -m jobs.bootstrap run                      # writes output/ (validated inputs, text vectors)
    .venv/bin/python benchmarks/train_ablation.py '{}' '{"id_embeddings": false}' '{"logq": false}'
    .venv/bin/python benchmarks/train_ablation.py --order-free --als '{}' '{"objective": "sequential"}'
    .venv/bin/python benchmarks/train_ablation.py --order-free --als --blend '{}'

Each argument is a set of TowerSettings overrides; each is trained in this process with
``udfs.towers.train`` (no Spark, no TorchDistributor) on an approximation of evaluate's split (newest 5
interactions per user held out, ties by item id descending, every user keeping one; ``--order-free``
drops the timestamps and holds out 5 chosen by a seeded hash, as evaluate does on data without them),
its user vectors pooled as the profile stage pools them, and scored by NDCG@10 and recall@10 with seen
items masked. ``--als`` also fits Spark ML ALS (implicit feedback, evaluate's default grid, the best
cell on the held-out rows: a baseline given every advantage) and prints each cell's ratio to it.
``--blend`` (with ``--als``) also scores each cell's towers blended with that ALS, cosine + w x the ALS
dot product, for a few weights w, all on the held-out rows: what a blend could reach, not what a
weight chosen on validation would. The objective defaults to the split's (sequential with timestamps,
order-free without).
The figures are close to, not equal to, `segrec evaluate`'s: use that for the shipped model's numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import pandas as pd
from common import local_spark

from segrec.jobs.config import executor_settings
from segrec.udfs.towers import TowerSettings, TowerWeights, TrainingData, inference_history, train

BLEND_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)


def read(output: str, name: str) -> pd.DataFrame:
    return pd.read_parquet(f"{output}/{name}")


def split(events: pd.DataFrame, holdout: int = 5, order_free: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    if order_free:
        # No order: a seeded hash of (user, item) stands in for time, as jobs/evaluation/split.py does.
        key = pd.util.hash_pandas_object(events[["user_id", "item_id"]], index=False).to_numpy()
        events = events.assign(ts=(key % np.uint64(2**62)).astype(np.int64))
    events = events.sort_values(["user_id", "ts", "item_id"], ascending=[True, False, False])
    recent = events.groupby("user_id").cumcount() + 1
    count = events.groupby("user_id")["item_id"].transform("size")
    held = recent <= np.minimum(holdout, count - 1)
    return events[~held], events[held]


def training_data(
    train_rows: pd.DataFrame, items: pd.DataFrame, texts: pd.DataFrame
) -> tuple[TrainingData, np.ndarray]:
    items = items.sort_values("item_id")
    item_ids = items["item_id"].to_numpy()
    ordered = train_rows.sort_values(["user_id", "ts", "item_id"])
    positions = np.searchsorted(item_ids, ordered["item_id"].to_numpy())
    users = np.array(sorted(set(ordered["user_id"]) | set(texts["user_id"])))
    lengths = np.bincount(np.searchsorted(users, ordered["user_id"].to_numpy()), minlength=len(users))
    own = texts.groupby("user_id")["vector"].apply(lambda v: np.mean(np.stack(v.to_numpy()), 0))
    user_text = np.zeros((len(users), len(items["vector"].iloc[0])), np.float32)
    at = np.searchsorted(users, own.index.to_numpy())
    matrix = np.stack(own.to_numpy())
    user_text[at] = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    has_text = np.zeros(len(users), bool)
    has_text[at] = True
    data = TrainingData(
        item_ids=item_ids,
        item_text=np.stack(items["vector"].to_numpy()).astype(np.float32),
        item_counts=np.bincount(positions, minlength=len(item_ids)),
        flat_items=positions.astype(np.int64),
        flat_weights=np.ones(len(positions), np.float32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        user_text=user_text,
        has_text=has_text,
    )
    return data, users


def tower_scores(data: TrainingData, settings: TowerSettings) -> np.ndarray:
    """(users, items) scores of the towers trained on ``data`` with ``settings``."""
    result = train(data, settings, log=lambda _: None)
    weights = TowerWeights(settings, result.state, result.id_items)
    items = weights.item_vectors(data.item_text, data.item_ids)
    pooled = np.zeros((data.n_users, settings.dim))
    for u in range(data.n_users):
        a, b = data.offsets[u], data.offsets[u + 1]
        if b > a:
            hist, w = inference_history(data.flat_items[a:b], data.flat_weights[a:b], settings)
            pooled[u] = (items[hist] * w[:, None]).sum(0) / max(w.sum(), 1e-6)
    return weights.user_vectors(pooled, np.where(data.has_text[:, None], data.user_text, np.nan)) @ items.T


def als_scores(train_rows: pd.DataFrame, data: TrainingData, users: np.ndarray, held: pd.DataFrame, k: int) -> tuple:
    """(scores, the best cell) of Spark ML ALS over evaluate's default grid, the cell chosen on ``held``."""
    from pyspark.ml.recommendation import ALS

    spark = local_spark("train-ablation-als", 2)
    rows = pd.DataFrame(
        {
            "u": np.searchsorted(users, train_rows["user_id"].to_numpy()).astype(np.int32),
            "i": np.searchsorted(data.item_ids, train_rows["item_id"].to_numpy()).astype(np.int32),
            "r": np.ones(len(train_rows), np.float32),
        }
    )
    frame = spark.createDataFrame(rows).cache()
    best: tuple = (-1.0, None, None)
    for rank, reg, alpha in itertools.product([16, 64], [0.01, 0.1], [1.0, 20.0]):
        als = ALS(
            rank=rank, regParam=reg, alpha=alpha, maxIter=10, implicitPrefs=True, seed=42,
            userCol="u", itemCol="i", ratingCol="r", coldStartStrategy="drop",
        )  # fmt: skip
        model = als.fit(frame)
        uf = model.userFactors.toPandas()
        itf = model.itemFactors.toPandas()
        U = np.zeros((data.n_users, rank), np.float32)
        V = np.zeros((len(data.item_ids), rank), np.float32)
        U[uf["id"].to_numpy()] = np.stack(uf["features"].to_numpy())
        V[itf["id"].to_numpy()] = np.stack(itf["features"].to_numpy())
        scores = U @ V.T
        figure = metrics(scores, data, users, held, k)["ndcg@10"]
        if figure > best[0]:
            best = (figure, scores, {"rank": rank, "reg_param": reg, "alpha": alpha})
    spark.stop()
    return best[1], best[2]


def metrics(scores: np.ndarray, data: TrainingData, users: np.ndarray, held: pd.DataFrame, k: int = 10) -> dict:
    scores = scores.copy()
    for u in range(data.n_users):
        scores[u, data.flat_items[data.offsets[u] : data.offsets[u + 1]]] = -np.inf
    # Ties by catalogue position (item id order), as the recommend stage breaks them.
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    relevant: dict[int, set] = {}
    for u, i in zip(
        np.searchsorted(users, held["user_id"].to_numpy()),
        np.searchsorted(data.item_ids, held["item_id"].to_numpy()),
        strict=False,
    ):
        relevant.setdefault(u, set()).add(i)
    ndcg, recall = [], []
    for u, wanted in relevant.items():
        hits = [float(i in wanted) for i in top[u]]
        ideal = sum(1 / np.log2(r + 2) for r in range(min(k, len(wanted))))
        ndcg.append(sum(h / np.log2(r + 2) for r, h in enumerate(hits)) / ideal)
        recall.append(sum(hits) / len(wanted))
    return {"ndcg@10": round(float(np.mean(ndcg)), 4), "recall@10": round(float(np.mean(recall)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cells", nargs="*", help="JSON objects of TowerSettings overrides (none: the defaults)")
    parser.add_argument("--order-free", action="store_true", help="drop the timestamps; hold out by seeded hash")
    parser.add_argument("--als", action="store_true", help="fit Spark ML ALS on the same split as the baseline")
    parser.add_argument("--blend", action="store_true", help="with --als: also score towers + w x ALS")
    parser.add_argument("--output", default="output", help="a run's output.path (validated inputs, vectors)")
    args = parser.parse_args()
    events = read(args.output, "interactions").astype({"user_id": str, "item_id": str})
    events["ts"] = pd.to_datetime(events["timestamp"]).astype("int64")
    items = read(args.output, "item_vectors").astype({"item_id": str})
    texts = read(args.output, "text_vectors").astype({"user_id": str})
    train_rows, held = split(events, order_free=args.order_free)
    data, users = training_data(train_rows, items, texts)
    print(f"{len(train_rows)} training rows, {len(held)} held out, {data.n_users} users, {len(data.item_ids)} items")
    if args.blend and not args.als:
        parser.error("--blend needs --als")
    baseline, als = None, None
    if args.als:
        als, cell = als_scores(train_rows, data, users, held, 10)
        baseline = metrics(als, data, users, held)
        print("als", json.dumps(cell), baseline, flush=True)
    objective = "order_free" if args.order_free else "sequential"
    for cell in [json.loads(c) for c in args.cells] or [{}]:
        settings = executor_settings(TowerSettings, **{"objective": objective, **cell})
        started = time.perf_counter()
        scores = tower_scores(data, settings)
        figures = metrics(scores, data, users, held)
        figures["train_seconds"] = round(time.perf_counter() - started, 1)
        if baseline:
            figures["vs_als"] = round(figures["ndcg@10"] / baseline["ndcg@10"], 3)
        print(json.dumps(cell), figures, flush=True)
        if args.blend and als is not None and baseline:
            for weight in BLEND_WEIGHTS:
                blended = metrics(scores + weight * als, data, users, held)
                blended["vs_als"] = round(blended["ndcg@10"] / baseline["ndcg@10"], 3)
                print(f"  + {weight} x ALS", blended, flush=True)


if __name__ == "__main__":
    main()
