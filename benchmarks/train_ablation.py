"""The two-tower settings one change at a time, on the demo's own vectors (quality, not speed).

    python3 -m jobs.bootstrap run                      # writes output/ (validated inputs, text vectors)
    .venv/bin/python benchmarks/train_ablation.py '{}' '{"id_embeddings": false}' '{"logq": false}'

Each argument is a set of TowerSettings overrides; each is trained in this process with
``udfs.towers.train`` (no Spark, no TorchDistributor) on an approximation of evaluate's split (newest 5
interactions per user held out, ties by item id descending, every user keeping one), its user vectors
pooled as the profile stage pools them, and scored by NDCG@10 and recall@10 with seen items masked.
The figures are close to, not equal to, `segrec evaluate`'s: use that for the shipped model's numbers.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd

from segrec.jobs.config import executor_settings
from segrec.udfs.towers import TowerSettings, TowerWeights, TrainingData, inference_history, train


def read(output: str, name: str) -> pd.DataFrame:
    return pd.read_parquet(f"{output}/{name}")


def split(events: pd.DataFrame, holdout: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
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


def score(data: TrainingData, users: np.ndarray, held: pd.DataFrame, settings: TowerSettings, k: int = 10) -> dict:
    started = time.perf_counter()
    result = train(data, settings, log=lambda _: None)
    seconds = time.perf_counter() - started
    weights = TowerWeights(settings, result.state, result.id_items)
    items = weights.item_vectors(data.item_text, data.item_ids)
    pooled = np.zeros((data.n_users, settings.dim))
    for u in range(data.n_users):
        a, b = data.offsets[u], data.offsets[u + 1]
        if b > a:
            hist, w = inference_history(data.flat_items[a:b], data.flat_weights[a:b], settings)
            pooled[u] = (items[hist] * w[:, None]).sum(0) / max(w.sum(), 1e-6)
    scores = weights.user_vectors(pooled, np.where(data.has_text[:, None], data.user_text, np.nan)) @ items.T
    for u in range(data.n_users):
        scores[u, data.flat_items[data.offsets[u] : data.offsets[u + 1]]] = -np.inf
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
    return {
        "ndcg@10": round(float(np.mean(ndcg)), 4),
        "recall@10": round(float(np.mean(recall)), 4),
        "train_seconds": round(seconds, 1),
    }


def main(cells: list[dict], output: str = "output") -> None:
    events = read(output, "interactions").astype({"user_id": str, "item_id": str})
    events["ts"] = pd.to_datetime(events["timestamp"]).astype("int64")
    items = read(output, "item_vectors").astype({"item_id": str})
    texts = read(output, "text_vectors").astype({"user_id": str})
    train_rows, held = split(events)
    data, users = training_data(train_rows, items, texts)
    print(f"{len(train_rows)} training rows, {len(held)} held out, {data.n_users} users, {len(data.item_ids)} items")
    for cell in cells:
        print(
            json.dumps(cell),
            score(data, users, held, executor_settings(TowerSettings, **{"objective": "sequential", **cell})),
            flush=True,
        )


if __name__ == "__main__":
    main([json.loads(arg) for arg in sys.argv[1:]] or [{}])
