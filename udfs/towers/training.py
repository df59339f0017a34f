"""The training loop: sampled softmax with logQ, one epoch after another until validation stops improving,
and the choice between the sequential and the order-free objective."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from segrec.udfs.faults import maybe_fail

if TYPE_CHECKING:
    from segrec.udfs.towers.checkpoints import Checkpoints
from segrec.udfs.towers.data import TrainingData, example_positions, histories, id_rows, user_of
from segrec.udfs.towers.distributed import (
    max_over_processes,
    mean_over_processes,
    sum_floats_over_processes,
    sum_over_processes,
)
from segrec.udfs.towers.model import build_model
from segrec.udfs.towers.settings import TowerSettings
from segrec.udfs.towers.validation import BestEpoch, hold_out_newest

# A sampled step's candidates are padded to a multiple of this (the padding masked out of the softmax):
# steps then allocate a few tensor sizes instead of a new one each, which the C allocator reuses rather
# than fragmenting (benchmarks/train_scale.py: a process's peak RSS grew over the epoch without it).
CANDIDATE_BLOCK = 256


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
    steps = math.ceil(max_over_processes(len(mine), world) / settings.batch_size)
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
        mean = mean_over_processes(total, count, world)
        curve.append({"epoch": epoch + 1, "loss": round(mean, 6), "seconds": round(time.perf_counter() - started, 2)})
        if rank == 0:
            log(f"train: epoch {epoch + 1}/{epochs} loss {mean:.4f} ({curve[-1]['seconds']:.1f}s)")
            if checkpoints is not None and epoch + 1 < epochs:
                checkpoints.save(model.state_dict(), optimiser.state_dict(), epoch + 1, curve)
        if after_epoch is not None and after_epoch(epoch + 1, model, optimiser, curve):
            break
    state = {name: tensor.detach().cpu().numpy().copy() for name, tensor in model.state_dict().items()}
    examples = sum_over_processes(len(mine), world)
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
    history = torch.from_numpy(hist).to(device)
    u, vectors = model(
        item_text, rows, history, torch.from_numpy(weights).to(device), user_text[users], has_text[users]
    )
    logits = u @ vectors.T / settings.temperature
    logits = logits - (log_q if settings.logq else torch.where(torch.isinf(log_q), log_q, 0.0))[None, :]
    targets = torch.from_numpy(target).to(device)
    if settings.mask_history:
        # Items already in the history are not candidates at recommendation time either.
        valid = history >= 0
        rows_of = torch.arange(len(batch), device=device)[:, None].expand_as(history)
        seen = torch.zeros_like(logits, dtype=torch.bool)
        seen[rows_of[valid], history[valid]] = True
        seen[torch.arange(len(batch), device=device), targets] = False
        logits = logits.masked_fill(seen, float("-inf"))
    return F.cross_entropy(logits, targets)


OBJECTIVES = ("sequential", "order_free")


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
    figures: dict = {"validation_users": sum_over_processes(len(users), world)}
    gains, states = {}, {}
    for objective in OBJECTIVES:
        probe = replace(settings, objective=objective)
        best = BestEpoch(probe, kept, users, held, kept.item_ids[rows > 0], world)
        _train(kept, probe, rank, world, device, lambda _: None, None, rows_np=rows, after_epoch=best)
        gains[objective], states[objective] = best.gains, best.state
        figures[objective] = best.figures()
    # A paired comparison over the same users: the order counts only when its gain is beyond noise
    # (where order carries no signal the two objectives tie, and a tie goes to the simpler one).
    difference = gains["sequential"] - gains["order_free"]
    n, summed, squares = sum_floats_over_processes(
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
