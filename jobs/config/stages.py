"""The stages' sections: model, embed, profile, train, segment, recommend and evaluate."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from segrec.jobs.config.base import PACKAGED_MODEL, Section
from segrec.jobs.config.inputs import AudienceRequestsSource


class Model(Section):
    """``model``: the text encoder's directory and how texts are tokenised, pooled and computed."""

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


class Embed(Section):
    """``embed``: how texts are batched for the encoder."""

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


class Profile(Section):
    """``profile``: how the user's own texts and their history mix in a text-space user vector."""

    text_weight: float = Field(0.3, ge=0.0, le=1.0, description="share of the user's own texts in the mix")
    recency_half_life_days: float | None = Field(None, gt=0, description="None: no recency decay")


class Train(Section):
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


class Segment(Section):
    """``segment``: which segmenter, how many segments and how k is chosen, stability, portraits, and
    how ids carry over from run to run."""

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


class Recommend(Section):
    """``recommend``: list length, scoring, re-ranking, and how the item matrix reaches the workers."""

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


class Als(Section):
    """The ALS baseline's grid (implicit feedback); the best cell on the validation split is refitted."""

    ranks: list[int] = Field([16, 64], min_length=1)
    reg_params: list[float] = Field([0.01, 0.1], min_length=1)
    alphas: list[float] = Field([1.0, 20.0], min_length=1, description="implicit-feedback confidence scale")
    max_iter: int = Field(10, ge=1)


class Evaluate(Section):
    """``evaluate``: the hold-out protocol, cut-offs, the grids tuned on validation, and the baselines."""

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
    audience_share: float = Field(
        0.05, gt=0, le=1, description="audiences evaluated: each holds this share of the users evaluated"
    )
    audience_items: int = Field(200, ge=1, description="audiences evaluated: at most this many items (seeded)")
    audience_min_responders: int = Field(
        5, ge=1, description="audiences evaluated: items with at least this many held-out responders"
    )
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


class Audience(Section):
    """``audience``: who should get an item, a kind of item, or a brief (``segrec audience``)."""

    requests: AudienceRequestsSource | None = Field(
        None, description="the requests (a path or table); None: the audience stage has nothing to do"
    )
    size: int = Field(1000, ge=1, description="users per audience, unless a request sets size or min_score")
    max_per_user: int | None = Field(
        None, ge=1, description="the most audiences of one night a user may be in (None: no cap)"
    )
    exclude_owners: bool = Field(True, description="leave out users who already interacted with a requested item")
    pool: float = Field(
        3.0,
        ge=1.0,
        description="with max_per_user: each request's candidates are its best size x pool users, so a "
        "request that loses users to others' caps still fills from its own next best",
    )
    max_requests: int = Field(1000, ge=1, description="stop with exit 2 above this many valid requests")
