"""The two-tower model over frozen text vectors: its layers, its training loop, and applying it.

Item tower: the item's text vector through a residual MLP into the recommendation space, plus a learned
per-item embedding for items with enough training interactions; L2-normalised. During training each
item's embedding is dropped (zeroed) with probability ``id_dropout`` at every step, so the text path
alone stays good for items never seen in training (cold start).

User tower: the weighted mean of the item-tower vectors of the user's history (feedback weight x
``decay`` per step back, the newest ``history`` items), plus a learned projection of the user's own
text vector where there is one; L2-normalised. Score = user . item (cosine).

Objective: every training interaction is a positive to predict from what the user did before it
(``sequential``, where timestamps give an order) or from the user's other interactions
(``order_free``), with a softmax over the catalogue's items that have training interactions at
``temperature`` and a log-popularity correction (logQ: the item's log training frequency subtracted
from its logit, so the towers do not spend their capacity on popularity alone). Above ``negatives``
trainable items, each step's softmax runs over that many items drawn uniformly from them, plus the
batch's targets and history items (mixed negative sampling: the in-batch items are popularity-biased
negatives, which logQ corrects): the item tower then runs on a fixed number of items per step instead
of the whole catalogue, so an epoch costs the same per interaction at any catalogue size.

Everything here takes numpy/torch in and gives numpy/torch out (no Spark driver API): the train stage
runs ``train_process`` under TorchDistributor, and the profile and train stages apply the towers in
pandas UDFs through ``TowerWeights``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from segrec.udfs.config_keys import from_config, resolved
from segrec.udfs.faults import maybe_fail

if TYPE_CHECKING:
    from segrec.udfs.checkpoints import Checkpoints

TEXT_FREE = -1  # a history slot with no item
# A sampled step's candidates are padded to a multiple of this (the padding masked out of the softmax):
# steps then allocate a few tensor sizes instead of a new one each, which the C allocator reuses rather
# than fragmenting (benchmarks/train_scale.py: a process's peak RSS grew over the epoch without it).
CANDIDATE_BLOCK = 256


@dataclass(frozen=True)
class TowerSettings:
    """What decides the towers (and so the trained model's id), shipped whole to every process."""

    dim: int = from_config("train.dim")
    hidden: int = from_config("train.hidden")
    temperature: float = from_config("train.temperature")
    epochs: int = from_config("train.epochs")
    batch_size: int = from_config("train.batch_size")
    learning_rate: float = from_config("train.learning_rate")
    weight_decay: float = from_config("train.weight_decay")
    history: int = from_config("train.history")
    decay: float = from_config("train.decay")
    feedback_weights: bool = from_config("train.feedback_weights")
    id_embeddings: bool = from_config("train.id_embeddings")
    id_min_interactions: int = from_config("train.id_min_interactions")
    id_dropout: float = from_config("train.id_dropout")
    # sequential | order_free | auto (decided on a validation hold-out inside training, ``choose_objective``)
    objective: str = resolved()
    patience: int = from_config("train.patience")  # auto: epochs without a better validation figure
    refit_epochs: int = from_config("train.refit_epochs")  # auto: the winner's epochs on every interaction
    logq: bool = from_config("train.logq")
    mask_history: bool = from_config("train.mask_history")
    negatives: int = from_config("train.negatives")
    user_text: bool = from_config("train.user_text")
    history_map: bool = from_config("train.history_map")
    seed: int = from_config("train.seed")

    def as_dict(self) -> dict:
        """Every field by name: what the model id hashes and towers.json keeps."""
        return asdict(self)


# ------------------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    """Everything one training process needs, as flat arrays.

    item_ids: the catalogue, sorted (position = row of ``item_text``); item_text (n, t) float32;
    item_counts (n,) training interactions per item. Users' histories as one flat array of catalogue
    positions (``flat_items``, oldest first within a user) with their feedback weights, cut by
    ``offsets`` (n_users + 1); user_text (n_users, t) float32 with ``has_text`` (n_users,) bool.
    """

    item_ids: np.ndarray
    item_text: np.ndarray
    item_counts: np.ndarray
    flat_items: np.ndarray
    flat_weights: np.ndarray
    offsets: np.ndarray
    user_text: np.ndarray
    has_text: np.ndarray

    @property
    def n_users(self) -> int:
        """Users with a history (rows of ``offsets`` minus one)."""
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        """(n_users,) the length of each user's history."""
        return np.diff(self.offsets)


def id_rows(item_counts: np.ndarray, settings: TowerSettings) -> np.ndarray:
    """(n,) the row of each catalogue item in the ID-embedding table, from ``item_counts`` (n,) training
    interactions per item: 1.. for items with at least ``settings.id_min_interactions``, 0 (no embedding,
    text path only) for the rest, and 0 for every item without ``settings.id_embeddings``."""
    if not settings.id_embeddings:
        return np.zeros(len(item_counts), np.int64)
    has_id = item_counts >= settings.id_min_interactions
    rows = np.zeros(len(item_counts), np.int64)
    rows[has_id] = np.arange(1, int(has_id.sum()) + 1)
    return rows


def example_positions(data: TrainingData, settings: TowerSettings) -> np.ndarray:
    """Flat positions in ``data`` of the interactions to predict under ``settings.objective``. Sequential: every
    interaction with something before it, and a user's first one where the user has text. Order-free: every
    interaction of a user with at least one other, or with text."""
    lengths = data.lengths()
    user = np.repeat(np.arange(data.n_users), lengths)
    step = np.arange(len(data.flat_items)) - data.offsets[user]
    if settings.objective == "sequential":
        usable = (step >= 1) | data.has_text[user]
    else:
        usable = (lengths[user] >= 2) | data.has_text[user]
    return np.flatnonzero(usable)


def user_of(data: TrainingData, positions: np.ndarray) -> np.ndarray:
    """(len(positions),) the user of each flat position in ``data``'s histories."""
    return np.searchsorted(data.offsets, positions, side="right") - 1


def histories(
    data: TrainingData, positions: np.ndarray, settings: TowerSettings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(items (B, H) catalogue positions or TEXT_FREE, weights (B, H)) of the history of each example at
    flat ``positions`` (B,) in ``data``, H = ``settings.history``: the interactions before it
    (sequential, decayed) or the user's others (order-free, sampled with ``rng``)."""
    h = settings.history
    users = user_of(data, positions)
    start = data.offsets[users]
    if settings.objective == "sequential":
        # The h interactions before the target, newest in the last column.
        flat = positions[:, None] - np.arange(h, 0, -1)[None, :]
        valid = flat >= start[:, None]
        steps_back = np.arange(h - 1, -1, -1)[None, :]
        decay = settings.decay**steps_back
    else:
        # The user's other interactions: all of them when they fit, else h drawn at random.
        length = data.offsets[users + 1] - start
        others = length - 1
        target = positions - start
        fixed = np.broadcast_to(np.arange(h)[None, :], (len(positions), h))
        drawn = (rng.random((len(positions), h)) * np.maximum(others, 1)[:, None]).astype(np.int64)
        j = np.where((others > h)[:, None], drawn, fixed)
        valid = j < others[:, None]
        j = j + (j >= target[:, None])  # skip the target itself
        flat = start[:, None] + j
        decay = np.ones((1, h))
    flat = np.where(valid, flat, 0)
    items = np.where(valid, data.flat_items[flat], TEXT_FREE)
    weights = np.where(valid, data.flat_weights[flat] * decay, 0.0).astype(np.float32)
    return items, weights


def inference_history(items: np.ndarray, weights: np.ndarray, settings: TowerSettings) -> tuple[np.ndarray, np.ndarray]:
    """One user's whole history, ``items`` with their ``weights`` (oldest first) -> the pooling inputs the
    towers were trained with under ``settings``:
    the newest ``history`` items, weighted by feedback x decay per step back (order-free: no decay)."""
    items, weights = items[-settings.history :], weights[-settings.history :]
    if settings.objective == "sequential":
        weights = weights * settings.decay ** np.arange(len(items) - 1, -1, -1)
    return items, weights.astype(np.float32)


# ------------------------------------------------------------------------------------ model


def build_model(text_dim: int, n_ids: int, settings: TowerSettings):
    """The towers as a torch module for text vectors of ``text_dim`` values and ``n_ids`` ID-embedding
    rows, shaped by ``settings`` (torch is imported here so that importing this file needs no torch)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class TwoTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text_skip = nn.Linear(text_dim, settings.dim, bias=False)
            self.text_mlp = nn.Sequential(
                nn.Linear(text_dim, settings.hidden), nn.GELU(), nn.Linear(settings.hidden, settings.dim)
            )
            self.item_id = nn.Embedding(n_ids + 1, settings.dim, padding_idx=0)
            nn.init.normal_(self.item_id.weight, std=0.01)
            with torch.no_grad():
                self.item_id.weight[0].zero_()
            self.user_text = nn.Linear(text_dim, settings.dim, bias=False)
            if settings.history_map:
                # starts as the identity: the pooled history as it is, then learns what to weigh
                self.history_map = nn.Linear(settings.dim, settings.dim, bias=False)
                with torch.no_grad():
                    self.history_map.weight.copy_(torch.eye(settings.dim))

        def items(self, text: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            z = self.text_skip(text) + self.text_mlp(text) + self.item_id(rows)
            return F.normalize(z, dim=-1)

        def users(self, pooled: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
            z = self.history_map(pooled) if settings.history_map else pooled
            if settings.user_text:
                z = z + self.user_text(text) * has_text[:, None]
            return F.normalize(z, dim=-1)

        def forward(self, text, rows, history, weights, user_text, has_text):
            """(user vectors (B, dim), every item's vector (n, dim)) for one batch of examples."""
            vectors = self.items(text, rows)
            return self.users(pool(vectors, history, weights), user_text, has_text), vectors

    return TwoTower()


def pool(item_vectors, items, weights):
    """(B, dim) the ``weights`` (B, H)-weighted mean of ``item_vectors`` (n, dim) at the history positions
    ``items`` (B, H) (torch; TEXT_FREE slots weigh nothing); an empty history pools to zero."""
    import torch
    from torch.nn import functional as F

    valid = items >= 0
    weights = torch.where(valid, weights, 0.0)
    # embedding_bag sums without materialising the (B, H, dim) gather, and its backward is one fused
    # deterministic kernel instead of a scatter-add over every history slot.
    summed = F.embedding_bag(torch.where(valid, items, 0), item_vectors, per_sample_weights=weights, mode="sum")
    return summed / weights.sum(dim=1, keepdim=True).clamp_min(1e-6)


# ---------------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What training returns to the driver: the weights, the loss curve and counts."""

    state: dict  # parameter name -> numpy array
    curve: list[dict] = field(default_factory=list)  # per epoch: loss, seconds
    examples: int = 0
    id_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))  # ids with an embedding, sorted
    peak_rss_mb: float | None = None  # of the training process (rank 0), set by ``train_process``
    resumed_after: int = 0  # epochs a checkpoint held when training started (0: from scratch)
    objective: str = ""  # the objective the weights were trained with (auto: the one validation chose)
    choice: dict = field(default_factory=dict)  # auto: each objective's validation figures, and the users scored

    def seconds(self) -> float:
        """Training time: with ``objective: auto`` the choice's (both objectives' trainings and their
        validation) and the epochs after it; otherwise the epochs'."""
        warm = int(self.choice[self.objective]["epochs"]) if self.choice else 0
        return float(self.choice.get("seconds", 0.0)) + sum(p["seconds"] for p in self.curve if p["epoch"] > warm)


def train(
    data: TrainingData,
    settings: TowerSettings,
    rank: int = 0,
    world: int = 1,
    device: str = "cpu",
    log=print,
    checkpoints: Checkpoints | None = None,
) -> TrainResult:
    """Train the towers on ``data`` as ``settings`` say, ``data`` being this process's share of users
    (process ``rank`` of ``world``; its item counts are over every process's users), on ``device``,
    reporting each epoch through ``log``; with world > 1 the process group must already be
    initialised (gradients are averaged by DistributedDataParallel). With ``checkpoints``,
    training resumes after the epochs a checkpoint of the same training holds, and rank 0 writes one
    after every epoch."""
    import torch

    # The history gather's backward is a scatter-add whose multi-threaded CPU kernel sums in a varying
    # order: deterministic kernels make a re-run give the same model (tests/test_train_stage.py).
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        if settings.objective != "auto":
            result = _train(data, settings, rank, world, device, log, checkpoints)
            result.objective = settings.objective
            return result
        choice = checkpoints.load_choice() if checkpoints is not None else None
        chosen = None  # the winner's state at its best validation epoch (resumed: its checkpoint instead)
        if choice is None:
            choice, chosen = choose_objective(data, settings, rank, world, device, log)
            if checkpoints is not None and rank == 0:
                # The checkpoint first: a choice on disk always has the state the final epochs continue.
                checkpoints.save(chosen["model"], chosen["optimiser"], chosen["epochs"], chosen["curve"])
                checkpoints.save_choice(choice)
        settings = replace(settings, objective=choice["objective"])
        # The winner continues on every interaction (the held-out newest ones included) from its best
        # validation epoch, rather than training again from scratch.
        epochs = int(choice[settings.objective]["epochs"]) + settings.refit_epochs
        result = _train(data, settings, rank, world, device, log, checkpoints, epochs=epochs, start=chosen)
        result.objective, result.choice = settings.objective, choice
        return result
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _train(
    data: TrainingData,
    settings: TowerSettings,
    rank: int,
    world: int,
    device: str,
    log,
    checkpoints: Checkpoints | None,
    *,
    epochs: int | None = None,
    start: dict | None = None,
    rows_np: np.ndarray | None = None,
    after_epoch: Callable | None = None,
) -> TrainResult:
    """The training loop, for ``epochs`` (default ``settings.epochs``) in all, continuing from ``start``
    (a checkpoint's dict kept in memory), else from a checkpoint of this training if any; ``rows_np``
    the ID-embedding rows (default from ``data``'s counts); ``after_epoch(epochs_done, model, optimiser,
    curve)`` called in every process after each epoch, True to stop there."""
    import torch

    epochs = settings.epochs if epochs is None else epochs
    torch.manual_seed(settings.seed)  # the same initial weights in every process
    if rows_np is None:
        rows_np = id_rows(data.item_counts, settings)
    model = build_model(data.item_text.shape[1], int(rows_np.max(initial=0)), settings).to(device)
    trained = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)

    item_text = torch.from_numpy(np.ascontiguousarray(data.item_text, dtype=np.float32)).to(device)
    rows = torch.from_numpy(rows_np).to(device)
    user_text = torch.from_numpy(np.ascontiguousarray(data.user_text, dtype=np.float32)).to(device)
    has_text = torch.from_numpy(data.has_text.astype(np.float32)).to(device)
    frequency = data.item_counts.astype(np.float64) + 1.0
    log_q = np.log(frequency / frequency.sum())
    # Items with no training interaction are left out of the softmax: as negatives only (and with the
    # largest logQ boost) they would teach the text path to push every text like theirs down, which is
    # the opposite of what new items need (tests/test_towers.py, the cold-item test).
    log_q[data.item_counts == 0] = np.inf
    log_q = torch.from_numpy(log_q.astype(np.float32)).to(device)
    trainable = np.flatnonzero(data.item_counts > 0)  # the items the softmax (or its sample) draws from

    mine = example_positions(data, settings)  # this process's users' (its shard of the examples)
    # Every process must take the same number of steps (DDP all-reduces at each one).
    steps = math.ceil(_max_over_processes(len(mine), world) / settings.batch_size)
    first, curve, resumed = 0, [], 0
    saved = start
    if saved is None and checkpoints is not None:
        saved = checkpoints.load()
        resumed = int(saved["epochs"]) if saved is not None else 0
        if saved is not None and rank == 0:
            log(f"train: resumed after epoch {resumed}/{epochs} from a checkpoint of this training")
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        first, curve = int(saved["epochs"]), list(saved["curve"])
    for epoch in range(first, epochs):
        started = time.perf_counter()
        rng = np.random.default_rng([settings.seed, epoch, rank])
        order = mine[rng.permutation(len(mine))] if len(mine) else mine
        if len(order) and len(order) < steps * settings.batch_size:
            order = np.resize(order, steps * settings.batch_size)  # wrap around to the common count
        total, count = 0.0, 0
        for step in range(steps):
            if checkpoints is not None and epoch == max(first, 1) and step == steps // 2:
                maybe_fail("train")  # tests: a process killed mid-epoch, after one checkpoint
            batch = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            loss = _step_loss(
                trained, batch, data, settings, rng, item_text, rows, user_text, has_text, log_q, trainable
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        mean = _mean_over_processes(total, count, world)
        curve.append({"epoch": epoch + 1, "loss": round(mean, 6), "seconds": round(time.perf_counter() - started, 2)})
        if rank == 0:
            log(f"train: epoch {epoch + 1}/{epochs} loss {mean:.4f} ({curve[-1]['seconds']:.1f}s)")
            if checkpoints is not None and epoch + 1 < epochs:
                checkpoints.save(model.state_dict(), optimiser.state_dict(), epoch + 1, curve)
        if after_epoch is not None and after_epoch(epoch + 1, model, optimiser, curve):
            break
    state = {name: tensor.detach().cpu().numpy().copy() for name, tensor in model.state_dict().items()}
    examples = _sum_over_processes(len(mine), world)
    return TrainResult(
        state=state, curve=curve, examples=examples, id_items=data.item_ids[rows_np > 0], resumed_after=resumed
    )


def _step_loss(model, batch, data, settings, rng, item_text, rows, user_text, has_text, log_q, trainable):
    """Softmax cross-entropy of one batch's targets over the catalogue's trainable items, or over a
    sample of them (``settings.negatives``)."""
    import torch
    from torch.nn import functional as F

    if len(batch) == 0:
        # A process with no examples still takes part in the step, with a zero loss.
        return sum((p * 0.0).sum() for p in model.parameters())
    device = item_text.device
    if settings.id_dropout > 0 and settings.id_embeddings:
        rows = rows * torch.from_numpy(rng.random(len(rows)) >= settings.id_dropout).to(device)
    hist, weights = histories(data, batch, settings, rng)
    users = torch.from_numpy(user_of(data, batch)).to(device)
    target = data.flat_items[batch]
    candidates, padding = None, 0
    if settings.negatives and len(trainable) > settings.negatives:
        # The step's candidates: sampled items and every item the batch names, histories re-indexed.
        drawn = trainable[rng.integers(0, len(trainable), settings.negatives)]
        candidates = np.unique(np.concatenate([drawn, target, hist[hist >= 0]]))
        padding = -len(candidates) % CANDIDATE_BLOCK  # their count varies by step (see CANDIDATE_BLOCK)
    elif len(trainable) < len(item_text):
        # Every trainable item, and no other: an item without a training interaction is never a softmax
        # candidate (its logQ is infinite), so its vector would be computed for nothing, and a catalogue
        # of mostly untouched items would cost every step as much as a full one.
        candidates = trainable
    if candidates is not None:
        hist = np.where(hist >= 0, np.searchsorted(candidates, hist), hist)
        target = np.searchsorted(candidates, target)
        chosen = torch.from_numpy(np.concatenate([candidates, np.full(padding, candidates[0])])).to(device)
        item_text, rows, log_q = item_text[chosen], rows[chosen], log_q[chosen]
        if padding:
            log_q[len(candidates) :] = math.inf  # never a candidate
    hist = torch.from_numpy(hist).to(device)
    u, vectors = model(item_text, rows, hist, torch.from_numpy(weights).to(device), user_text[users], has_text[users])
    logits = u @ vectors.T / settings.temperature
    logits = logits - (log_q if settings.logq else torch.where(torch.isinf(log_q), log_q, 0.0))[None, :]
    target = torch.from_numpy(target).to(device)
    if settings.mask_history:
        # Items already in the history are not candidates at recommendation time either.
        valid = hist >= 0
        rows_of = torch.arange(len(batch), device=device)[:, None].expand_as(hist)
        seen = torch.zeros_like(logits, dtype=torch.bool)
        seen[rows_of[valid], hist[valid]] = True
        seen[torch.arange(len(batch), device=device), target] = False
        logits = logits.masked_fill(seen, float("-inf"))
    return F.cross_entropy(logits, target)


def _max_over_processes(value: int, world: int) -> int:
    if world == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def _sum_over_processes(value: int, world: int) -> int:
    if world == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor)
    return int(tensor.item())


