"""The ``segrec`` command: one sub-command per stage, plus ``run`` for the whole pipeline.

Exit codes: 0 success; 2 a config or input problem (short message, no traceback unless --debug);
1 anything unexpected.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
from typing import TYPE_CHECKING

from segrec.jobs.config import DEFAULT_CONF
from segrec.jobs.errors import StageFailure, UserError

if TYPE_CHECKING:
    from segrec.jobs.io.manifest import RunManifest

COMMANDS = ["validate", "run", "embed", "train", "profile", "segment", "recommend", "audience", "evaluate"]


def build_parser() -> argparse.ArgumentParser:
    """The ``segrec`` argument parser: one sub-command per stage and ``run``, each with --conf, --set,
    --remote and --debug."""
    parser = argparse.ArgumentParser(prog="segrec", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--conf", default=DEFAULT_CONF, help=f"run config YAML (default {DEFAULT_CONF})")
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set embed.batch_rows=512 (repeatable)",
    )
    common.add_argument(
        "--remote",
        metavar="URL",
        help="run on a Spark Connect server (sc://host:15002, or local[N] to start one here); as spark.remote",
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks and Spark's INFO logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "validate": "read and validate the inputs; write kept rows and rejects",
        "run": "run every available stage in order",
        "embed": "embed item and user texts",
        "train": "learn the two-tower recommendation space from the interactions",
        "profile": "build user vectors",
        "segment": "cluster users into segments",
        "recommend": "top-k recommendations per user",
        "audience": "the users to contact for each audience request (an item, an attribute, a brief)",
        "evaluate": "offline evaluation against baselines",
    }
    for name in COMMANDS:
        sub.add_parser(name, parents=[common], help=helps[name])
    return parser


def configure_logging(debug: bool) -> None:
    """Log to stderr: segrec's own messages at INFO (DEBUG and Spark's INFO too when ``debug``)."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in ("segrec",):  # segrec.jobs.*, segrec.udfs.* and the "segrec" logger
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        logging.getLogger("py4j").setLevel(logging.ERROR)


def print_summary(manifest: RunManifest) -> None:
    """What a person reads after a run: the ``manifest``'s row counts by source and reject reason, each
    stage's figures, the evaluation table and the continuity line."""
    print(f"run {manifest.run_id}: {manifest.command} {manifest.status}")
    for name, counts in manifest.sources.items():
        reasons = ", ".join(f"{r}={n}" for r, n in counts["rejected_by_reason"].items()) or "none"
        print(
            f"  {name:<13} rows_in={counts['rows_in']:<8} kept={counts['kept']:<8} "
            f"rejected={counts['rejected']:<6} by reason: {reasons}"
        )
    for name, figures in manifest.stages.items():
        shown = " ".join(f"{k}={v}" for k, v in figures.items() if not isinstance(v, (dict, list)))
        print(f"  stage {name:<10} {shown}")
    if manifest.segments:
        from segrec.jobs.segments.portraits import format_table

        print("\nsegments:")
        print(format_table(manifest.segments))
        line = continuity_line(manifest.stages.get("segment", {}))
        if line:
            print(line)
    if manifest.sample_recommendations:
        print("\nsample recommendations:")
        for row in manifest.sample_recommendations:
            print(f"  user {row['user_id']:>6} #{row['rank']}  {row['item']}  ({row['score']:.3f})")
            if row.get("because"):
                print(f"{'':>17}because of {row['because']} (similarity {row['because_similarity']:.3f})")
            shares = ", ".join(
                f"{name.replace('_', ' ')} {value:.3f}"
                for name, value in row.items()
                if name.startswith("from_") and value
            )
            if shares:
                print(f"{'':>17}score: {shares}")
    if manifest.evaluation_table:
        print(f"\nevaluation (held-out interactions; report under {manifest.output_path or 'evaluation/'}):")
        print(manifest.evaluation_table)
        for line in manifest.evaluation_ratios or []:
            print(f"  {line}")
    where = manifest.output_path or manifest.data["config"]["output"]["path"]
    print(f"  outputs under {where}: {', '.join(manifest.outputs) or 'none'}")


