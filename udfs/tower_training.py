"""One training process of the two-tower model, as TorchDistributor starts it (one per GPU or executor
on a cluster, one or more on the driver in local mode).

The train stage writes the training examples as parquet (``TrainJob``'s paths) and hands this module's
``train_process`` to ``TorchDistributor.run``; every process reads the examples, takes its share of
users (user number modulo world size), and trains with gradients averaged across processes by
DistributedDataParallel (gloo on CPUs, nccl on GPUs). Rank 0's result goes back to the driver.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segrec.udfs.checkpoints import Checkpoints, fingerprint
from segrec.udfs.errors import WorkerInputError
from segrec.udfs.towers import TowerSettings, TrainingData, TrainResult, train


@dataclass(frozen=True)
class TrainJob:
    """What every process needs: where the examples are, the settings, threads and device."""

    catalogue_path: str  # item_id, vector (the frozen text vectors)
    sequences_path: str  # user_id, items (oldest first), weights
    user_texts_path: str  # user_id, vector (the user's own text)
    settings: TowerSettings
    threads: int = 1
    device: str = "cpu"  # cpu | cuda | auto
    checkpoint_dir: str | None = None  # where rank 0 keeps a checkpoint per epoch (None: no checkpoints)


def _read(path: str, columns: list[str]):
    return pq.read_table(path, columns=columns)


def load_training_data(job: TrainJob) -> TrainingData:
    """The examples ``job`` points at (parquet files), as flat arrays: items in id order, users in id
    order, histories oldest first."""
    catalogue = _read(job.catalogue_path, ["item_id", "vector"]).to_pandas()
    catalogue = catalogue.sort_values("item_id", kind="stable")
    item_ids = catalogue["item_id"].to_numpy().astype(str)
    item_text = _stack(catalogue["vector"].to_numpy())

    sequences = _read(job.sequences_path, ["user_id", "items", "weights"])
    # String ids, sorted as numpy sorts them (Arrow's binary order is the same code-point order).
    sequences = sequences.set_column(0, "user_id", pc.cast(sequences.column("user_id"), pa.string())).sort_by("user_id")
    texts = _read(job.user_texts_path, ["user_id", "vector"]).to_pandas()
    seq_users = np.asarray(sequences.column("user_id").to_pylist(), dtype=str)
    users = np.union1d(seq_users, texts["user_id"].to_numpy().astype(str))

    items_col = sequences.column("items").combine_chunks()
    lengths = np.zeros(len(users), np.int64)
    lengths[np.searchsorted(users, seq_users)] = items_col.value_lengths().to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat_ids = np.asarray(items_col.flatten().to_numpy(zero_copy_only=False)).astype(str)
    flat_weights = np.asarray(
        sequences.column("weights").combine_chunks().flatten().to_numpy(zero_copy_only=False), np.float64
    )
    positions = np.searchsorted(item_ids, flat_ids)
    positions = np.minimum(positions, max(len(item_ids) - 1, 0))
    if len(flat_ids) and not np.array_equal(item_ids[positions], flat_ids):
        missing = flat_ids[item_ids[positions] != flat_ids][0]
        raise WorkerInputError(f"training history refers to item {missing!r}, which has no text vector")
    weights = np.nan_to_num(flat_weights, nan=1.0, posinf=1.0, neginf=0.0)
    if not job.settings.feedback_weights:
        weights = np.ones_like(weights)

    user_text = np.zeros((len(users), item_text.shape[1]), np.float32)
    has_text = np.zeros(len(users), bool)
    if len(texts):
        at = np.searchsorted(users, texts["user_id"].to_numpy().astype(str))
        user_text[at] = _stack(texts["vector"].to_numpy())
        has_text[at] = True
    return TrainingData(
        item_ids=item_ids,
        item_text=item_text,
        item_counts=np.bincount(positions, minlength=len(item_ids)).astype(np.int64),
        flat_items=positions.astype(np.int64),
        flat_weights=weights.astype(np.float32),
        offsets=offsets,
        user_text=user_text,
        has_text=has_text,
    )


def _stack(vectors: np.ndarray) -> np.ndarray:
    if len(vectors) == 0:
        return np.zeros((0, 0), np.float32)
    return np.stack([np.asarray(v, np.float32) for v in vectors])


def train_process(job: TrainJob) -> TrainResult | None:
    """The function TorchDistributor runs in every process with the same ``job``: it reads its share of
    the examples and trains; rank 0 returns the trained weights, the other ranks None."""
    import torch

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(job.threads)  # torchrun sets OMP_NUM_THREADS=1 for several processes
    device = job.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    try:
        data = load_training_data(job)
        checkpoints = None
        if job.checkpoint_dir:
            checkpoints = Checkpoints(job.checkpoint_dir, fingerprint(job.settings, world, data))
        result = train(data, job.settings, rank=rank, world=world, device=device, checkpoints=checkpoints)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank != 0:
        if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
            # Processes on one host (TorchDistributor's local mode) share one output file, and the last
            # to finish would overwrite rank 0's weights with None: the others leave without writing.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return None
    result.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
    return result
