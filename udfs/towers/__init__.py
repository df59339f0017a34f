"""The two-tower model over frozen text vectors, one module per part: ``settings``, ``data`` (interactions as
arrays, histories), ``model`` (layers; numpy inference), ``training`` (the loop and the objective's choice),
``validation`` (hold-out, early stopping), ``distributed`` (all-reduces), ``checkpoints`` and ``process`` (one
training process as TorchDistributor starts it).

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
runs ``process.train_process`` under TorchDistributor, and the profile and train stages apply the towers in
pandas UDFs through ``TowerWeights``.
"""

from segrec.udfs.towers.data import TrainingData, example_positions, histories, id_rows, inference_history
from segrec.udfs.towers.model import TowerWeights, build_model, pool
from segrec.udfs.towers.settings import TEXT_FREE, TowerSettings
from segrec.udfs.towers.training import OBJECTIVES, TrainResult, choose_objective, train
from segrec.udfs.towers.validation import hold_out_newest, validation_figures

__all__ = [
    "OBJECTIVES",
    "TEXT_FREE",
    "TowerSettings",
    "TowerWeights",
    "TrainResult",
    "TrainingData",
    "build_model",
    "choose_objective",
    "example_positions",
    "histories",
    "hold_out_newest",
    "id_rows",
    "inference_history",
    "pool",
    "train",
    "validation_figures",
]