def continuity_line(figures: dict) -> str | None:
    """One line from the segment stage's ``figures`` on how the segments relate to the previous run's (None
    for a first run), and where the
    segment page is."""
    lines = []
    if figures.get("previous_run"):
        rows = figures.get("segments_vs_previous", [])

        def named(row: dict, word: str) -> str:
            involved = ", ".join(map(str, row["status_ids"]))
            return f"{row['segment_id']} ({word} {involved})" if involved else str(row["segment_id"])

        by_status = {
            status: ", ".join(named(r, word) for r in rows if r["status"] == status)
            for status, word in (("kept", ""), ("merged", "with"), ("split", "from"), ("new", ""))
        }
        retired = ", ".join(str(r["segment_id"]) for r in figures.get("retired_segments", []))
        said = "; ".join(f"{s} {ids}" for s, ids in {**by_status, "retired": retired}.items() if ids)
        lines.append(
            f"  since {figures['previous_run']}: agreement {figures.get('agreement_with_previous')}, "
            f"{figures.get('new_users', 0)} new and {figures.get('departed_users', 0)} departed users; {said}"
        )
    if figures.get("report"):
        lines.append(f"  segment page: {figures['report']}")
    return "\n".join(lines) or None


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv`` (default: the process's arguments) and return its exit code: 0 success,
    2 a config or input error (a message, no traceback), 1 anything else."""
    args = build_parser().parse_args(argv)
    configure_logging(args.debug)
    config = None  # known once loaded: what a damaged file's path is named by
    try:
        # Imported here so that --help and config errors answer without starting a JVM.
        from segrec.jobs.config import load_config
        from segrec.jobs.pipeline import execute, stages_for
        from segrec.jobs.session import get_spark, has_spark_context

        config = load_config(args.conf, args.overrides)
        if args.debug:
            config.spark.log_level = "INFO"
        if args.remote:
            config.spark.master = None  # the Connect server has its own master
            config.spark.remote = args.remote
        stages_for(args.command)  # an unknown command is refused before Spark starts
        from pyspark.sql import SparkSession

        created = SparkSession.getActiveSession() is None
        spark = get_spark(config)
        try:
            manifest = execute(spark, config, args.command)
        finally:
            if created and not has_spark_context(spark):
                # A Connect session this command started (and, with --remote local[N], its local
                # server): stopped, or its client threads keep the process from exiting.
                spark.stop()
        print_summary(manifest)
        return 0
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"segrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"segrec {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        found = worker_input_error(exc) or damaged_file_error(exc, config)
        if found is not None:
            # A data problem a Python worker found (a vector of the wrong size...): an input error.
            if args.debug:
                traceback.print_exc()
            print(f"segrec {args.command}: error: {found}", file=sys.stderr)
            return 2
        if isinstance(exc, StageFailure):
            if args.debug:
                traceback.print_exc()
            print(f"segrec {args.command}: failed: {exc}", file=sys.stderr)
            return 1
        traceback.print_exc()  # unexpected: the traceback is what someone needs to fix it
        print(f"segrec {args.command}: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def worker_input_error(exc: BaseException | None) -> str | None:
    """The message of a ``udfs.errors.WorkerInputError`` in ``exc``, raised in a Python worker or training process,
    which reaches the driver only as the text of the failed task (a PythonException, or the training
    process's output), else None."""
    seen, cause = 0, exc  # the chain of causes, at most 10 deep
    while cause is not None and seen < 10:
        match = _WORKER_ERROR.search(str(cause))
        if match:
            return match.group(1).strip()
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return None


_WORKER_ERROR = re.compile(r"WorkerInputError: ([^\n]+)")


def damaged_file_error(exc: BaseException, config) -> str | None:
    """What to tell the user when ``exc`` says Spark could not read a file (a truncated or foreign parquet file:
    Spark's FAILED_READ_FILE error), naming the dataset or input it belongs to and what to do; None
    for any other error. ``config`` (None before it was loaded) says which path is which."""
    seen, match = 0, None
    cause: BaseException | None = exc  # the chain of causes, at most 10 deep
    while cause is not None and seen < 10 and match is None:
        match = _DAMAGED_FILE.search(str(cause))
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    if match is None:
        return None
    path = match.group(1)
    reason = re.sub(r"\s*SQLSTATE: \w+\.?", "", match.group(2)).strip() or "its data does not decode"
    local = re.sub(r"^file:(//)?", "", path)
    if config is not None:
        from segrec.jobs.pipeline import WRITTEN_BY

        root = config.output.path.rstrip("/")
        root = re.sub(r"^file:(//)?", "", root)
        relative = local[len(root) + 1 :] if local.startswith(root + "/") else None
        name = relative.split("/", 1)[0] if relative else None
        if name in WRITTEN_BY:
            return (
                f"dataset '{name}' under output.path cannot be read: its file {path} is damaged ({reason}). "
                f"Run `segrec {WRITTEN_BY[name]}` again (with the same output.run_date) to write it anew"
            )
        for source in ("items", "users", "interactions"):
            configured = getattr(config.inputs, source, None)
            where = getattr(configured, "path", None) if configured is not None else None
            if where and local.startswith(where.rstrip("/")):
                return (
                    f"input {source} ({where}) cannot be read: its file {path} is damaged ({reason}); fix or replace it"
                )
    return f"file {path} cannot be read: it is damaged ({reason})"


# Spark's error for a file it could not read: [FAILED_READ_FILE.<kind>] ... reading file <path>. <why>
_DAMAGED_FILE = re.compile(r"\[FAILED_READ_FILE[.\w]*\][^\n]*?reading file (\S+?)\.\s+([^\n]*)")


if __name__ == "__main__":
    sys.exit(main())
