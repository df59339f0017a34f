"""What the top-k scorer computes and how, as one value the driver builds and ships to the workers."""

from __future__ import annotations

from dataclasses import dataclass, replace

from segrec.udfs.config_keys import from_config
from segrec.udfs.device import native_bfloat16, task_device, use_task_cpus

PRECISIONS = ("float32", "bfloat16")


def candidate_precision(setting: str, device: str) -> str:
    """The fast pass's precision for ``recommend.precision``'s ``setting`` on ``device``: as set, or for
    ``auto`` bfloat16 on CPUs with native bfloat16, float32 otherwise.
    A GPU's pass is float32 (its products are far from the bottleneck, and cuBLAS may reduce bfloat16
    products in reduced precision, which would void the error bound)."""
    if device != "cpu":
        return "float32"
    if setting == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    return setting


@dataclass(frozen=True)
class TopKSettings:
    """Per user: the ``k`` best unseen items by cosine + ``popularity_weight`` x segment popularity,
    optionally re-ranked by MMR among the best ``mmr_pool`` (``mmr_trade_off`` None: off), each with its
    reason when ``explain`` and its similarity's learned part when ``score_parts`` (trained towers).
    ``device`` (auto | cpu | cuda) and ``precision`` (auto | float32 | bfloat16, the candidate pass's)
    say how; the lists and scores do not depend on them. ``block_mb`` caps one block of user x item
    scores. Plan knobs (broadcast or shards, shard and user-block sizes) are the
    driver's, not these."""

    k: int = from_config("recommend.k")
    popularity_weight: float = from_config("recommend.popularity_weight")
    mmr_trade_off: float | None = from_config("recommend.mmr_trade_off")
    mmr_pool: int = from_config("recommend.mmr_pool")
    explain: bool = from_config("recommend.explain")
    # ``explain`` asks for both halves of an explanation: the reason and the score's parts.
    score_parts: bool = from_config("recommend.explain")
    block_mb: float = from_config("recommend.block_mb")
    device: str = from_config("recommend.device")
    precision: str = from_config("recommend.precision")

    @property
    def mmr(self) -> tuple[float, int] | None:
        """(trade-off, pool) when re-ranking, else None."""
        return None if self.mmr_trade_off is None else (self.mmr_trade_off, self.mmr_pool)

    @property
    def depth(self) -> int:
        """How many best items per user the exact selection keeps: k, or the MMR pool when re-ranking."""
        return max(self.k, self.mmr_pool) if self.mmr else self.k

    def candidates_only(self) -> TopKSettings:
        """The selection alone, ``depth`` deep: what each shard of the sharded plan computes before the
        merge (which re-ranks and finds the reasons); a score's parts need only the shard's items."""
        return replace(self, k=self.depth, mmr_trade_off=None, explain=False)

    def for_this_task(self) -> TopKSettings:
        """``device`` and ``precision`` resolved for the running task (its GPU, this CPU's bfloat16).
        On a CPU, torch's threads are set to the task's cores (``spark.task.cpus``), as the encoder's
        are: an executor runs several scoring tasks side by side, and each one using every core of the
        machine would oversubscribe them."""

        device = task_device(self.device)
        if device == "cpu":
            use_task_cpus()
        return replace(self, device=device, precision=candidate_precision(self.precision, device))
