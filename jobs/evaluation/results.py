"""What ``evaluate`` measured, as typed values from the stage to the report, the manifest and the plots.

``EvaluationResult`` is what ``metrics.json`` holds (``to_json``); every model in it appears in every
table and plot of the report (``model_names``): a model is never dropped for lacking a place in a list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# {k: {metric: value}}: ranking metrics (precision, recall, ndcg, hit_rate, ...) at each cut-off.
Ranking = dict[int, dict[str, float]]

# Our models, in the order the report shows them after the baselines.
OURS = ("content", "hybrid", "trained")


@dataclass
class ModelResult:
    """One model's figures on the held-out rows: ``ranking`` metrics of the warm users, ``lists`` (beyond
    accuracy, {k: {metric: value}}), and the slices: ``cold_users``, ``long_tail`` and ``cold_items`` (rows
    in full lists), ``new_users`` (the new-user protocol, when on) and ``cold_items_only`` (ranked among the
    cold items alone; None for a model with no score for an item without interactions)."""

    ranking: Ranking
    lists: dict[int, dict[str, Any]]
    cold_users: Ranking
    long_tail: Ranking
    cold_items: Ranking
    new_users: Ranking | None = None
    cold_items_only: Ranking | None = None

    def at(self, k: int, metric: str) -> float:
        """The ranking ``metric`` at cut-off ``k``."""
        return self.ranking[k][metric]


@dataclass
class Split:
    """How the rows were held out: ``holdout_per_user`` rows per user chosen ``holdout_by`` time or a seeded
    hash; ``train_rows``, ``held_out_rows`` and ``users_evaluated`` counted; with ``evaluate.sample_users``,
    ``sample_users`` and ``users_with_held_out_rows``; with ``evaluate.cold_item_share``, ``cold_item_share``
    and ``training_rows_of_new_items_removed``."""

    train_rows: int
    held_out_rows: int
    users_evaluated: int
    holdout_per_user: int
    holdout_by: str
    sample_users: float | None = None
    users_with_held_out_rows: int | None = None
    cold_item_share: float | None = None
    training_rows_of_new_items_removed: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The split as metrics.json holds it (optional figures only where measured)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class EvaluationResult:
    """One evaluate run: ``run_id``, the ``split``, ``tuning`` (each model's validation grid and the cell
    chosen), ``slices`` (the sizes of each slice), ``segments`` (quality, stability and targeting of the
    chosen segments), ``models`` (name -> figures), ``audiences`` (audience precision and lift by
    method), and the ``seconds`` it took. ``baselines`` lists the
    baselines' names in the order they were registered (``evaluation.baselines.BASELINES``)."""

    run_id: str
    split: Split
    tuning: dict[str, Any]
    slices: dict[str, Any]
    segments: dict[str, Any]
    models: dict[str, ModelResult]
    seconds: float
    baselines: list[str] = field(default_factory=list)
    audiences: dict[str, Any] = field(default_factory=dict)  # evaluation.audience_quality.audience_report

    def model_names(self) -> list[str]:
        """Every model measured, for tables and plots: the baselines in registration order, then ours,
        then any other model in the order it was added."""
        ordered = [name for name in [*self.baselines, *OURS] if name in self.models]
        return ordered + [name for name in self.models if name not in ordered]

    def strongest_baseline(self, k: int, metric: str = "ndcg") -> str | None:
        """The baseline with the highest ``metric`` at ``k`` (ties: the first registered), or None."""
        measured = [name for name in self.baselines if name in self.models]
        if not measured:
            return None
        return max(measured, key=lambda name: self.models[name].at(k, metric))

    def to_json(self) -> dict[str, Any]:
        """What metrics.json holds: the run's figures as plain JSON values, models in report order."""
        return {
            "run_id": self.run_id,
            "split": self.split.to_json(),
            "tuning": self.tuning,
            "slices": self.slices,
            "segments": self.segments,
            "models": {
                name: {key: value for key, value in asdict(self.models[name]).items() if value is not None}
                for name in self.model_names()
            },
            "audiences": self.audiences,
            "seconds": self.seconds,
        }