def _sum_floats_over_processes(values: list[float], world: int) -> list[float]:
    if world == 1:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _sum_array_over_processes(values: np.ndarray, world: int) -> np.ndarray:
    if world == 1:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.from_numpy(np.ascontiguousarray(values, np.int64))
    dist.all_reduce(tensor)
    return tensor.numpy()


def _mean_over_processes(total: float, count: int, world: int) -> float:
    if world > 1:
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([total, float(count)], dtype=torch.float64)
        dist.all_reduce(tensor)
        total, count = float(tensor[0]), int(tensor[1])
    return total / max(count, 1)


# --------------------------------------------------------------------------- choosing the objective

OBJECTIVES = ("sequential", "order_free")
VALIDATION_USERS = 4096  # users per process whose newest interaction is held out to choose the objective


def choose_objective(
    data: TrainingData, settings: TowerSettings, rank: int = 0, world: int = 1, device: str = "cpu", log=print
) -> tuple[dict, dict]:
    """Which objective predicts each user's newest interaction better on ``data`` (``settings`` with
    ``objective: auto``, where interactions have timestamps), in process ``rank`` of ``world`` on
    ``device``, reporting through ``log``: a seeded sample of users (up to ``VALIDATION_USERS`` per
    process) loses its newest interaction, and the towers are trained on the rest with each objective.
    After every epoch each is scored by NDCG@10 and recall@10 of the held-out items among every trainable
    item, seen items masked, ranked by the very code that places users and items after training
    (``TowerWeights``); an objective stops after ``settings.patience`` epochs without a better NDCG@10, or
    at ``settings.epochs``, and its best epoch is what counts (the sequential objective learns more
    slowly: a fixed, smaller number of epochs would favour the order-free one). The sequential objective
    is chosen only when its NDCG@10 is higher by more than twice the standard error of the per-user
    difference: where the order carries no signal it learns noise.

    Returns (figures, the winner's state at its best epoch as a checkpoint's dict: model, optimiser,
    epochs, curve). Figures: {"objective", "validation_users", "seconds", "<objective>": {"ndcg@10",
    "recall@10", "epochs" (the best), "ndcg@10_by_epoch"}, "sequential_gain": {"ndcg@10",
    "standard_error"}} (over every process's users)."""
    started = time.perf_counter()
    kept, users, held = hold_out_newest(data, settings.seed, rank, world)
    # The ID-embedding rows of the whole data, so that the winner's state fits the model trained on it
    # (an item reaching id_min_interactions only with a held-out interaction has a row, trained on the rest).
    rows = id_rows(data.item_counts, settings)
    figures: dict = {"validation_users": _sum_over_processes(len(users), world)}
    gains, states = {}, {}
    for objective in OBJECTIVES:
        probe = replace(settings, objective=objective)
        best = _BestEpoch(probe, kept, users, held, kept.item_ids[rows > 0], world)
        _train(kept, probe, rank, world, device, lambda _: None, None, rows_np=rows, after_epoch=best)
        gains[objective], states[objective] = best.gains, best.state
        figures[objective] = best.figures()
    # A paired comparison over the same users: the order counts only when its gain is beyond noise
    # (where order carries no signal the two objectives tie, and a tie goes to the simpler one).
    difference = gains["sequential"] - gains["order_free"]
    n, summed, squares = _sum_floats_over_processes(
        [float(len(difference)), float(difference.sum()), float((difference**2).sum())], world
    )
    mean = summed / max(n, 1.0)
    error = math.sqrt(max(squares / max(n, 1.0) - mean**2, 0.0) / max(n, 1.0))
    figures["sequential_gain"] = {"ndcg@10": round(mean, 6), "standard_error": round(error, 6)}
    figures["objective"] = "sequential" if mean > 2 * error else "order_free"
    figures["seconds"] = round(time.perf_counter() - started, 2)
    if rank == 0:
        log(
            f"train: objective auto: sequential NDCG@10 {figures['sequential']['ndcg@10']:.4f} (epoch "
            f"{figures['sequential']['epochs']}), order-free {figures['order_free']['ndcg@10']:.4f} (epoch "
            f"{figures['order_free']['epochs']}) on {figures['validation_users']} users' newest "
            f"interaction: {figures['objective']}"
        )
    return figures, states[figures["objective"]]


