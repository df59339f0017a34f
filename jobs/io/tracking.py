"""MLflow tracking: one MLflow run per segrec command, which train, segment and evaluate log into.

Through ``MlflowClient`` with an explicit tracking URI and run id, never mlflow's process-wide active
run: a notebook's own MLflow run (or another segrec command in the same session) is left alone.
Off unless a tracking URI is known (``mlflow.tracking_uri``, ``MLFLOW_TRACKING_URI``, or the
workspace's own on Databricks) and mlflow is installed; ``mlflow.enabled: true`` makes it required.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from segrec.jobs.config import Mlflow
from segrec.jobs.errors import ConfigError

log = logging.getLogger("segrec")

# MLflow caps a param value at 6,000 characters and a batch at 100 params / 1,000 metrics.
_PARAM_CHARS = 6000
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000


def tracking_uri(settings: Mlflow) -> str | None:
    """The URI ``settings`` configure, else MLFLOW_TRACKING_URI, else ``databricks`` inside a Databricks runtime."""
    if settings.tracking_uri:
        return settings.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return "databricks"
    return None


def _mlflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None


class Tracker:
    """Logs to one MLflow run, started on first use and ended by :meth:`finish`. Every method is a
    no-op when tracking is off, so stages call it unconditionally."""

    def __init__(self, settings: Mlflow, run_id: str, command: str):
        self.settings = settings
        self.segrec_run_id = run_id
        self.command = command
        self.uri = tracking_uri(settings)
        self.enabled = self._decide()
        self.run_id: str | None = None  # MLflow's id of the run, once started
        self._client: Any = None  # an MlflowClient once started (mlflow is optional)

    def _decide(self) -> bool:
        wanted = self.settings.enabled
        if wanted is False:
            return False
        installed = _mlflow_installed()
        if wanted is True and not installed:
            raise ConfigError(
                "mlflow.enabled is true but mlflow is not installed: pip install 'segrec[mlflow]' "
                "(or set mlflow.enabled: auto)"
            )
        if wanted == "auto":
            if self.uri is None:
                return False
            if not installed:
                log.warning(
                    "an MLflow tracking URI is set (%s) but mlflow is not installed: nothing is logged to "
                    "MLflow (pip install 'segrec[mlflow]')",
                    self.uri,
                )
                return False
        return True

    # --------------------------------------------------------------------------------- the run

    def _run(self) -> str:
        if self.run_id is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            name = experiment_name(self.settings.experiment, self.uri)
            experiment = self._client.get_experiment_by_name(name)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self._client.create_experiment(name, artifact_location=self.settings.artifact_location)
            )
            run = self._client.create_run(
                experiment_id,
                run_name=self.segrec_run_id,
                tags={"segrec.run_id": self.segrec_run_id, "segrec.command": self.command},
            )
            self.run_id = run.info.run_id
            log.info(
                "MLflow: logging to run %s of experiment %s at %s",
                self.run_id,
                self.settings.experiment,
                self._client.tracking_uri,
            )
        return self.run_id

    def finish(self, succeeded: bool) -> None:
        """End the MLflow run (if one was started) as FINISHED or FAILED, as ``succeeded`` says."""
        if self.run_id is None:
            return
        try:
            with self._guard("end the run"):
                self._client.set_terminated(self.run_id, status="FINISHED" if succeeded else "FAILED")
        except Exception:
            if succeeded:
                raise
            # The command is failing already: its own error is the one to report.
            log.warning("MLflow: run %s could not be marked FAILED", self.run_id, exc_info=True)

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """A tracking server that fails (unreachable, refusing) stops the command only when tracking
        was required (``mlflow.enabled: true``); under ``auto`` it is a warning and tracking stops."""
        try:
            yield
        except Exception as exc:
            if self.settings.enabled is True:
                raise
            log.warning(
                "MLflow: could not %s at %s (%s: %s): nothing more is logged to MLflow in this run",
                what,
                self.uri,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            self.enabled = False

    # ---------------------------------------------------------------------------------- logging

    def log_params(self, params: dict[str, Any], prefix: str = "") -> None:
        """Log ``params`` flattened (``train.dim``, under ``prefix``), each value as text within MLflow's
        length limit."""
        if not self.enabled:
            return
        from mlflow.entities import Param

        flat = flatten(params, prefix)
        items = [Param(key, _text(value)[:_PARAM_CHARS]) for key, value in sorted(flat.items())]
        with self._guard("log parameters"):
            run = self._run()
            for start in range(0, len(items), _PARAMS_PER_BATCH):
                self._client.log_batch(run, params=items[start : start + _PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, Any], step: int = 0) -> None:
        """Log ``metrics`` (at ``step``), finite numbers only (MLflow refuses NaN on some stores; None means
        no value)."""
        if not self.enabled:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(key, float(value), now, step)
            for key, value in sorted(metrics.items())
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ]
        with self._guard("log metrics"):
            run = self._run()
            for start in range(0, len(items), _METRICS_PER_BATCH):
                self._client.log_batch(run, metrics=items[start : start + _METRICS_PER_BATCH])

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        """Log every file under ``local_dir`` as artifacts (under ``artifact_path``) when tracking is on."""
        if self.enabled:
            with self._guard("log artifacts"):
                run = self._run()
                self._client.log_artifacts(run, local_dir, artifact_path)

    def log_files(self, files: dict[str, bytes], artifact_path: str | None) -> None:
        """Log ``files`` given as bytes (read from the output store, wherever it lives) under ``artifact_path``."""
        if not self.enabled:
            return
        with tempfile.TemporaryDirectory(prefix="segrec-mlflow-") as local:
            for name, data in files.items():
                with open(os.path.join(local, name), "wb") as fh:
                    fh.write(data)
            self.log_artifacts(local, artifact_path)

    def log_json(self, payload: Any, artifact_file: str) -> None:
        """Log ``payload`` as the JSON artifact ``artifact_file`` when tracking is on."""
        if self.enabled:
            folder, _, name = artifact_file.rpartition("/")
            self.log_files({name: json.dumps(payload, indent=2, default=str).encode("utf-8")}, folder or None)


def experiment_name(name: str, uri: str | None) -> str:
    """The experiment ``name`` for the tracking ``uri``: on Databricks an experiment is a workspace path, so a
    bare name goes under /Shared."""
    if uri and uri.startswith("databricks") and not name.startswith("/"):
        return f"/Shared/{name}"
    return name


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings of ``data`` as dotted keys under ``prefix``: {"train": {"dim": 8}} -> {"train.dim": 8}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
