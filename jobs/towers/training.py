"""The two-tower model on the driver: its training examples, training under TorchDistributor, the
towers applied in Spark, and the model saved and loaded.

``fit_towers`` writes the examples as parquet (the catalogue's text vectors, each user's history
oldest first with feedback weights, each user's own text vector) and trains under Spark's distributed
trainer (``TorchDistributor``: on the driver for a local master, one process per executor or GPU on a
cluster; ``udfs.towers.process``). ``learned_item_vectors`` and ``learned_user_vectors`` apply the item
and user towers in pandas UDFs. The saved model is a directory: ``towers.safetensors`` (weights, no
pickle), ``towers.json`` (settings, the model id of the text vectors it was trained on, the training
curve) and ``id_items.json`` (the items with a learned embedding). ``udfs.towers`` holds the model itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segrec.jobs.config import Config, Train, executor_settings
from segrec.jobs.context import RunContext
from segrec.jobs.errors import InputError, StageFailure
from segrec.jobs.io.counts import row_counts
from segrec.jobs.io.store import OutputStore, local_path
from segrec.jobs.sources.interaction_weights import with_feedback_weight
from segrec.jobs.vectors.spaces import sum_vectors
from segrec.jobs.vectors.text_profiles import text_side
from segrec.udfs.device import job_uses_gpus
from segrec.udfs.towers import TowerSettings, TowerWeights
from segrec.udfs.towers.process import TrainJob, train_process

log = logging.getLogger("segrec")


MODEL = "towers"


@dataclass(frozen=True)
class TrainedModel:
    """Trained towers as a stage uses them: their ``weights``, ``model_id`` and the text model they read."""

    weights: TowerWeights
    model_id: str
    text_model_id: str | None
    curve: list[dict]
    examples: int = 0
    als_weight: float = 0.0  # the weight of ALS's product in the score (jobs.collaborative); 0: towers alone


def has_timestamps(interactions: DataFrame) -> bool:
    """Whether any of ``interactions`` has a timestamp (so histories have an order)."""
    return (
        "timestamp" in interactions.columns and interactions.where(F.col("timestamp").isNotNull()).limit(1).count() > 0
    )


def tower_settings(train: Train, ordered: bool) -> TowerSettings:
    """The towers' settings from the ``train`` section. ``objective: auto`` is order-free where interactions have
    no timestamps (``ordered`` false: there is no order to learn); with them it stays auto, and the
    training processes choose on a validation hold-out (``udfs.towers.choose_objective``)."""
    objective = train.objective if train.objective != "auto" or ordered else "order_free"
    return executor_settings(TowerSettings, train, objective=objective)


def sequences(weighted: DataFrame, catalogue: DataFrame, seed: int) -> DataFrame:
    """(user_id, items, weights): each user's interactions in ``weighted`` with catalogue items, oldest first
    (ties by a hash seeded with ``seed``
    and data without timestamps in a seeded hash order, so the order never depends on partitioning)."""
    ts = F.col("timestamp") if "timestamp" in weighted.columns else F.lit(None).cast("timestamp")
    ordered = weighted.join(catalogue.select("item_id"), on="item_id", how="left_semi").select(
        F.col("user_id").cast("string").alias("user_id"),
        F.struct(
            F.coalesce(F.unix_micros(ts), F.lit(0)).alias("t"),
            F.xxhash64("item_id", F.lit(seed)).alias("h"),
            F.col("item_id").cast("string").alias("item_id"),
            F.col("weight").cast("float").alias("weight"),
        ).alias("e"),
    )
    grouped = ordered.groupBy("user_id").agg(F.array_sort(F.collect_list("e")).alias("e"))
    return grouped.select("user_id", F.col("e.item_id").alias("items"), F.col("e.weight").alias("weights"))


def training_frames(
    interactions: DataFrame, item_vectors: DataFrame, text_vectors: DataFrame, config: Config, processes: int
) -> dict[str, DataFrame]:
    """The three example datasets the training processes read, from ``item_vectors``, ``text_vectors`` and
    ``config`` (see ``udfs.towers.process.TrainJob``):
    the catalogue with each item's training interactions counted over every user (what logQ and the
    ID embeddings need, whichever process reads it), and the users' histories and texts, each row with
    the ``shard`` (a hash of the user id, one per training process) whose process alone reads it."""
    source = config.inputs.interactions
    weighted = with_feedback_weight(interactions, source.feedback, source.implicit_weight)
    catalogue = item_vectors.select(F.col("item_id").cast("string").alias("item_id"), "vector")
    histories = sequences(weighted, catalogue, config.train.seed)
    counts = histories.select(F.explode("items").alias("item_id")).groupBy("item_id").agg(F.count("*").alias("count"))
    texts = text_side(text_vectors).select(
        F.col("user_id").cast("string").alias("user_id"), F.col("text_vec").alias("vector")
    )
    shard = F.pmod(F.xxhash64("user_id"), F.lit(processes)).cast("int").alias("shard")
    return {
        "catalogue": catalogue.join(counts, on="item_id", how="left").select(
            "item_id", "vector", F.coalesce("count", F.lit(0)).cast("long").alias("count")
        ),
        "sequences": histories.select("*", shard),
        "user_texts": texts.where(F.col("vector").isNotNull()).select("*", shard),
    }


def learned_item_vectors(item_vectors: DataFrame, model: TrainedModel) -> DataFrame:
    """(item_id, vector, learned_part, model_id): ``model``'s item tower applied in the workers to the
    text vector of every item of ``item_vectors``; ``learned_part`` is the share of the vector that its
    learned embedding contributed (``TowerWeights.item_parts``), null for an item without one (a cold
    item)."""
    weights = model.weights

    @F.pandas_udf("vector array<float>, learned_part array<float>")  # type: ignore[call-overload]  # pyspark stubs: DDL strings
    def tower(ids: pd.Series, vectors: pd.Series) -> pd.DataFrame:
        if len(vectors) == 0:
            return pd.DataFrame({"vector": pd.Series([], dtype=object), "learned_part": pd.Series([], dtype=object)})
        out, learned, found = weights.item_parts(np.stack(vectors.to_numpy()), ids.astype(str).to_numpy())
        return pd.DataFrame(
            {"vector": list(out), "learned_part": [p if f else None for p, f in zip(learned, found, strict=True)]}
        )

    towers = item_vectors.select("item_id", tower(F.col("item_id").cast("string"), "vector").alias("t"))
    return towers.select("item_id", "t.vector", "t.learned_part", F.lit(model.model_id).alias("model_id"))


def learned_user_vectors(
    users: DataFrame | None,
    interactions: DataFrame,
    learned_items: DataFrame,
    text_vectors: DataFrame,
    model: TrainedModel,
    config: Config,
) -> DataFrame:
    """(user_id, vector, n_items, n_texts): ``model``'s user tower over ``users``' ``interactions`` with
    ``learned_items`` and their ``text_vectors`` (``config``), applied on executors. The history is pooled
    with Spark's array functions and MLlib's Summarizer (the newest ``history`` items, weights as in
    training), the user's text projected and added in a pandas UDF."""
    settings = model.weights.settings
    source = config.inputs.interactions
    weighted = with_feedback_weight(interactions, source.feedback, source.implicit_weight)
    if not settings.feedback_weights:
        weighted = weighted.withColumn("weight", F.lit(1.0))
    history = sequences(weighted, learned_items, settings.seed).select(
        "user_id", F.size("items").alias("n"), F.posexplode(F.arrays_zip("items", "weights")).alias("pos", "e")
    )
    back = F.col("n") - 1 - F.col("pos")
    decay = F.pow(F.lit(settings.decay), back) if settings.objective == "sequential" else F.lit(1.0)
    recent = history.where(back < settings.history).select(
        "user_id", F.col("e.items").alias("item_id"), (F.col("e.weights") * decay).alias("w")
    )
    vectors = recent.join(
        learned_items.select(F.col("item_id").cast("string").alias("item_id"), "vector"), on="item_id", how="inner"
    )
    scaled = vectors.select("user_id", F.transform("vector", lambda x: x * F.col("w")).alias("v"))
    pooled = sum_vectors(scaled, "user_id", "v", "pooled").join(
        recent.groupBy("user_id").agg(F.sum("w").alias("w_sum"), F.count("*").alias("n_items")),
        on="user_id",
        how="inner",
    )
    ids = interactions.select(F.col("user_id").cast("string").alias("user_id"))
    if users is not None:
        ids = ids.unionByName(users.select(F.col("user_id").cast("string").alias("user_id")))
    texts = text_side(text_vectors).withColumn("user_id", F.col("user_id").cast("string"))
    mixed = (
        ids.distinct()
        .join(pooled, on="user_id", how="left")
        .join(texts, on="user_id", how="left")
        .select(
            "user_id",
            "pooled",
            "w_sum",
            "text_vec",
            F.coalesce("n_items", F.lit(0)).alias("n_items"),
            F.coalesce("n_texts", F.lit(0)).alias("n_texts"),
        )
    )
    weights, dim = model.weights, settings.dim

    @F.pandas_udf("array<float>")  # type: ignore[call-overload]  # pyspark stubs: DDL strings
    def tower(pooled_sum: pd.Series, w_sum: pd.Series, text: pd.Series) -> pd.Series:
        n = len(pooled_sum)
        if n == 0:
            return pd.Series([], dtype=object)
        total = np.maximum(w_sum.fillna(0.0).to_numpy(np.float64), 1e-6)[:, None]
        pooled_m = np.stack([np.zeros(dim) if p is None else np.asarray(p, np.float64) for p in pooled_sum]) / total
        text_dim = weights.state["user_text.weight"].shape[1]
        text_m = np.stack([np.full(text_dim, np.nan) if t is None else np.asarray(t, np.float64) for t in text])
        out = weights.user_vectors(pooled_m, text_m)
        return pd.Series([None if not row.any() else row for row in out])

    return mixed.select("user_id", tower("pooled", "w_sum", "text_vec").alias("vector"), "n_items", "n_texts")


