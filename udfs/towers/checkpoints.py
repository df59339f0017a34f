"""Per-epoch checkpoints of the two-tower training, so a re-run after a crash resumes where it stopped.

Rank 0 writes one file after every epoch: the model's and the optimiser's state, the epochs done and
the loss curve so far. It is named by a fingerprint of everything that decides the training (the
settings, the number of processes, and every example array), so a re-run resumes only from a
checkpoint of the same training; one of other settings or other data is ignored and replaced. Each
epoch's random draws are seeded by (seed, epoch, rank), and the kernels are deterministic, so a
resumed training ends with the very weights an uninterrupted one would have.

Files are written to a temporary name and renamed into place, so a process killed while writing
leaves the previous epoch's checkpoint whole. They are read with ``torch.load(weights_only=True)``:
tensors and plain containers only, nothing unpickled that could run code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from segrec.udfs.towers.data import TrainingData
from segrec.udfs.towers.settings import TowerSettings


def fingerprint(settings: TowerSettings, world: int, data: TrainingData) -> str:
    """A hex digest of the training's ``settings``, its ``world`` size and every array of ``data``."""
    digest = hashlib.sha256(json.dumps({"settings": settings.as_dict(), "world": world}, sort_keys=True).encode())
    digest.update("\x1f".join(data.item_ids.tolist()).encode())
    for array in (
        data.item_text,
        data.item_counts,
        data.flat_items,
        data.flat_weights,
        data.offsets,
        data.user_text,
        data.has_text,
    ):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class Checkpoints:
    """Where a training keeps its checkpoint: ``directory`` (shared by every process), one file for the
    training whose fingerprint is ``key``."""

    directory: str
    key: str

    @property
    def path(self) -> str:
        """The checkpoint file of this training."""
        return os.path.join(self.directory, f"towers-{self.key}.pt")

    def load(self) -> dict[str, Any] | None:
        """The newest checkpoint of this training (model, optimiser, epochs, curve), or None."""
        import torch

        if not os.path.isfile(self.path):
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    @property
    def choice_path(self) -> str:
        """The file keeping what ``objective: auto`` chose for this training, so a resumed one does not
        choose again."""
        return os.path.join(self.directory, f"choice-{self.key}.json")

    def load_choice(self) -> dict | None:
        """What validation chose for this training (``towers.choose_objective``'s figures), or None."""
        if not os.path.isfile(self.choice_path):
            return None
        with open(self.choice_path, encoding="utf-8") as fh:
            return json.load(fh)

    def save_choice(self, choice: dict) -> None:
        """Keep ``choice`` (written to a temporary name and renamed: never half a file)."""
        os.makedirs(self.directory, exist_ok=True)
        partial = f"{self.choice_path}.{os.getpid()}.partial"
        with open(partial, "w", encoding="utf-8") as fh:
            json.dump(choice, fh)
        os.replace(partial, self.choice_path)

    def save(self, model_state: dict, optimiser_state: dict, epochs: int, curve: list[dict]) -> None:
        """Replace the checkpoint with the state after ``epochs`` epochs (``model_state`` and
        ``optimiser_state`` as their state_dict()s, ``curve`` the loss per epoch so far), and remove
        checkpoints of other trainings in the directory."""
        import torch

        os.makedirs(self.directory, exist_ok=True)
        partial = f"{self.path}.{os.getpid()}.partial"
        torch.save({"model": model_state, "optimiser": optimiser_state, "epochs": epochs, "curve": curve}, partial)
        os.replace(partial, self.path)  # atomic on one file system: never a half-written checkpoint
        for name in os.listdir(self.directory):
            if name.startswith("towers-") and name != os.path.basename(self.path) and name.endswith(".pt"):
                os.remove(os.path.join(self.directory, name))
