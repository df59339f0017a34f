"""Helpers shared by the benchmarks: random unit vectors, a local Spark session and the Python workers'
peak memory."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """n random float32 vectors of unit length."""
    m = rng.standard_normal((n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def local_spark(app: str, cores: int, driver_memory: str = "4g", ui: bool = False):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from segrec.jobs.session import local_defaults

    master = f"local[{cores}]"
    builder = SparkSession.builder.master(master).appName(app).config("spark.ui.enabled", str(ui).lower())
    for key, value in local_defaults(cores).items():
        builder = builder.config(key, value)
    if ui:  # for the REST API's per-stage figures (shuffle bytes); keep every stage's
        builder = (
            builder.config("spark.ui.port", "0")
            .config("spark.ui.retainedStages", "100000")
            .config("spark.ui.retainedJobs", "100000")
        )
    spark = builder.config("spark.driver.memory", driver_memory).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def pids_where(match) -> list[int]:
    """The processes whose command line (NUL-separated bytes) ``match`` accepts."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if match(Path(f"/proc/{pid}/cmdline").read_bytes()):
                    found.append(int(pid))
            except OSError:
                continue
    return found


def worker_pids() -> list[int]:
    """Spark's Python workers (and their daemon)."""
    return pids_where(lambda cmd: b"pyspark.daemon" in cmd or b"pyspark.worker" in cmd)


def peak_rss_mb(pids: list[int]) -> float:
    """Largest VmHWM (peak RSS) among ``pids`` still alive."""
    peak = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


def reset_peaks(pids: list[int]) -> None:
    """Reset the peak RSS (VmHWM) of ``pids`` to their current RSS, so that the next peak is a new one's."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            continue


def python_worker_peak_rss_mb() -> float:
    """Largest peak RSS among Spark's Python worker processes still alive."""
    return peak_rss_mb(worker_pids())


def best_seconds(fn, repeats: int) -> float:
    """The best of ``repeats`` timings of ``fn`` after one untimed warm-up call."""
    fn()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - started)
    return min(timings)


def scorer_settings(k: int, block_mb: float, precision: str):
    """The top-k scorer's settings for a timing in one process: the default config's, on the CPU at
    ``precision``, ``k`` deep in blocks of ``block_mb``, without popularity, MMR or explanations."""
    from segrec.jobs.config import executor_settings
    from segrec.udfs.topk.settings import TopKSettings

    return executor_settings(
        TopKSettings,
        k=k,
        block_mb=block_mb,
        device="cpu",
        precision=precision,
        popularity_weight=0.0,
        mmr_trade_off=None,
        explain=False,
        score_parts=False,
    )
