"""The SparkSession: created only by entry points (CLI, notebooks, spark-submit script).

An active session (a notebook's, Databricks', spark-submit's) is reused as it is; a new one gets
defaults that make sense on a laptop when the master is local.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segrec.jobs.config import Config

log = logging.getLogger(__name__)


def local_defaults(cores: int) -> dict[str, str]:
    """Spark conf for a local master: Arrow on, Python workers reused, shuffles sized to the cores."""
    return {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.python.worker.reuse": "true",
        "spark.sql.shuffle.partitions": str(max(2, 2 * cores)),
        "spark.default.parallelism": str(max(2, cores)),
        "spark.sql.adaptive.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }


def local_cores(master: str) -> int:
    """Cores a local master uses: local -> 1, local[4] -> 4, local[*] -> all."""
    inside = master[master.find("[") + 1 : master.find("]")] if "[" in master else "1"
    if inside.split(",")[0].strip() == "*":
        return os.cpu_count() or 1
    try:
        return max(1, int(inside.split(",")[0]))
    except ValueError:
        return os.cpu_count() or 1


def remote_of(config: Config) -> str | None:
    """The Spark Connect server ``config``'s run talks to: ``spark.remote`` (or ``--remote``), else
    ``SPARK_REMOTE`` as pyspark itself reads it; None for a classic session."""
    return config.spark.remote or os.environ.get("SPARK_REMOTE") or None


def get_spark(config: Config) -> SparkSession:
    """The active session (a notebook's or spark-submit's), else one built from ``config``'s spark section."""
    active = SparkSession.getActiveSession()
    if active is not None:
        log.info(
            "reusing the active Spark session (%s)",
            active.sparkContext.master if has_spark_context(active) else "connect",
        )
        for key, value in config.spark.conf.items():
            try:
                active.conf.set(key, value)
            except Exception as exc:  # static conf cannot change in a running session: say so, go on
                log.warning("spark conf %s not applied to the active session: %s", key, exc)
        return active

    builder = SparkSession.builder.appName(config.spark.app_name)
    remote = remote_of(config)
    # A Connect server has its own master; ``remote("local[N]")`` starts one on this machine.
    master = None if remote else config.spark.master
    local = (master or remote or "").startswith("local")
    if remote:
        builder = builder.remote(remote)
    elif master:
        builder = builder.master(master)
    if local:
        # Executors are Python processes on this machine: they must run this interpreter.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        for key, value in local_defaults(local_cores(master or remote or "")).items():
            builder = builder.config(key, value)
        if config.spark.driver_memory:
            builder = builder.config("spark.driver.memory", config.spark.driver_memory)
    for key, value in config.spark.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if has_spark_context(spark):
        spark.sparkContext.setLogLevel(config.spark.log_level)
        if config.spark.log_level in ("WARN", "ERROR", "FATAL", "OFF"):
            quiet_spark_noise(spark)
    # Runtime settings every segrec session wants, local or spark-submit: Arrow for pandas transfers.
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    return spark


def parallelism(spark: SparkSession) -> int:
    """Tasks worth running at once: ``spark.default.parallelism`` when set, else the cores a classic
    session's executors have, else (Spark Connect, no SparkContext) ``spark.sql.shuffle.partitions``."""
    configured = spark.conf.get("spark.default.parallelism", None)
    if configured:
        return max(1, int(configured))
    if has_spark_context(spark):
        return max(1, spark.sparkContext.defaultParallelism)
    shuffle = str(spark.conf.get("spark.sql.shuffle.partitions", "200") or "200")
    # Databricks accepts "auto" (its auto-optimized shuffle): no number to read, so Spark's default.
    return max(1, int(shuffle)) if shuffle.strip().isdigit() else 200


def udf_partitions(spark: SparkSession, configured: int | None) -> int:
    """Tasks of ``spark`` for a stage whose Python UDF costs far more per row than moving the row: ``configured``,
    else twice the parallelism (a task that finishes early finds another; the last ones end together)."""
    return configured or 2 * parallelism(spark)


def on_local_master(spark: SparkSession) -> bool:
    """Whether ``spark`` is a classic session on a ``local[...]`` master: every task runs on this machine's cores."""
    return has_spark_context(spark) and (spark.sparkContext.master or "").startswith("local")


def spread(df: DataFrame, partitions: int, *columns: str) -> DataFrame:
    """``df`` in ``partitions`` tasks by a hash of ``columns``, ahead of an expensive Python UDF.

    A hash *of* the columns, not the columns themselves: when ``df`` comes out of a shuffle on the same
    columns (a de-duplication, a join), Spark drops a repartition by them as already satisfied, and
    adaptive execution then coalesces that shuffle by bytes, so a small frame of texts or users lands
    in one task and one core runs the whole UDF (the embed benchmark's stage ran at half speed on two
    cores). A repartition Spark has to keep is never coalesced. The hash is deterministic, so a retried
    task gets the same rows."""
    return df.repartition(partitions, F.xxhash64(*columns))


# Loggers whose messages say nothing a user can act on, or repeat as Java stack traces what segrec
# reports itself in one paragraph (exit 2 for input problems, the traceback for anything unexpected).
# --debug (log level INFO) leaves them all on.
_QUIET_LOGGERS = {
    # a 90-line stack trace when an input path does not exist (segrec names the path)
    "org.apache.spark.sql.execution.streaming.FileStreamSink": "ERROR",
    "org.apache.spark.sql.execution.streaming.sinks.FileStreamSink": "ERROR",
    # a failed task's stack trace, before the error reaches the driver (where segrec reports it)
    "org.apache.spark.executor.Executor": "FATAL",
    "org.apache.spark.scheduler.TaskSetManager": "ERROR",
}


def quiet_spark_noise(spark: SparkSession) -> None:
    """Raise the level of ``spark``'s loggers in ``_QUIET_LOGGERS``."""
    try:
        jvm: Any = spark.sparkContext._jvm  # py4j: the JVM's packages are attributes found at run time
        for logger, level in _QUIET_LOGGERS.items():
            jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
                logger, getattr(jvm.org.apache.logging.log4j.Level, level)
            )
    except Exception:  # no JVM here (Spark Connect) or another logging backend: keep the messages
        pass


def has_spark_context(spark: SparkSession) -> bool:
    """Whether ``spark`` is a classic session (JVM, SparkContext, broadcasts); False on Spark Connect."""
    try:
        spark.sparkContext  # noqa: B018 - raises on Spark Connect
        return True
    except Exception:
        return False
