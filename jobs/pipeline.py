"""Runs stages in order for one command, with the manifest written at the start and at the end."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession

from jobs import embed, evaluate, profile, recommend, segment, train, validate
from jobs.config import Config
from jobs.context import RunContext
from jobs.errors import StageNotBuiltError
from jobs.io import OutputStore
from jobs.manifest import RunManifest, new_run_id

log = logging.getLogger("segrec")

# Every stage of the design, in pipeline order; None marks a stage this version does not have yet.
STAGES: dict[str, Callable[[RunContext], Any] | None] = {
    "validate": validate.run,
    "embed": embed.run,
    "train": train.run,
    "profile": profile.run,
    "segment": segment.run,
    "recommend": recommend.run,
    "evaluate": evaluate.run,
}

# evaluate rebuilds profiles, segments and lists itself (on training rows only), but reads the validated
# inputs and the text vectors: it runs validate and embed first (embed is incremental, so texts
# embedded by an earlier run are not embedded again).
EVALUATE_NEEDS = ["validate", "embed"]


def stages_for(command: str) -> list[str]:
    if command == "run":
        return [name for name, fn in STAGES.items() if fn is not None and name != "evaluate"]
    if command not in STAGES:
        raise StageNotBuiltError(f"unknown command '{command}'")
    if STAGES[command] is None:
        raise StageNotBuiltError(f"stage '{command}' is not built yet in this version of segrec")
    if command == "evaluate":
        return EVALUATE_NEEDS + [command]
    return [command]


def execute(spark: SparkSession, config: Config, command: str) -> RunManifest:
    """Run ``command`` (one stage, or ``run`` for the whole pipeline) and return its manifest."""
    names = stages_for(command)
    run_id = config.run.id or new_run_id()
    store = OutputStore(spark, config.output, run_id)
    manifest = RunManifest(config, command, run_id)
    ctx = RunContext(spark=spark, config=config, store=store, manifest=manifest)
    if command == "run":
        missing = [n for n, fn in STAGES.items() if fn is None]
        if missing:
            log.info("stages not available in this version yet: %s", ", ".join(missing))
    manifest.write(store)
    try:
        for name in names:
            STAGES[name](ctx)  # type: ignore[misc]
    except BaseException:
        manifest.write(store, status="failed")
        raise
    manifest.write(store, status="succeeded")
    return manifest