class _BestEpoch:
    """Early stopping on the validation hold-out, as ``_train``'s ``after_epoch``: scores the model after
    each epoch (summed over the ``world``'s processes, so every process decides alike), keeps the best
    epoch's per-user gains and a copy of its state, and says stop after ``settings.patience`` epochs
    without a better NDCG@10 (ties keep the earlier epoch)."""

    def __init__(self, settings, data, users, held, id_items, world):
        self.settings, self.world = settings, world
        self.data, self.users, self.held, self.id_items = data, users, held, id_items
        self.by_epoch: list[float] = []
        self.ndcg, self.recall, self.epoch = -1.0, 0.0, 0
        self.gains = np.zeros(0)
        self.state: dict = {}

    def __call__(self, epoch, model, optimiser, curve) -> bool:
        state = {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}
        gains, hits = validation_figures(
            TowerWeights(self.settings, state, self.id_items), self.data, self.users, self.held
        )
        total = _sum_floats_over_processes([float(gains.sum()), float(hits.sum()), float(len(self.users))], self.world)
        count = max(total[2], 1.0)
        ndcg = total[0] / count
        self.by_epoch.append(round(ndcg, 6))
        if ndcg > self.ndcg:
            self.ndcg, self.recall, self.epoch, self.gains = ndcg, total[1] / count, epoch, gains
            # On the CPU: the copy waits while the other objective trains, and must not double the GPU's load.
            self.state = {
                "model": _on_cpu(model.state_dict()),
                "optimiser": _on_cpu(optimiser.state_dict()),
                "epochs": epoch,
                "curve": copy.deepcopy(curve),
            }
        return epoch - self.epoch >= self.settings.patience

    def figures(self) -> dict:
        return {
            "ndcg@10": round(self.ndcg, 6),
            "recall@10": round(self.recall, 6),
            "epochs": self.epoch,
            "ndcg@10_by_epoch": self.by_epoch,
        }


