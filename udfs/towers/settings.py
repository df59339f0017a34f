"""What shapes the two-tower model and its training, as one value the driver builds and ships to the workers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from segrec.udfs.config_keys import from_config, resolved

if TYPE_CHECKING:
    pass


TEXT_FREE = -1  # a history slot with no item


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
