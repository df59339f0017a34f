"""Runs stages in order for one command, with the manifest written at the start and at the end."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession

from segrec.jobs.config import Config
from segrec.jobs.context import RunContext
from segrec.jobs.errors import UnknownCommandError
from segrec.jobs.io.manifest import RunManifest, new_run_id
from segrec.jobs.io.output_safety import check_locations
from segrec.jobs.io.store import OutputStore
from segrec.jobs.io.tracking import Tracker
from segrec.jobs.stages import audience, embed, evaluate, profile, recommend, segment, train, validate

log = logging.getLogger("segrec")

# Every stage, in pipeline order.
STAGES: dict[str, Callable[[RunContext], Any]] = {
    "validate": validate.run,
    "embed": embed.run,
    "train": train.run,
    "profile": profile.run,
    "segment": segment.run,
    "recommend": recommend.run,
    "audience": audience.run,
    "evaluate": evaluate.run,
}

EVALUATION_DIR = "evaluation"

# Every dataset a run can write under output.path (or as a catalog table).
DATASETS = (
    "items",
    "users",
    "suppressions",
    "interactions",
    "rejects",
    "item_vectors",
    "text_vectors",
    "trained_item_vectors",
    "user_vectors",
    "segments",
    "segment_summary",
    "segment_transitions",
    "user_interests",
    "recommendations",
    "audiences",
    "audience_summary",
    "audience_segments",
)

# The stage that writes each dataset and model under output.path: what to re-run when one is damaged.
WRITTEN_BY = {
    **dict.fromkeys(("items", "users", "suppressions", "interactions", "rejects"), "validate"),
    **dict.fromkeys(("item_vectors", "text_vectors"), "embed"),
    **dict.fromkeys(("towers", "trained_item_vectors", "als_user_factors", "als_item_factors"), "train"),
    "user_vectors": "profile",
    **dict.fromkeys(
        ("segments", "segment_summary", "segment_transitions", "user_interests", "segment_model", "segment_report"),
        "segment",
    ),
    "recommendations": "recommend",
    **dict.fromkeys(("audiences", "audience_summary", "audience_segments"), "audience"),
    EVALUATION_DIR: "evaluate",
}

# evaluate rebuilds profiles, segments and lists itself (on training rows only), but reads the validated
# inputs and the text vectors: it runs validate and embed first (embed is incremental, so texts
# embedded by an earlier run are not embedded again).
EVALUATE_NEEDS = ["validate", "embed"]


def stages_for(command: str, config: Config | None = None) -> list[str]:
    """The stages ``command`` runs, in order: for ``run`` every stage but evaluate, and audience only when
    ``config`` gives audience requests; evaluate with what it reads; else the stage alone."""
    if command == "run":
        wanted = config is not None and config.audience.requests is not None
        return [name for name in STAGES if name != "evaluate" and (name != "audience" or wanted)]
    if command not in STAGES:
        raise UnknownCommandError(f"unknown command '{command}' (one of run, {', '.join(STAGES)})")
    if command == "evaluate":
        return EVALUATE_NEEDS + [command]
    return [command]


def evaluation_output(config: Config):
    """Where evaluate writes for ``config``: files under ``<output.path>/evaluation`` whatever the output format."""
    return config.output.model_copy(
        update={"path": f"{config.output.path.rstrip('/')}/{EVALUATION_DIR}", "format": "parquet", "run_date": None}
    )


def execute(spark: SparkSession, config: Config, command: str) -> RunManifest:
    """Run ``command`` (one stage, or ``run`` for the whole pipeline) with ``spark`` and ``config`` and return
    its manifest."""
    names = stages_for(command, config)
    check_locations(config, list(DATASETS))  # before anything is written
    run_id = config.run.id or new_run_id()
    store = OutputStore(spark, config.output, run_id)
    reuse_from = None
    if command == "evaluate":
        # evaluate writes only under <output>/evaluation/ (its validated inputs, vectors, scratch,
        # manifest and report): the outputs of `run` are read (vectors reused), never replaced.
        reuse_from = store
        store = OutputStore(spark, evaluation_output(config), run_id)
    manifest = RunManifest(config, command, run_id)
    manifest.output_path = store.root
    tracker = Tracker(config.mlflow, run_id, command)  # a config error (mlflow required, missing) before any write
    ctx = RunContext(spark=spark, config=config, store=store, manifest=manifest, tracker=tracker, reuse_from=reuse_from)
    manifest.write(store)
    try:
        if {"train", "segment", "evaluate"} & set(names):  # the stages that log to MLflow
            tracker.log_params(config.redacted())
        for name in names:
            manifest.current_stage = name
            STAGES[name](ctx)
    except BaseException as exc:
        tracker.finish(succeeded=False)
        # What an on-call engineer needs first: which stage, what kind of error, its message.
        manifest.error = {
            "stage": manifest.current_stage or "",
            "class": type(exc).__name__,
            "message": str(exc).splitlines()[0][:2000] if str(exc) else "",
        }
        manifest.write(store, status="failed")
        raise
    manifest.data.pop("current_stage", None)  # finished: no stage is current
    tracker.finish(succeeded=True)
    if tracker.run_id:
        manifest.mlflow_run_id = tracker.run_id
    manifest.write(store, status="succeeded")
    return manifest