def on_driver(spark: SparkSession, train: Train) -> bool:
    """Where TorchDistributor trains for ``train`` on ``spark``: the driver for a local master (or when asked),
    else executors."""
    master = spark.conf.get("spark.master", "") or ""
    return train.local_mode == "driver" or (train.local_mode == "auto" and master.startswith("local"))


def scheduled_gpus(spark: SparkSession, driver: bool) -> float:
    """GPUs ``spark`` gives each training process: the driver's (local mode) or each task's (executors)."""
    key = "spark.driver.resource.gpu.amount" if driver else "spark.task.resource.gpu.amount"
    return float(spark.conf.get(key, "0") or 0)


def distributor(spark: SparkSession, train: Train):
    """TorchDistributor on ``spark`` for ``train``: asked for GPUs where ``train.device`` wants them and Spark
    schedules them (``auto`` on a GPU cluster trains on the executors' GPUs)."""
    from pyspark.ml.torch.distributor import TorchDistributor

    driver = on_driver(spark, train)
    use_gpu = job_uses_gpus(train.device, scheduled_gpus(spark, driver))
    return TorchDistributor(num_processes=train.processes, local_mode=driver, use_gpu=use_gpu)


def threads_per_process(spark: SparkSession, train: Train, driver: bool) -> int:
    """torch threads per training process of ``train``: the driver's cores shared by its processes, or a barrier
    task's cores (spark.task.cpus) on an executor."""
    if train.threads:
        return train.threads
    if driver:
        return max(1, (os.cpu_count() or 1) // train.processes)
    return max(1, int(spark.conf.get("spark.task.cpus", "1") or 1))


def fit_towers(
    spark: SparkSession,
    store: OutputStore,
    config: Config,
    interactions: DataFrame,
    item_vectors: DataFrame,
    text_vectors: DataFrame,
    train: Train | None = None,
    tag: str = "train",
) -> tuple[TrainedModel, dict]:
    """Write the examples from ``interactions``, ``item_vectors`` and ``text_vectors`` under ``store``'s staging
    (``tag``), train under TorchDistributor on ``spark`` as ``config`` says, return the model and figures."""
    train = train or config.train
    frames = training_frames(interactions, item_vectors, text_vectors, config, train.processes)
    # Users' rows in one folder per process (shard=<rank>): a process reads its own users only.
    staged = {
        name: store.write_staged(frame, f"{tag}-{name}", partition_by="shard" if "shard" in frame.columns else None)
        for name, frame in frames.items()
    }
    paths = {name: local_path(store.staging_path(f"{tag}-{name}")) for name in frames}
    counts = row_counts(
        {
            "items": staged["catalogue"],
            "users_with_history": staged["sequences"],
            "users_with_text": staged["user_texts"],
        }
    )
    if counts["items"] == 0:
        raise InputError("train: no item text vectors (items need text columns for the towers' text path)")
    if counts["users_with_history"] == 0:
        raise InputError("train: no interaction refers to an item with a text vector: nothing to learn from")
    settings = tower_settings(train, has_timestamps(interactions))
    checkpoints = checkpoint_dir(store, tag) if train.resume else None
    job = TrainJob(
        paths["catalogue"],
        paths["sequences"],
        paths["user_texts"],
        settings,
        threads=threads_per_process(spark, train, on_driver(spark, train)),
        device=train.device,
        checkpoint_dir=checkpoints,
    )
    log.info(
        "train: %s objective, %d items, %d users with history, %d processes",
        settings.objective,
        counts["items"],
        counts["users_with_history"],
        train.processes,
    )
    try:
        result = distributor(spark, train).run(train_process, job)
    except Exception as exc:
        raise training_failed(exc, checkpoints) from exc
    finally:
        for name in frames:
            store.drop_staged(f"{tag}-{name}")
    if checkpoints is not None:
        store.fs.delete(store.checkpoint_path(tag))  # trained: nothing left to resume
    settings = replace(settings, objective=result.objective or settings.objective)  # auto: what validation chose
    weights = TowerWeights(settings, result.state, np.asarray(result.id_items, dtype=str))
    first = item_vectors.select("model_id").first() if "model_id" in item_vectors.columns else None
    text_model_id = first["model_id"] if first else None
    model = TrainedModel(weights, model_identity(weights, text_model_id), text_model_id, result.curve, result.examples)
    figures = {
        **counts,
        "examples": result.examples,
        "id_items": len(weights.id_items),
        "objective": settings.objective,
        **({"objective_choice": result.choice} if result.choice else {}),
        "final_loss": result.curve[-1]["loss"] if result.curve else None,
        "training_seconds": round(result.seconds(), 1),
        "training_peak_rss_mb": result.peak_rss_mb,
        "resumed_after_epochs": result.resumed_after,
    }
    return model, figures


def training_failed(exc: Exception, checkpoints: str | None) -> StageFailure:
    """What to tell a user whose training processes failed with ``exc`` (a process killed, an executor
    lost for good): what failed, and that a re-run resumes from ``checkpoints`` when there are any. A
    data problem found inside a process stays visible in the chain (the CLI reports it as exit 2)."""
    reason = failure_reason(exc)
    remedy = (
        f"re-run the same command: training resumes after the last finished epoch (checkpoints in {checkpoints})"
        if checkpoints
        else "re-run the same command (without checkpoints, training starts again from its first epoch)"
    )
    return StageFailure(f"train: the training processes failed ({reason}); nothing was published; {remedy}")


_FAILURES = (
    # local mode: torchrun's exit status
    re.compile(r"Command \[.*?\] failed with (return code -?\d+)"),
    # executors: Spark gives up on the barrier job (it never retries a barrier result stage)
    re.compile(r"Job aborted due to stage failure: (.*?)(?:\\n|\n|$)"),
)


def failure_reason(exc: BaseException) -> str:
    """One line on why TorchDistributor failed with ``exc``: torchrun's exit status, Spark's reason for aborting the
    barrier job, or the exception's first line."""
    texts: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(texts) < 10:
        texts.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    for pattern in _FAILURES:
        for text in texts:
            match = pattern.search(text)
            if match:
                reason = match.group(1).strip()
                return reason if len(reason) <= 300 else reason[:297] + "..."
    first = next((line.strip() for line in texts[0].splitlines() if line.strip()), type(exc).__name__)
    return first if len(first) <= 300 else first[:297] + "..."


def checkpoint_dir(store: OutputStore, tag: str) -> str | None:
    """Where the training processes keep their per-epoch checkpoint: ``_staging/checkpoints-<tag>`` under
    output.path, as the processes' file system opens it. None (no checkpoints, with a warning) where
    that is not a local or mounted path (an object store: s3://, abfss://, gs://, hdfs://). A relative
    output.path is the driver's working directory's, as Spark qualifies it too."""
    path = local_path(store.checkpoint_path(tag))
    if "://" not in path and not path.startswith(("/", "dbfs:")):
        path = os.path.abspath(path)
    if not os.path.isabs(path):
        log.warning(
            "train: checkpoints need output.path on a local or mounted file system, not %s: a failed "
            "training will restart from its first epoch",
            path,
        )
        return None
    return path


def model_identity(weights: TowerWeights, text_model_id: str | None) -> str:
    """The towers' id: a hash of ``weights``' settings and tensors and the ``text_model_id`` they read."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"settings": weights.settings.as_dict(), "text": text_model_id}, sort_keys=True).encode())
    for name in sorted(weights.state):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(weights.state[name]).tobytes())
    digest.update("\x1f".join(weights.id_items.tolist()).encode())
    return "towers-" + digest.hexdigest()[:16]


def save_model(store: OutputStore, model: TrainedModel) -> str:
    """Write the model directory (safetensors weights, JSON metadata) atomically under ``store``'s ``towers``."""
    from safetensors.numpy import save_file

    with tempfile.TemporaryDirectory(prefix="segrec-towers-") as local:
        save_file(
            {k: np.ascontiguousarray(v) for k, v in model.weights.state.items()},
            os.path.join(local, "towers.safetensors"),
        )
        meta = {
            "model_id": model.model_id,
            "text_model_id": model.text_model_id,
            "settings": model.weights.settings.as_dict(),
            "curve": model.curve,
            "examples": model.examples,
            "als_weight": model.als_weight,
        }
        with open(os.path.join(local, "towers.json"), "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2)
        with open(os.path.join(local, "id_items.json"), "w", encoding="utf-8") as fh:
            json.dump(model.weights.id_items.tolist(), fh)
        return store.publish_directory(local, MODEL)


MODEL_FILES = ("towers.safetensors", "towers.json", "id_items.json")  # what save_model writes


def saved_als_weight(store: OutputStore, model_id: str) -> float:
    """The ALS weight the saved model in ``store`` was fitted with (``towers.json`` alone: the weights,
    ID embeddings included, stay on disk), 0 when there is no saved model or it is not ``model_id``."""
    source = store.latest(MODEL)
    if source is None:
        return 0.0
    path = f"{source.path(MODEL)}/towers.json"
    if not store.fs.exists(path):
        return 0.0
    meta = json.loads(store.fs.read_bytes(path).decode("utf-8"))
    return float(meta.get("als_weight", 0.0)) if meta.get("model_id") == model_id else 0.0


def load_model(store: OutputStore) -> TrainedModel:
    """The towers saved under ``store``'s ``towers`` directory."""
    from safetensors.numpy import load

    root = store.path(MODEL)
    try:
        meta = json.loads(store.fs.read_bytes(f"{root}/towers.json").decode("utf-8"))
        state = load(store.fs.read_bytes(f"{root}/towers.safetensors"))
        id_items = np.asarray(json.loads(store.fs.read_bytes(f"{root}/id_items.json").decode("utf-8")), dtype=str)
    except Exception as exc:  # a partial or foreign directory: the user must re-run train
        raise InputError(
            f"cannot read the trained model at {root}: {str(exc).splitlines()[0]}: run `segrec train`"
        ) from None
    settings = saved_settings(meta, f"{root}/towers.json")
    check_state(settings, state, f"{root}/towers.safetensors")
    return TrainedModel(
        TowerWeights(settings, state, id_items),
        meta["model_id"],
        meta.get("text_model_id"),
        meta.get("curve", []),
        meta.get("examples", 0),
        meta.get("als_weight", 0.0),
    )


def saved_settings(meta: dict, where: str) -> TowerSettings:
    """The towers' settings ``towers.json`` (at ``where``) records in ``meta``. A field that a model of
    an earlier segrec lacks takes its default from the config's defaults (logged); a field this
    version does not know, a missing resolved field (the objective) or a value of the wrong type stops
    with exit 2 naming the file and the field."""
    recorded = meta.get("settings")
    if not isinstance(recorded, dict):
        raise InputError(f"{where}: field 'settings' is missing or not an object: run `segrec train`")
    known = {f.name for f in fields(TowerSettings)}
    unknown = sorted(set(recorded) - set(known))
    if unknown:
        raise InputError(
            f"{where}: field(s) settings.{', settings.'.join(unknown)} are unknown to this segrec (a model "
            "written by a newer version?): run `segrec train` with this version, or upgrade segrec"
        )
    defaults = executor_settings(TowerSettings, objective=recorded.get("objective", "sequential"))
    missing = sorted(name for name in known if name not in recorded)
    if "objective" in missing:
        raise InputError(f"{where}: field settings.objective is missing (it cannot be defaulted): run `segrec train`")
    if missing:
        log.warning(
            "%s: written by an earlier segrec without settings %s: loading with their defaults %s",
            where,
            ", ".join(missing),
            ", ".join(f"{name}={getattr(defaults, name)!r}" for name in missing),
        )
    for name, value in recorded.items():
        expected = type(getattr(defaults, name))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise InputError(
                f"{where}: field settings.{name} is {value!r}, expected a {expected.__name__}: run `segrec train`"
            )
    return replace(defaults, **recorded)


def check_state(settings: TowerSettings, state: dict, where: str) -> None:
    """Exit 2 naming ``where`` (the weights file) when ``state`` lacks a tensor that ``settings``
    need to apply the towers, or holds one of the wrong width."""
    needed = ["text_skip.weight", "text_mlp.0.weight", "text_mlp.0.bias", "text_mlp.2.weight", "text_mlp.2.bias"]
    needed += ["item_id.weight"] + (["history_map.weight"] if settings.history_map else [])
    needed += ["user_text.weight"] if settings.user_text else []
    missing = [name for name in needed if name not in state]
    if missing:
        raise InputError(
            f"{where}: tensor(s) {', '.join(missing)} missing for the settings recorded beside it: run `segrec train`"
        )
    if state["text_skip.weight"].shape[0] != settings.dim:
        raise InputError(
            f"{where}: text_skip.weight has {state['text_skip.weight'].shape[0]} rows, settings.dim is "
            f"{settings.dim}: run `segrec train`"
        )


def trained_model(ctx: RunContext) -> TrainedModel | None:
    """The saved model of ``ctx``'s run when training is on and one exists (its text vectors' model must match): this
    run's, or in a dated run that did not fit one, the newest earlier night's."""
    source = ctx.store.latest(MODEL) if ctx.config.train.enabled else None
    if source is None:
        return None
    model = load_model(source)
    text_model = (ctx.manifest.model or {}).get("model_id") or _text_model_id(ctx.store)
    if model.text_model_id and text_model and model.text_model_id != text_model:
        raise InputError(
            f"the trained model was trained on text vectors of {model.text_model_id}, but item_vectors hold "
            f"{text_model}: run `segrec train` (or `segrec run`) again"
        )
    return model


def _text_model_id(store: OutputStore) -> str | None:
    if not store.exists("item_vectors"):
        return None
    row = store.read("item_vectors").select("model_id").first()
    return row["model_id"] if row else None


def with_cell(train: Train, cell: dict) -> Train:
    """``train`` with one grid cell's overrides (evaluate's train_grid)."""
    return train.model_copy(update=cell)
