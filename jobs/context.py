"""What every stage receives: the session, the validated config, the output store and the manifest."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from segrec.jobs.config import Config
from segrec.jobs.io.manifest import RunManifest
from segrec.jobs.io.store import OutputStore
from segrec.jobs.io.tracking import Tracker


@dataclass
class RunContext:
    """What every stage receives: the ``spark`` session, the validated ``config``, the output ``store``,
    the run's ``manifest`` and the MLflow ``tracker``."""

    spark: SparkSession
    config: Config
    store: OutputStore
    manifest: RunManifest
    tracker: Tracker
    # Outputs of `run` that a command may read but never writes (evaluate: vectors to reuse).
    reuse_from: OutputStore | None = None
