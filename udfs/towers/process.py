"""One training process of the two-tower model, as TorchDistributor starts it (one per GPU or executor
on a cluster, one or more on the driver in local mode).

The train stage writes the training examples as parquet (``TrainJob``'s paths) and hands this module's
``train_process`` to ``TorchDistributor.run``. Users' histories and texts are written in one folder per
process (``shard=<rank>``, users placed by a hash of their id), so each process reads the whole
catalogue (with every item's training count over all users) but only its own users' rows: its memory
grows with its share of the interactions, not with all of them. Processes train with gradients
averaged by DistributedDataParallel (gloo on CPUs, nccl on GPUs). Rank 0's result goes back to the driver.
"""

from __future__ import annotations

import hashlib
import os
import resource
import sys
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segrec.udfs.errors import WorkerInputError
from segrec.udfs.towers import TowerSettings, TrainingData, TrainResult, train
from segrec.udfs.towers.checkpoints import Checkpoints, fingerprint


@dataclass(frozen=True)
class TrainJob:
    """What every process needs: where the examples are, the settings, threads and device."""

    catalogue_path: str  # item_id, vector (the frozen text vectors), count (training interactions)
    sequences_path: str  # shard=<rank>/: user_id, items (oldest first), weights
    user_texts_path: str  # shard=<rank>/: user_id, vector (the user's own text)
    settings: TowerSettings
    threads: int = 1
    device: str = "cpu"  # cpu | cuda | auto
    checkpoint_dir: str | None = None  # where rank 0 keeps a checkpoint per epoch (None: no checkpoints)


SEQUENCES = pa.schema([("user_id", pa.string()), ("items", pa.list_(pa.string())), ("weights", pa.list_(pa.float32()))])
USER_TEXTS = pa.schema([("user_id", pa.string()), ("vector", pa.list_(pa.float32()))])


def _read(path: str, columns: list[str]):
    return pq.read_table(path, columns=columns)


def _read_shard(root: str, rank: int, schema: pa.Schema) -> pa.Table:
    """The rows of process ``rank`` under ``root`` (its ``shard=<rank>`` folder), or none of ``schema``'s
    columns when no user hashed to it (Spark writes no folder for an empty partition)."""
    path = os.path.join(root, f"shard={rank}")
    if not os.path.isdir(path):
        return schema.empty_table()
    return pq.read_table(path, columns=schema.names)


def load_training_data(job: TrainJob, rank: int = 0) -> TrainingData:
    """The examples ``job`` points at (parquet files) for process ``rank``, as flat arrays: every item in
    id order with its training count over all users, this process's users in id order, histories oldest
    first."""
    # Read as Arrow and cut from its flat buffers: a pandas column of a million small arrays cost several
    # times the vectors' own memory (benchmarks/train_scale.py, 1M items).
    catalogue = _read(job.catalogue_path, ["item_id", "vector", "count"])
    catalogue = catalogue.set_column(0, "item_id", pc.cast(catalogue.column("item_id"), pa.string())).sort_by("item_id")
    item_ids = catalogue.column("item_id").to_numpy().astype(str)
    item_text = _flat_vectors(catalogue.column("vector").combine_chunks())

    sequences = _read_shard(job.sequences_path, rank, SEQUENCES)
    # String ids, sorted as numpy sorts them (Arrow's binary order is the same code-point order).
    sequences = sequences.set_column(0, "user_id", pc.cast(sequences.column("user_id"), pa.string())).sort_by("user_id")
    texts = _read_shard(job.user_texts_path, rank, USER_TEXTS).to_pandas()
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
        item_counts=catalogue.column("count").to_numpy().astype(np.int64),
        flat_items=positions.astype(np.int64),
        flat_weights=weights.astype(np.float32),
        offsets=offsets,
        user_text=user_text,
        has_text=has_text,
    )


def _training_fingerprint(job: TrainJob, world: int, data: TrainingData) -> str:
    """The fingerprint of the whole training: each process's over its own shard, combined in rank order
    (every process must open the same checkpoint)."""
    mine = fingerprint(job.settings, world, data)
    if world == 1:
        return mine
    import torch.distributed as dist

    every: list[str | None] = [None] * world
    dist.all_gather_object(every, mine)
    return hashlib.sha256("\x1f".join(str(f) for f in every).encode()).hexdigest()[:24]


def _flat_vectors(vectors: pa.ListArray) -> np.ndarray:
    """(n, t) float32 from a list column of n vectors of one length t."""
    if len(vectors) == 0:
        return np.zeros((0, 0), np.float32)
    lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
    if vectors.null_count or (lengths != lengths[0]).any():
        raise WorkerInputError("training catalogue: every item needs a text vector of one length")
    # writable (torch warns on Arrow's read-only buffer); the table it came from is dropped after loading
    values = np.require(vectors.flatten().to_numpy(zero_copy_only=False), np.float32, "W")
    return values.reshape(len(vectors), -1)


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
        data = load_training_data(job, rank)
        checkpoints = None
        if job.checkpoint_dir:
            checkpoints = Checkpoints(job.checkpoint_dir, _training_fingerprint(job, world, data))
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
