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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar, overload

import pyspark

import segrec.jobs
from segrec.jobs.config import Config
from segrec.jobs.io.store import OutputStore

log = logging.getLogger("segrec")

PROGRESS_SECONDS = 30.0


def new_run_id() -> str:
    """A run id: the UTC time to the second, then a random suffix (two runs in one second differ)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


T = TypeVar("T")


class Entry(Generic[T]):
    """One key of manifest.json, read and written as an attribute of the manifest (None until set).

    The keys that stages fill and the CLI, notebooks and schedulers read are declared once, below, with
    their types: a misspelt name is an AttributeError, not a key nobody reads.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    @overload
    def __get__(self, manifest: None, owner: type) -> Entry[T]: ...
    @overload
    def __get__(self, manifest: RunManifest, owner: type) -> T | None: ...

    def __get__(self, manifest, owner=None):
        return self if manifest is None else manifest.data.get(self.key)

    def __set__(self, manifest: RunManifest, value: T | None) -> None:
        manifest.data[self.key] = value


class Filled(Entry[T]):
    """A key every manifest holds (a mapping or list, empty until a stage fills it): never None."""

    def __init__(self, empty: Callable[[], T]) -> None:
        self.empty = empty

    @overload
    def __get__(self, manifest: None, owner: type) -> Filled[T]: ...
    @overload
    def __get__(self, manifest: RunManifest, owner: type) -> T: ...

    def __get__(self, manifest, owner=None):
        return self if manifest is None else manifest.data.setdefault(self.key, self.empty())


class RunManifest:
    """The run's manifest.json as an object: ``data`` is the document, the attributes below its keys."""

    __slots__ = ("data", "activity")

    run_id: Entry[str] = Entry()
    command: Entry[str] = Entry()
    status: Entry[str] = Entry()  # running | succeeded | failed
    output_path: Entry[str] = Entry()
    current_stage: Entry[str] = Entry()  # while a stage runs
    error: Entry[dict[str, str]] = Entry()  # stage, class, message of a failed run
    mlflow_run_id: Entry[str] = Entry()
    # source -> rows_in, kept, rejected, rejected_by_reason
    sources: Filled[dict[str, dict[str, Any]]] = Filled(dict)
    rejects_by_reason: Filled[dict[str, dict[str, int]]] = Filled(dict)
    # stage -> its figures (seconds, counts, what it chose); read one with ``stage_figures``
    stages: Filled[dict[str, dict[str, Any]]] = Filled(dict)
    outputs: Filled[list[str]] = Filled(list)
    model: Entry[dict[str, str]] = Entry()  # the text model: name, path, files_sha256, model_id (embed)
    train_curve: Entry[list[dict[str, float]]] = Entry()  # loss per epoch (train)
    segments: Entry[list[dict[str, Any]]] = Entry()  # one row per segment of segment_summary (segment)
    sample_recommendations: Entry[list[dict[str, Any]]] = Entry()  # the first users' lists with reasons (recommend)
    evaluation_table: Entry[str] = Entry()  # the models side by side, as text (evaluate)
    evaluation_ratios: Entry[list[str]] = Entry()  # ours against each baseline, one line each (evaluate)

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

    def stage_figures(self, name: str) -> dict[str, Any]:
        """Stage ``name``'s figures ({} when it has not run)."""
        return self.data["stages"].get(name, {})

    def record_source(self, name: str, counts: dict[str, Any]) -> None:
        """Record source ``name``'s row ``counts`` (rows in, kept, rejected by reason)."""
        self.data["sources"][name] = counts
        self.data["rejects_by_reason"][name] = dict(counts["rejected_by_reason"])

    def record_stage(self, name: str, **figures: Any) -> None:
        """Add ``figures`` to stage ``name``'s entry."""
        self.data["stages"].setdefault(name, {}).update(figures)

    def record_output(self, name: str) -> None:
        """Record that dataset or model ``name`` was written."""
        if name not in self.data["outputs"]:
            self.data["outputs"].append(name)

    def doing(self, activity: str) -> None:
        """Say the ``activity`` the running stage is doing now: the next progress line shows it."""
        self.activity = activity
        log.info("%s", activity)

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time stage ``name``; the yielded dict collects its row counts. Logs one line when it ends, and one
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
        """Write the manifest under ``store`` (the run's copy, and the root's once it ends), with ``status``
        when given."""
        if status is not None:
            self.data["status"] = status
            self.data["finished_at"] = _now()
        store.write_json(f"_runs/{self.run_id}/manifest.json", self.data)
        if self.data["status"] == "succeeded":
            store.write_json("manifest.json", self.data)
