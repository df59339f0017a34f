"""Outputs: one dataset per name under ``output.path``, each replaced atomically.

A parquet dataset is written to ``_staging/<name>-<run id>`` first and renamed into place only when
the write finished, so a killed or failed run never leaves a half-written dataset under the real name.
The file system is Hadoop's (whatever Spark itself writes to: local, HDFS, S3A, ABFS, DBFS); where no
JVM gateway exists (Spark Connect) local paths are handled with ``os``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from segrec.jobs.config import Output
from segrec.jobs.errors import ConfigError, InputError
from segrec.jobs.io.output_safety import MARKER
from segrec.udfs.schemas import schema_differences

log = logging.getLogger(__name__)

STAGING = "_staging"
# Outputs that stay directories of files under output.path whatever output.format says: the models and
# the segment page (a catalog holds tables, not these).
FILE_OUTPUTS = frozenset({"towers", "segment_model", "segment_report"})


class _HadoopFS:
    def __init__(self, spark: SparkSession, root: str):
        jvm: Any = spark._jvm  # py4j: the JVM's packages are attributes found at run time
        self._jvm = jvm
        self._Path = jvm.org.apache.hadoop.fs.Path
        self._fs = self._Path(root).getFileSystem(spark._jsc.hadoopConfiguration())
        # No .crc side files next to manifests, reports and plots on a local disk (the checksum file
        # system's default): people open those folders.
        self._fs.setWriteChecksum(False)

    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._Path(path)))

    def rename(self, src: str, dst: str) -> None:
        if not self._fs.rename(self._Path(src), self._Path(dst)):
            raise OSError(f"rename failed: {src} -> {dst}")

    def delete(self, path: str) -> None:
        self._fs.delete(self._Path(path), True)

    def mkdirs(self, path: str) -> None:
        self._fs.mkdirs(self._Path(path))

    def list_names(self, path: str) -> list[str]:
        if not self.exists(path):
            return []
        return [status.getPath().getName() for status in self._fs.listStatus(self._Path(path))]

    def write_bytes(self, path: str, data: bytes) -> None:
        stream = self._fs.create(self._Path(path), True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def read_bytes(self, path: str) -> bytes:
        # Read on the JVM side and returned whole: py4j passes a Python bytearray to Java as a copy,
        # so ``stream.read(buffer)`` would never fill the Python buffer.
        stream = self._fs.open(self._Path(path))
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()


class _LocalFS:
    @staticmethod
    def _p(path: str) -> str:
        return local_path(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(self._p(path))

    def rename(self, src: str, dst: str) -> None:
        os.rename(self._p(src), self._p(dst))

    def delete(self, path: str) -> None:
        p = self._p(path)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)

    def mkdirs(self, path: str) -> None:
        os.makedirs(self._p(path), exist_ok=True)

    def list_names(self, path: str) -> list[str]:
        return os.listdir(self._p(path)) if os.path.isdir(self._p(path)) else []

    def write_bytes(self, path: str, data: bytes) -> None:
        with open(self._p(path), "wb") as fh:
            fh.write(data)

    def read_bytes(self, path: str) -> bytes:
        with open(self._p(path), "rb") as fh:
            return fh.read()


def _filesystem(spark: SparkSession, root: str) -> _HadoopFS | _LocalFS:
    if getattr(spark, "_jvm", None) is not None:
        return _HadoopFS(spark, root)
    check_local_path(root)
    return _LocalFS()


def check_local_path(root: str) -> None:
    """Spark Connect has no JVM here: outputs under ``root`` are handled with the driver's own file system, which
    holds local paths and mounted ones (Unity Catalog volumes under /Volumes, /dbfs). An object-store
    URI cannot be staged and renamed into place from here: say so before anything is written."""
    scheme = root.split("://", 1)[0].lower() if "://" in root else root.split(":", 1)[0].lower() if ":" in root else ""
    if scheme in ("", "file") or len(scheme) == 1:  # len 1: a Windows drive letter
        return
    raise ConfigError(
        f"output.path {root!r} is an object-store or cluster URI ({scheme}:), which a Spark Connect session "
        "cannot write atomically (no JVM on this side to rename staged outputs). Use a path the driver and "
        "executors both mount, e.g. a Unity Catalog volume (/Volumes/<catalog>/<schema>/<volume>/segrec), "
        "or output.format: table with output.path on such a volume for staging and models, or run on a "
        "classic session (spark-submit, a dedicated cluster)."
    )


def local_path(path: str) -> str:
    """A path as the driver's and workers' own file system opens it: ``file:`` dropped, DBFS through
    its FUSE mount on Databricks."""
    if path.startswith("file:"):
        return path[len("file:") :]
    if path.startswith("dbfs:/"):
        return "/dbfs/" + path[len("dbfs:/") :].lstrip("/")
    return path


def check_schema(name: str, df: DataFrame) -> None:
    """Dataset ``name`` is written (``df``) only with the columns and types ``udfs/schemas.DATASETS`` declares for
    it: a stage that drifted from the contract fails before it writes, not readers after (no Spark job:
    the schema is known from the plan)."""
    problems = schema_differences(name, df.schema)
    if problems:
        raise RuntimeError(
            f"dataset {name} does not match its declared schema (udfs/schemas.py): " + "; ".join(problems)
        )


class OutputStore:
    """Reads and writes the named outputs of a run under one root path."""

    def __init__(self, spark: SparkSession, output: Output, run_id: str):
        self.spark = spark
        self.root = output.path.rstrip("/")
        self.format = output.format
        # Staging and models are files even when datasets are catalog tables.
        self.file_format = "parquet" if output.format == "table" else output.format
        self.database = output.database
        self.run_date = output.run_date
        self.run_id = run_id
        self.fs = _filesystem(spark, self.root)

    def path(self, name: str) -> str:
        """Where dataset ``name`` lives: its run_date partition when the run has a date."""
        if self.run_date:
            return f"{self.root}/{name}/run_date={self.run_date}"
        return f"{self.root}/{name}"

    def previous_date(self, name: str) -> str | None:
        """The newest run date before this run's that holds dataset ``name`` (dated runs; None when
        there is none or the run has no date). A partition is renamed into place only when complete,
        so one that is there is whole."""
        if not self.run_date:
            return None
        if self._in_catalog(name):
            if not self.spark.catalog.tableExists(self.table(name)):
                return None
            row = (
                self.spark.table(self.table(name))
                .where(F.col("run_date") < F.lit(self.run_date).cast("date"))
                .agg(F.max("run_date").alias("d"))
                .first()
            )
            return None if row is None or row["d"] is None else str(row["d"])
        prefix = "run_date="
        dates = [
            entry[len(prefix) :]
            for entry in self.fs.list_names(f"{self.root}/{name}")
            if entry.startswith(prefix) and entry[len(prefix) :] < self.run_date
        ]
        return max(dates) if dates else None

    def previous(self, name: str) -> OutputStore | None:
        """A store that reads the previous run's ``name``: the newest earlier run_date partition in a
        dated run; in an undated run this store itself (the dataset is the last run's until this run
        replaces it). None when there is no previous ``name``."""
        if not self.run_date:
            return self if self.exists(name) else None
        date = self.previous_date(name)
        return None if date is None else self.dated(date)

    def latest(self, name: str) -> OutputStore | None:
        """A store that reads the newest ``name`` up to this run: this run's own when it has written
        it, else the previous run's (:meth:`previous`): how a dated night finds the models the last
        night fitted. None when neither exists."""
        return self if self.exists(name) else self.previous(name)

    def history(self, name: str) -> DataFrame | None:
        """Every dated run's ``name`` up to this run's date, with its ``run_date`` column (for trends);
        None in an undated run or where there is none."""
        if not self.run_date or not self.exists(name):
            return None
        if self.format == "table":
            df = self.spark.table(self.table(name))
        else:
            df = self.spark.read.format(self.format).load(f"{self.root}/{name}")
        return df.where(F.col("run_date") <= F.lit(self.run_date).cast("date"))

    def dated(self, run_date: str) -> OutputStore:
        """This store as the run of ``run_date`` sees it (same root, format and run id)."""
        other = copy.copy(self)
        other.run_date = run_date
        return other

    def table(self, name: str) -> str:
        """Dataset ``name``'s catalog table, qualified by ``output.database`` when set."""
        return f"{self.database}.{name}" if self.database else name

    def _in_catalog(self, name: str) -> bool:
        return self.format == "table" and name not in FILE_OUTPUTS

    def exists(self, name: str) -> bool:
        """Whether dataset ``name`` has been published (for a dated run: its date's partition)."""
        if self._in_catalog(name):
            if not self.spark.catalog.tableExists(self.table(name)):
                return False
            return (
                not self.run_date
                or self.spark.table(self.table(name))
                .where(F.col("run_date") == F.lit(self.run_date).cast("date"))
                .limit(1)
                .count()
                > 0
            )
        return self.fs.exists(self.path(name))

    def read(self, name: str, needed_by: str = "") -> DataFrame:
        """Dataset ``name`` (a dated run: its date's rows); exit 2 naming the stage ``needed_by`` when missing."""
        if not self.exists(name):
            who = f" (needed by {needed_by})" if needed_by else ""
            where = f"table {self.table(name)}" if self.format == "table" else self.root
            raise InputError(f"output '{name}' not found in {where}{who}: run the stage that writes it first")
        try:
            if self.format == "table":
                df = self.spark.table(self.table(name))
                if self.run_date:
                    df = df.where(F.col("run_date") == F.lit(self.run_date).cast("date")).drop("run_date")
                return df
            return self.spark.read.format(self.format).load(self.path(name))
        except AnalysisException as exc:
            raise InputError(f"cannot read output '{name}' at {self.path(name)}: {str(exc).splitlines()[0]}") from None

    def write(self, df: DataFrame, name: str) -> None:
        """Replace the dataset ``name`` with ``df``: fully written, or not at all."""
        self.write_together({name: df})

    def write_together(self, frames: dict[str, DataFrame]) -> None:
        """Write every dataset of ``frames`` (by name) to staging first, then swap them all into place.

        Frames may read the very datasets they replace (incremental stages): nothing is swapped until
        every write has finished.
        """
        for name, df in frames.items():
            self.check_replaceable(name)
            check_schema(name, df)
        if self.format == "delta":
            # Delta's overwrite is a single transaction: readers see the old or the new version.
            for name, df in frames.items():
                df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(self.path(name))
            return
        staged = {}
        for name, df in frames.items():
            staging = self.staging_path(name)
            self.fs.delete(staging)
            df.write.format(self.file_format).mode("overwrite").save(staging)
            self.mark(staging)
            staged[name] = staging
        for name, staging in staged.items():
            if self.format == "table":
                self._replace_table(name, self.spark.read.format(self.file_format).load(staging))
                self.fs.delete(staging)
            else:
                self._swap(staging, self.path(name))

    def _replace_table(self, name: str, df: DataFrame) -> None:
        """A dated run overwrites its run_date partition only; an undated one swaps the whole table."""
        target = self.table(name)
        if self.run_date:
            df = df.withColumn("run_date", F.lit(self.run_date).cast("date"))
            if not self.spark.catalog.tableExists(target):
                df.write.format("parquet").partitionBy("run_date").saveAsTable(target)
                return
            previous = self.spark.conf.get("spark.sql.sources.partitionOverwriteMode")
            self.spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
            try:
                df.select(*self.spark.table(target).columns).write.insertInto(target, overwrite=True)
            finally:
                self.spark.conf.set("spark.sql.sources.partitionOverwriteMode", previous or "static")
            return
        suffix = self.run_id.replace("-", "_").lower()
        fresh, old = self.table(f"{name}__new_{suffix}"), self.table(f"{name}__old_{suffix}")
        df.write.format("parquet").saveAsTable(fresh)
        if self.spark.catalog.tableExists(target):
            self.spark.sql(f"ALTER TABLE {target} RENAME TO {old}")
        self.spark.sql(f"ALTER TABLE {fresh} RENAME TO {target}")
        self.spark.sql(f"DROP TABLE IF EXISTS {old}")

    def staging_path(self, name: str) -> str:
        """Where this run stages ``name``: under ``_staging``, with the run id (never an output)."""
        return f"{self.root}/{STAGING}/{name}-{self.run_id}"

    def checkpoint_path(self, name: str) -> str:
        """Where ``name`` keeps checkpoints across runs: under ``_staging``, without the run id, so a
        re-run finds the checkpoints of the run that failed."""
        return f"{self.root}/{STAGING}/checkpoints-{name}"

    def write_staged(self, df: DataFrame, name: str, partition_by: str | None = None) -> DataFrame:
        """Materialise ``df`` once under staging as ``name`` (not an output), in a folder per value of the column
        ``partition_by`` when given, and return it read back."""
        staging = self.staging_path(name)
        writer = df.write.format(self.file_format).mode("overwrite")
        if partition_by:
            writer = writer.partitionBy(partition_by)
        writer.save(staging)
        reader = self.spark.read.format(self.file_format)
        if partition_by and self.file_format != "delta":
            # An empty frame leaves no file to infer the schema from (Delta keeps it in its log).
            reader = reader.schema(df.schema)
        return reader.load(staging)

    def save_model(self, model, name: str, files: dict[str, bytes] | None = None) -> None:
        """Save a Spark ML model (its own persistence format, no pickle) atomically under ``name``, with
        ``files`` (file name -> bytes) beside it in the same directory."""
        self.check_replaceable(name)
        staging = self.staging_path(name)
        self.fs.delete(staging)
        model.write().overwrite().save(staging)
        for file, data in (files or {}).items():
            self.fs.write_bytes(f"{staging}/{file}", data)
        self.mark(staging)
        self._swap(staging, self.path(name))

    def mark(self, directory: str) -> None:
        """Sign a directory as segrec's own (see ``jobs.io.output_safety``)."""
        self.fs.write_bytes(f"{directory}/{MARKER}", f"written by segrec, run {self.run_id}\n".encode())

    def check_replaceable(self, name: str) -> None:
        """Refuse to replace an existing ``name`` that segrec did not write: no marker in it, and no
        earlier run's manifest lists it as an output (outputs of versions before the marker)."""
        if self._in_catalog(name):
            return  # tables are replaced by name inside output.database, checked against the inputs up front
        target = self.path(name)
        if not self.fs.exists(target) or self.fs.exists(f"{target}/{MARKER}") or self._written_before(name):
            return
        raise InputError(
            f"{target} exists and was not written by segrec (no {MARKER} marker, not an output of the last run): "
            "refusing to replace it. Move it away, or choose another output.path."
        )

    def _written_before(self, name: str) -> bool:
        """An earlier run's manifest lists ``name`` among its outputs (newest runs first)."""
        for run in sorted(self.fs.list_names(f"{self.root}/_runs"), reverse=True):
            if run == self.run_id:
                continue
            manifest = self.read_json(f"_runs/{run}/manifest.json") or {}
            if name in manifest.get("outputs", []):
                return True
        return False

    def drop_staged(self, name: str) -> None:
        """Delete the staged copy ``name``."""
        self.fs.delete(self.staging_path(name))

    def _swap(self, staging: str, target: str) -> None:
        # Two renames: the old dataset moves aside, the new one takes its name, the old one goes.
        # A crash between them leaves the old data under _staging/, never a partial one under a real
        # name (and nothing a partitioned reader of the dataset would mistake for a partition).
        previous = f"{staging}-previous"
        self.fs.mkdirs(target.rsplit("/", 1)[0])
        if self.fs.exists(target):
            self.fs.rename(target, previous)
        self.fs.rename(staging, target)
        self.fs.delete(previous)

    def publish_directory(self, local: str, name: str) -> str:
        """Copy a local directory of files (a report) to ``name``, replacing it whole; returns its path."""
        self.check_replaceable(name)
        staging = self.staging_path(name)
        self.fs.delete(staging)
        for root, _, files in os.walk(local):
            relative = os.path.relpath(root, local)
            folder = staging if relative == "." else f"{staging}/{relative.replace(os.sep, '/')}"
            self.fs.mkdirs(folder)
            for file in sorted(files):
                with open(os.path.join(root, file), "rb") as fh:
                    self.fs.write_bytes(f"{folder}/{file}", fh.read())
        self.mark(staging)
        self._swap(staging, self.path(name))
        return self.path(name)

    def publish_files(self, local: str) -> str:
        """Copy a local directory's files (a report) into this store's root, each replaced atomically
        (a temporary name, then a rename): the datasets beside them stay as they are."""
        for root, _, files in os.walk(local):
            relative = os.path.relpath(root, local)
            folder = self.root if relative == "." else f"{self.root}/{relative.replace(os.sep, '/')}"
            self.fs.mkdirs(folder)
            for file in sorted(files):
                with open(os.path.join(root, file), "rb") as fh:
                    self._replace_file(f"{folder}/{file}", fh.read())
        self.mark(self.root)
        return self.root

    def _replace_file(self, target: str, data: bytes) -> None:
        temporary = f"{target}.tmp-{self.run_id}"
        self.fs.write_bytes(temporary, data)
        if self.fs.exists(target):
            self.fs.delete(target)
        self.fs.rename(temporary, target)

    def write_json(self, relative: str, payload: dict[str, Any]) -> str:
        """Write ``payload`` as JSON at ``relative`` under the root, atomically (temporary file, then rename);
        returns its path."""
        target = f"{self.root}/{relative}"
        parent = target.rsplit("/", 1)[0]
        self.fs.mkdirs(parent)
        self._replace_file(target, json.dumps(payload, indent=2, sort_keys=False, default=str).encode("utf-8"))
        return target

    def read_json(self, relative: str) -> dict[str, Any] | None:
        """The JSON file at ``relative`` under the output root, or None when there is none."""
        target = f"{self.root}/{relative}"
        if not self.fs.exists(target):
            return None
        return json.loads(self.fs.read_bytes(target).decode("utf-8"))
