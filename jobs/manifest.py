"""The run manifest: what ran, with which config and model, how many rows went where, how long it took.

Written to ``_runs/<run id>/manifest.json`` when the run starts (status ``running``) and again when it
ends (``succeeded`` or ``failed``); ``manifest.json`` at the output root is replaced only by a run that
succeeded, so a killed run never leaves a manifest claiming success.
"""

from __future__ import annotations

import logging
import platform
import secrets
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

import pyspark

import segrec.jobs
from segrec.jobs.config import Config
from segrec.jobs.io import OutputStore

log = logging.getLogger("segrec")

PROGRESS_SECONDS = 30.0


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunManifest:
    def __init__(self, config: Config, command: str, run_id: str):
        self.data: dict[str, Any] = {
            "run_id": run_id,
            "run_name": config.run.name,
            "command": command,
            "status": "running",
            "started_at": _now(),
            "finished_at": None,
            "segrec_version": segrec.jobs.__version__,
            "spark_version": pyspark.__version__,
            "python_version": platform.python_version(),
            "config": config.redacted(),
            "model": None,
            "sources": {},
            "rejects_by_reason": {},
            "stages": {},
            "outputs": [],
        }
        self.activity = ""  # what the running stage is doing, for its progress lines

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    def record_source(self, name: str, counts: dict[str, Any]) -> None:
        self.data["sources"][name] = counts
        self.data["rejects_by_reason"][name] = dict(counts["rejected_by_reason"])

    def record_stage(self, name: str, **figures: Any) -> None:
        self.data["stages"].setdefault(name, {}).update(figures)

    def record_output(self, name: str) -> None:
        if name not in self.data["outputs"]:
            self.data["outputs"].append(name)

    def doing(self, activity: str) -> None:
        """Say what the running stage is doing now: the next progress line shows it."""
        self.activity = activity
        log.info("%s", activity)

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a stage; the yielded dict collects its row counts. Logs one line when it ends, and one
        every ``PROGRESS_SECONDS`` while it runs (a long Spark job prints nothing of its own)."""
        figures: dict[str, Any] = {}
        started = time.perf_counter()
        self.activity = ""
        finished = threading.Event()

        def progress() -> None:
            while not finished.wait(PROGRESS_SECONDS):
                doing = f": {self.activity}" if self.activity else ""
                log.info("stage %s still running after %.0fs%s", name, time.perf_counter() - started, doing)

        threading.Thread(target=progress, name=f"segrec-progress-{name}", daemon=True).start()
        try:
            yield figures
        finally:
            finished.set()
            seconds = round(time.perf_counter() - started, 3)
            self.record_stage(name, seconds=seconds, **figures)
            shown = " ".join(f"{k}={v}" for k, v in figures.items() if not isinstance(v, (dict, list)))
            log.info("stage %s: %s elapsed=%.1fs", name, shown, seconds)

    def write(self, store: OutputStore, status: str | None = None) -> None:
        if status is not None:
            self.data["status"] = status
            self.data["finished_at"] = _now()
        store.write_json(f"_runs/{self.run_id}/manifest.json", self.data)
        if self.data["status"] == "succeeded":
            store.write_json("manifest.json", self.data)
