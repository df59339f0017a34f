"""Helpers shared by the benchmarks: random unit vectors, a local Spark session and the Python workers'
peak memory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """n random float32 vectors of unit length."""
    m = rng.standard_normal((n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def local_spark(app: str, cores: int, driver_memory: str = "4g"):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from jobs.session import local_defaults

    master = f"local[{cores}]"
    builder = SparkSession.builder.master(master).appName(app).config("spark.ui.enabled", "false")
    for key, value in local_defaults(master, cores).items():
        builder = builder.config(key, value)
    spark = builder.config("spark.driver.memory", driver_memory).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def python_worker_peak_rss_mb() -> float:
    """Largest VmHWM (peak RSS) among Spark's Python worker processes still alive."""
    peak = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"pyspark.daemon" not in cmdline and b"pyspark.worker" not in cmdline:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024