def _on_cpu(value):
    """A copy of ``value`` (a state_dict: nested dicts and lists of tensors and plain values) on the CPU."""
    if isinstance(value, dict):
        return {key: _on_cpu(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_on_cpu(item) for item in value]
    if hasattr(value, "detach"):
        return value.detach().to("cpu", copy=True)
    return copy.deepcopy(value)


def hold_out_newest(
    data: TrainingData, seed: int, rank: int = 0, world: int = 1
) -> tuple[TrainingData, np.ndarray, np.ndarray]:
    """(``data`` without the newest interaction of up to ``VALIDATION_USERS`` users with at least two,
    drawn with ``seed`` and ``rank``, those users, their held-out catalogue positions). Item counts lose
    the held-out interactions of every process of ``world`` (summed), so every process keeps the same
    ID-embedding rows."""
    lengths = data.lengths()
    eligible = np.flatnonzero(lengths >= 2)
    rng = np.random.default_rng([seed, rank, 7])
    users = np.sort(rng.permutation(eligible)[:VALIDATION_USERS])
    newest = data.offsets[users + 1] - 1
    keep = np.ones(len(data.flat_items), bool)
    keep[newest] = False
    new_lengths = lengths.copy()
    new_lengths[users] -= 1
    held_counts = np.bincount(data.flat_items[newest], minlength=len(data.item_ids))
    kept = replace(
        data,
        item_counts=data.item_counts - _sum_array_over_processes(held_counts, world),
        flat_items=data.flat_items[keep],
        flat_weights=data.flat_weights[keep],
        offsets=np.concatenate([[0], np.cumsum(new_lengths)]),
    )
    return kept, users, data.flat_items[newest]


def validation_figures(
    weights: TowerWeights, data: TrainingData, users: np.ndarray, held: np.ndarray, k: int = 10, chunk: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """(NDCG@k, hit@k) per user of ``users`` (rows of ``data``) for their ``held`` (catalogue positions)
    items under the towers' ``weights``, ranked among every trainable item (training count > 0, or the
    held item itself) with the user's history masked, ``chunk`` items at a time; ties go to the lower
    catalogue position, as the recommend stage breaks them by item id."""
    if len(users) == 0:
        return np.zeros(0), np.zeros(0)
    settings = weights.settings
    pooled = np.zeros((len(users), settings.dim))
    seen_rows, seen_items = [], []
    item_vectors = np.zeros((len(data.item_ids), settings.dim), np.float32)
    for start in range(0, len(data.item_ids), chunk):
        stop = start + chunk
        item_vectors[start:stop] = weights.item_vectors(data.item_text[start:stop], data.item_ids[start:stop])
    for row, u in enumerate(users):
        a, b = data.offsets[u], data.offsets[u + 1]
        hist, w = inference_history(data.flat_items[a:b], data.flat_weights[a:b], settings)
        pooled[row] = (item_vectors[hist] * w[:, None]).sum(0) / max(float(w.sum()), 1e-6)
        seen_items.append(data.flat_items[a:b])
        seen_rows.append(np.full(b - a, row))
    text = np.where(data.has_text[users][:, None], data.user_text[users], np.nan)
    vectors = weights.user_vectors(pooled, text)
    candidate = data.item_counts > 0
    candidate[held] = True
    target = np.einsum("ij,ij->i", vectors, item_vectors[held])
    ahead = np.zeros(len(users), np.int64)  # candidates ranked before the held item
    rows, cols = np.concatenate(seen_rows), np.concatenate(seen_items)
    for start in range(0, len(data.item_ids), chunk):
        stop = min(start + chunk, len(data.item_ids))
        scores = vectors @ item_vectors[start:stop].T
        scores[:, ~candidate[start:stop]] = -np.inf
        inside = (cols >= start) & (cols < stop)
        scores[rows[inside], cols[inside] - start] = -np.inf
        position = np.arange(start, stop)[None, :]
        before = (scores > target[:, None]) | ((scores == target[:, None]) & (position < held[:, None]))
        ahead += before.sum(axis=1)
    hit = ahead < k
    return hit / np.log2(ahead + 2.0), hit.astype(np.float64)


# ----------------------------------------------------------------------------------- applying


@dataclass(frozen=True)
class TowerWeights:
    """A trained model's weights as numpy arrays, with what is needed to apply them in a worker:
    the settings, and the ids of the items that have a learned embedding (sorted; row i+1)."""

    settings: TowerSettings
    state: dict
    id_items: np.ndarray

    def item_vectors(self, text: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """(n, dim) float32 unit vectors for items with these ``text`` vectors (n, t) and ``item_ids`` (an id without a
        learned embedding, a cold item, goes through the text path alone)."""
        return self.item_parts(text, item_ids)[0]

    def item_parts(self, text: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For items with these ``text`` vectors (n, t) and ``item_ids``: (unit vectors (n, dim), their
        learned parts (n, dim), which items have a learned embedding (n,)). A vector is
        (text path + learned embedding) / its norm, so vector = text part + learned part with both
        divided by that one norm, and a user's score u . vector splits the same way: u . learned part
        is what the item's interactions added to its text. The learned part is 0 for a cold item."""
        s = self.state
        x = np.asarray(text, np.float32)
        hidden = _gelu(x @ s["text_mlp.0.weight"].T + s["text_mlp.0.bias"])
        z = x @ s["text_skip.weight"].T + hidden @ s["text_mlp.2.weight"].T + s["text_mlp.2.bias"]
        learned = np.zeros_like(z)
        found = np.zeros(len(z), dtype=bool)
        if len(self.id_items):
            at = np.searchsorted(self.id_items, item_ids)
            at = np.minimum(at, len(self.id_items) - 1)
            found = self.id_items[at] == item_ids
            learned = np.where(found[:, None], s["item_id.weight"][at + 1], 0.0)
        z = z + learned
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        scale = np.where(norm > 1e-12, 1.0 / np.maximum(norm, 1e-12), 0.0)
        return (z * scale).astype(np.float32), (learned * scale).astype(np.float32), found

    def user_vectors(self, pooled: np.ndarray, text: np.ndarray | None) -> np.ndarray:
        """(n, dim) unit vectors from pooled history vectors (zeros when none) and the user's text
        vector (None or NaN rows: no text); an all-zero result (no signal) stays zero."""
        z = np.asarray(pooled, np.float64)
        if self.settings.history_map:
            z = z @ self.state["history_map.weight"].T.astype(np.float64)
        if self.settings.user_text and text is not None:
            t = np.nan_to_num(np.asarray(text, np.float64), nan=0.0)
            z = z + t @ self.state["user_text.weight"].T.astype(np.float64)
        return _normalise(z)


def _gelu(x: np.ndarray) -> np.ndarray:
    # torch's default GELU (the exact erf form)
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _normalise(z: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return np.where(norm > 1e-12, z / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
