"""The evaluation report: ``metrics.json``, ``report.md`` and PNG plots under ``<output>/evaluation``.

Files are rendered into a local temporary directory, then copied through the output store's
filesystem (local disk, HDFS, S3, DBFS alike); MLflow, when configured, logs the same directory.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

import pandas as pd
from pyspark.ml.feature import PCA
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segrec.jobs.config import Evaluate
from segrec.jobs.evaluation.ranking import METRICS
from segrec.jobs.evaluation.results import OURS, EvaluationResult, Split
from segrec.jobs.io.store import OutputStore
from segrec.jobs.io.tracking import Tracker

log = logging.getLogger("segrec")

SHOWN_LIST_METRICS = ("coverage", "novelty", "diversity", "personalisation")


def projection(profiles: DataFrame, segments: DataFrame, sample: int, seed: int) -> pd.DataFrame:
    """(x, y, segment_id) for at most ``sample`` users of ``profiles`` (drawn with ``seed``), in their
    ``segments``: the first two principal components (Spark ML PCA)."""
    n = profiles.count()
    fraction = min(1.0, sample / max(n, 1) * 1.1)
    drawn = profiles.sample(fraction=fraction, seed=seed).limit(sample) if fraction < 1.0 else profiles
    feats = drawn.join(segments.select("user_id", "segment_id"), on="user_id", how="inner").select(
        "segment_id", array_to_vector(F.col("vector")).alias("features")
    )
    if feats.limit(3).count() < 3:
        return pd.DataFrame(columns=["x", "y", "segment_id"])
    model = PCA(k=2, inputCol="features", outputCol="pc").fit(feats)
    points: pd.DataFrame = (
        model.transform(feats).select("segment_id", vector_to_array(F.col("pc")).alias("pc")).toPandas()
    )
    return pd.DataFrame({"x": points.pc.str[0], "y": points.pc.str[1], "segment_id": points.segment_id})


# ------------------------------------------------------------------------------------ tables


def _value(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def headline(result: EvaluationResult, model: str, k: int) -> dict[str, Any]:
    """{column: value} of one ``model`` of ``result`` at k: the ranking metrics, then the shown list metrics."""
    figures = result.models[model]
    values = {f"{m}@{k}": figures.ranking[k][m] for m in METRICS}
    values.update({m: figures.lists[k][m] for m in SHOWN_LIST_METRICS})
    return values


def comparison_table(result: EvaluationResult, k: int) -> str:
    """Text table, one row per model of ``result``: ranking metrics and list metrics at k."""
    rows = {name: headline(result, name, k) for name in result.model_names()}
    columns = list(next(iter(rows.values())))
    width = max(len(c) for c in columns) + 1
    lines = [f"{'model':<14}" + "".join(f"{c:>{width}}" for c in columns)]
    for name, values in rows.items():
        lines.append(f"{name:<14}" + "".join(f"{_value(v):>{width}}" for v in values.values()))
    return "\n".join(lines)


def ratio_lines(result: EvaluationResult, k: int, against: str = "als") -> list[str]:
    """Each of our models' NDCG and recall at k in ``result`` as a multiple of the baseline ``against``'s
    (ALS by default)."""
    models = result.models
    if against not in models:
        return []
    base = models[against].ranking[k]
    lines = []
    for name in reversed(OURS):
        if name in models:
            ours = models[name].ranking[k]
            shown = [
                f"{m}@{k} {ours[m] / base[m]:.2f}x" if base[m] else f"{m}@{k} n/a ({against} scores 0)"
                for m in ("ndcg", "recall")
            ]
            lines.append(f"{name} / {against}: " + ", ".join(shown))
    return lines


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table with ``header`` and ``rows`` (numbers to four decimals, None as n/a)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(v if isinstance(v, str) else _value(v) for v in row) + " |")
    return "\n".join(lines)


def winners(result: EvaluationResult, k: int) -> list[str]:
    """One line per column: which model of ``result`` is best at k (ties named together); higher is better
    for all."""
    rows = {name: headline(result, name, k) for name in result.model_names()}
    lines = []
    for column in next(iter(rows.values())):
        values = {m: row[column] for m, row in rows.items() if row[column] is not None}
        if values:
            best = max(values.values())
            name = column if "@" in column else f"{column}@{k}"
            lines.append(f"- {name}: " + ", ".join(m for m in values if values[m] == best) + f" ({best:.4f})")
    return lines


def holdout_line(split: Split) -> str:
    """How ``split`` (metrics.json's) chose each user's held-out interactions: the newest by time, or by a
    seeded hash where the interactions have no timestamps."""
    n = split.holdout_per_user
    if split.holdout_by == "time":
        return f"the newest {n} interactions per user"
    return f"{n} interactions per user, chosen by a seeded hash (the interactions have no timestamps)"


def markdown(result: EvaluationResult, k: int) -> str:
    """report.md for ``result``, its headline tables at cut-off ``k``."""
    models = result.model_names()
    split, tuning, quality = result.split, result.tuning, result.segments
    parts = [
        f"# segrec evaluation — run {result.run_id}",
        "",
        f"Hold-out: {holdout_line(split)}; {split.train_rows} training rows, "
        f"{split.held_out_rows} held-out rows, {split.users_evaluated} users evaluated. Every model is built "
        "from the training rows only; tuning used a second hold-out inside the training rows."
        + (
            f" New-item protocol: {split.cold_item_share:.0%} of the items lost all their training interactions "
            f"({split.training_rows_of_new_items_removed} rows) for every model."
            if split.cold_item_share
            else ""
        )
        + (
            f" Sampled: the lists of {split.users_evaluated} of the {split.users_with_held_out_rows} users with "
            f"held-out rows (evaluate.sample_users {split.sample_users:g}, seeded) were computed and scored; every "
            "model was still fitted on all training rows."
            if split.sample_users is not None
            else ""
        ),
        "",
        f"## Ranking metrics and list metrics at k={k}",
        "",
        markdown_table(
            ["model", *headline(result, models[0], k)], [[m, *headline(result, m, k).values()] for m in models]
        ),
        "",
        "Best per metric:",
        *winners(result, k),
        "",
        *[f"- {line}" for line in ratio_lines(result, k)],
        "",
        "## NDCG and recall at every k",
        "",
        markdown_table(
            ["model"] + [f"{m}@{c}" for c in result.models[models[0]].ranking for m in ("ndcg", "recall")],
            [
                [m] + [result.models[m].ranking[c][x] for c in result.models[m].ranking for x in ("ndcg", "recall")]
                for m in models
            ],
        ),
        "",
        "## Slices",
        "",
        f"Cold users (at most {result.slices['cold_users']['max_train_interactions']} training interactions): "
        f"{result.slices['cold_users']['users']} users. Long tail: items outside the "
        f"{result.slices['long_tail']['head_share']:.0%} most popular, "
        f"{result.slices['long_tail']['items']} items, "
        f"{result.slices['long_tail']['held_out_rows']} held-out rows.",
        "",
        markdown_table(
            [
                "model",
                f"ndcg@{k} cold users",
                f"recall@{k} cold users",
                f"recall@{k} long tail",
                f"long-tail share of lists@{k}",
            ],
            [[m, *slice_values(result, m, k)] for m in models],
        ),
        "",
        *cold_item_section(result, models, k),
        "",
        *new_user_section(result, models, k),
        "## Tuning (validation split)",
        "",
        "Hybrid, chosen by "
        + tuning["metric"]
        + ": "
        + ", ".join(f"{key} {_shown(value)}" for key, value in tuning["hybrid"]["best"].items())
        + ".",
        "",
        markdown_table(
            ["segment_k", "popularity_weight", tuning["metric"], f"coverage@{tuning['metric'].split('@')[1]}"],
            [
                [_shown(row["segment_k"]), str(row["popularity_weight"]), row["ndcg"], row["coverage"]]
                for row in tuning["hybrid"]["grid"]
            ],
        ),
        "",
        *trained_tuning(tuning),
        "ALS grid (implicit feedback):",
        "",
        markdown_table(
            ["rank", "reg_param", "alpha", tuning["metric"]],
            [[str(c["rank"]), str(c["reg_param"]), str(c["alpha"]), c["ndcg"]] for c in tuning["als"]["grid"]],
        ),
        "",
        "## Segments (fitted on the training rows)",
        "",
        f"Text space: k={quality['k']}, cosine silhouette {_value(quality['silhouette'])}, Davies–Bouldin "
        f"{_value(quality['davies_bouldin'])}.",
        "",
        *segment_section("text space (frozen text vectors)", quality),
        *(
            segment_section("learned space (the trained towers, what `run` ships)", quality["learned"])
            if "learned" in quality
            else []
        ),
        *audience_section(result.audiences),
        "![segments](plots/segments.png) ![stability](plots/stability_by_k.png)",
        "![projection](plots/user_projection.png) ![metrics](plots/metrics_vs_baselines.png)",
        "",
    ]
    return "\n".join(parts)


def audience_section(audiences: dict) -> list[str]:
    """Audience precision and lift by method (``audiences``: metrics.json's), for existing and new items."""
    if not audiences or not any(key in audiences for key in ("existing_items", "new_items")):
        return []
    protocol = audiences["protocol"]
    lines = [
        "## Audiences (who should get this item)",
        "",
        f"Each audience holds {protocol['audience_share']:.0%} of the {protocol['eligible_users']} users evaluated "
        f"({protocol['audience_size']} users), never a user who already has the item; items with at least "
        f"{protocol['min_responders']} held-out responders. Precision: the share of the audience that engages "
        "with the item in held-out rows; lift: precision over the base rate.",
        "",
    ]
    for key, title in (("existing_items", "Existing items"), ("new_items", "New items (no training row)")):
        figures = audiences.get(key)
        if not figures:
            continue
        items = max(f["items"] for f in figures.values())
        lines += [
            f"{title}, {items} items:",
            "",
            markdown_table(
                ["method", "precision", "lift"],
                [[name, f["precision"], f["lift"]] for name, f in figures.items()],
            ),
            "",
            *[f"- {line}" for line in audience_ratio_lines(figures)],
            "",
        ]
    return lines


def audience_ratio_lines(figures: dict) -> list[str]:
    """Our shipped audiences' precision as a multiple of each other method's (``figures``: by method)."""
    ours = next((name for name in ("trained", "content") if name in figures), None)
    if ours is None or not figures[ours]["precision"]:
        return []
    return [
        f"{ours} / {name}: precision {figures[ours]['precision'] / f['precision']:.2f}x"
        for name, f in figures.items()
        if name not in ("trained", "content") and f["precision"]
    ]


def segment_section(title: str, figures: dict) -> list[str]:
    """Each segment's stability and targeting lift (``figures`` of one space, named by ``title``) beside
    random segments of the same sizes."""
    ours, chance = figures["targeting"]["segments"], figures["targeting"]["random"]
    rows = [
        [
            str(row["segment_id"]),
            str(row["members"]),
            _value(j),
            row["top_items"],
            row["member_rate"],
            row["everyone_rate"],
            _value(row["lift"]),
        ]
        for row, j in zip(ours["segments"], figures["stability"], strict=True)
    ]
    curve = figures.get("stability_by_k") or {}
    lines = [
        f"Segments in the {title}: k={figures['k']}, {figures['reproducible_segments']} reproducible "
        f"(bootstrap Jaccard >= the threshold), size-weighted mean stability {_value(figures['mean_stability'])}. "
        f"Mean targeting lift {_value(ours['mean_lift'])}; random segments of the same sizes "
        f"{_value(chance['mean_lift'])} (mean of {len(chance.get('draws', []))} draws: "
        + ", ".join(f"{d:.2f}" for d in chance.get("draws", []))
        + "; same run).",
        "",
        markdown_table(
            [
                "segment",
                "members evaluated",
                "stability",
                "top items",
                "member response",
                "everyone's response",
                "targeting lift",
            ],
            rows,
        ),
        "",
    ]
    if curve:
        lines += [
            "Stability by k (reproducible segments / k, mean Jaccard): "
            + ", ".join(f"{k}: {c['reproducible']}/{k} {c['mean_stability']:.2f}" for k, c in curve.items()),
            "",
        ]
    return lines


def new_user_section(result: EvaluationResult, models: list[str], k: int) -> list[str]:
    """The new-user protocol's users (no training row, their own text only) in ``result``, scored apart
    from the rest: each of ``models`` at ``k``."""
    sizes = result.slices.get("new_users")
    if not sizes:
        return []
    return [
        f"New users (`evaluate.cold_user_share` {sizes['cold_user_share']}): {sizes['users']} users lost every "
        f"training interaction, {sizes['with_text']} of them with a text of their own; every other table "
        "leaves them out. ALS has no factor for a user without interactions, so its figures here are 0 by "
        "construction; content, hybrid and trained place them by their text.",
        "",
        markdown_table(
            ["model", f"ndcg@{k} new users", f"recall@{k} new users", f"hit_rate@{k} new users"],
            [[m, *((result.models[m].new_users or {})[k][x] for x in ("ndcg", "recall", "hit_rate"))] for m in models],
        ),
        "",
    ]


def cold_item_section(result: EvaluationResult, models: list[str], k: int) -> list[str]:
    """Held-out rows whose item had no training interaction in ``result``: which of ``models`` can recommend
    new items at all, at ``k``."""
    sizes = result.slices.get("cold_items")
    if not sizes:
        return []
    lines = [
        f"Cold items (no training interaction): {sizes['items']} items, {sizes['held_out_rows']} held-out rows. "
        "most_popular and ALS cannot rank an item without training interactions (no count, no factor), so "
        "their figures here are 0 by construction; content, hybrid and trained reach them through item texts.",
    ]
    if sizes["held_out_rows"]:

        def only(m: str, metric: str):
            figures = result.models[m].cold_items_only
            return figures[k][metric] if figures else "n/a"

        lines += [
            "",
            "In full lists (ranked against the whole catalogue), and ranked among the cold items only (can the "
            "model tell which new item a user will pick? n/a: the model has no score for an item without "
            "interactions):",
            "",
            markdown_table(
                [
                    "model",
                    f"ndcg@{k} in full lists",
                    f"recall@{k} in full lists",
                    f"ndcg@{k} among cold items",
                    f"recall@{k} among cold items",
                ],
                [
                    [
                        m,
                        result.models[m].cold_items[k]["ndcg"],
                        result.models[m].cold_items[k]["recall"],
                        only(m, "ndcg"),
                        only(m, "recall"),
                    ]
                    for m in models
                ],
            ),
        ]
    return lines


def trained_tuning(tuning: dict) -> list[str]:
    """The towers' grid on the validation split (``tuning``), and which settings the train stage ships with."""
    if "trained" not in tuning:
        return []
    best = tuning["trained"]["best"]
    shipped = (
        "the train stage's configured settings"
        if not best
        else f"train settings {best}: set them under `train:` for the stage to ship the evaluated model"
    )
    lines = [objective_line(tuning["trained"]), ""]
    if tuning["trained"].get("als_weight"):
        lines[0] += " " + blend_line(tuning["trained"]["als_weight"])
    if not tuning["trained"]["grid"]:
        return lines
    return [
        "Two-tower model, chosen by " + tuning["metric"] + f": {shipped}.",
        "",
        markdown_table(
            ["train settings", tuning["metric"], "final training loss"],
            [[str(c["cell"] or "as configured"), c["ndcg"], c["final_loss"]] for c in tuning["trained"]["grid"]],
        ),
        "",
        *lines,
    ]


def objective_line(trained: dict) -> str:
    """Which objective the towers were trained with, and with ``objective: auto`` the validation that chose it."""
    objective = trained.get("objective", "as configured")
    choice = trained.get("objective_choice")
    if not choice:
        return f"The towers were trained with the {objective} objective."
    sequential, order_free = choice["sequential"], choice["order_free"]
    return (
        f"The towers were trained with the {objective} objective, chosen by `train.objective: auto` on "
        f"{choice['validation_users']} users' newest training interaction (NDCG@10 at each objective's best "
        f"epoch: sequential {sequential['ndcg@10']:.4f} after {sequential['epochs']}, order-free "
        f"{order_free['ndcg@10']:.4f} after {order_free['epochs']}; sequential only where its gain is over twice "
        f"its standard error, {choice['sequential_gain']['ndcg@10']:.4f} ± "
        f"{choice['sequential_gain']['standard_error']:.4f}), then continued from its best epoch on every "
        "training interaction (`train.refit_epochs`); the train stage chooses the same way on its own rows."
    )


def blend_line(weight: float) -> str:
    """How the trained lists were scored when the towers are blended with ALS at ``weight``."""
    return (
        f"Its lists add {weight:g} x the product of ALS factors fitted on the same training rows "
        "(`train.als_weight`; new users and items: the towers alone), as `run` scores them."
    )


def _shown(value: Any) -> str:
    return "as configured" if value is None else str(value)


def slice_values(result: EvaluationResult, model: str, k: int) -> list[Any]:
    """``model``'s cold-user NDCG and recall, long-tail recall and long-tail share of lists at ``k`` in
    ``result`` (None where a slice is empty)."""
    m, slices = result.models[model], result.slices
    cold = [m.cold_users[k]["ndcg"], m.cold_users[k]["recall"]] if slices["cold_users"]["users"] else [None, None]
    tail = m.long_tail[k]["recall"] if slices["long_tail"]["held_out_rows"] else None
    return [*cold, tail, m.lists[k]["long_tail_share"]]


# ------------------------------------------------------------------------------------- plots


def plot_all(result: EvaluationResult, points: pd.DataFrame, directory: str) -> list[str]:
    """The report's PNG plots of ``result`` and the users' projected ``points``, written into
    ``directory``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on executors, schedulers or CI
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    written = []

    def save(fig, name: str) -> None:
        path = os.path.join(directory, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    spaces = {"text": result.segments}
    if "learned" in result.segments:
        spaces["learned"] = result.segments["learned"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, figures in spaces.items():
        curve = figures.get("stability_by_k") or {}
        ax.plot([int(k) for k in curve], [c["mean_stability"] for c in curve.values()], marker="o", label=name)
    ax.set(xlabel="k", ylabel="mean bootstrap Jaccard", title="Segment stability by k (training users)")
    ax.legend(fontsize=7)
    save(fig, "stability_by_k.png")

    fig, axes = plt.subplots(len(spaces), 3, figsize=(10, 3 * len(spaces)), squeeze=False)
    for (name, figures), row in zip(spaces.items(), axes, strict=True):
        table = figures["targeting"]["segments"]["segments"]
        ids = [str(t["segment_id"]) for t in table]
        row[0].bar(ids, [t["members"] for t in table])
        row[0].set(xlabel="segment", ylabel="users evaluated", title=f"{name}: sizes")
        row[1].bar(ids, [j or 0.0 for j in figures["stability"]])
        row[1].axhline(0.75, color="grey", linestyle="--", linewidth=1)
        row[1].set(xlabel="segment", ylabel="bootstrap Jaccard", ylim=(0, 1), title=f"{name}: stability")
        row[2].bar(ids, [t["lift"] or 0.0 for t in table])
        chance = figures["targeting"]["random"]["mean_lift"]
        if chance is not None:
            row[2].axhline(chance, color="grey", linestyle="--", linewidth=1, label="random segments")
            row[2].legend(fontsize=7)
        row[2].set(xlabel="segment", ylabel="held-out lift", title=f"{name}: targeting lift")
    save(fig, "segments.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    for segment, group in points.groupby("segment_id"):
        ax.scatter(group.x, group.y, s=6, alpha=0.6, label=f"segment {segment}")
    ax.set(xlabel="PC 1", ylabel="PC 2", title="User vectors, first two principal components")
    if len(points):
        ax.legend(markerscale=3, fontsize=7)
    save(fig, "user_projection.png")

    models = result.model_names()
    ks = list(result.models[models[0]].ranking)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    width = 0.8 / len(models)
    for metric, ax in zip(("ndcg", "recall"), axes, strict=True):
        for i, model in enumerate(models):
            ax.bar(
                [j + i * width for j in range(len(ks))],
                [result.models[model].ranking[k][metric] for k in ks],
                width,
                label=model,
            )
        ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(ks))], [f"@{k}" for k in ks])
        ax.set(title=metric.upper() if metric == "ndcg" else metric.capitalize())
    axes[0].legend(fontsize=7)
    save(fig, "metrics_vs_baselines.png")
    return written


# ------------------------------------------------------------------------------------ output


def report_k(settings: Evaluate) -> int:
    """The cut-off the headline tables use: ``settings``' tuning cut-off when it is one of ks, else the
    largest."""
    return settings.tune_k if settings.tune_k in settings.ks else max(settings.ks)


def write(
    store: OutputStore, result: EvaluationResult, points: pd.DataFrame, settings: Evaluate, tracker: Tracker
) -> str:
    """Render every file of ``result`` (plots of the projected ``points`` when ``settings`` ask) locally,
    copy them into the evaluation ``store``'s root (``<output>/evaluation``), and log them to MLflow
    through ``tracker`` (when tracking is on)."""
    k = report_k(settings)
    with tempfile.TemporaryDirectory(prefix="segrec-report-") as local:
        with open(os.path.join(local, "metrics.json"), "w", encoding="utf-8") as fh:
            json.dump(result.to_json(), fh, indent=2, default=str)
        with open(os.path.join(local, "report.md"), "w", encoding="utf-8") as fh:
            fh.write(markdown(result, k))
        if settings.plots:
            plot_all(result, points, os.path.join(local, "plots"))
        target = store.publish_files(local)
        log_to_tracker(tracker, result, local, k)
    return target


def log_to_tracker(tracker: Tracker, result: EvaluationResult, directory: str, k: int) -> None:
    """Log to ``tracker`` the tuned settings of ``result`` as params, every model's metrics (the names of metrics.json's
    values: ``<model>.<metric>_at_<k>``), and the report directory as artifacts."""
    tracker.log_params(
        {
            "holdout": result.split.holdout_per_user,
            "hybrid": result.tuning["hybrid"]["best"],
            "als": result.tuning["als"]["best"],
        },
        prefix="evaluate",
    )
    tracker.log_metrics(flat_metrics(result, k))
    tracker.log_artifacts(directory, "evaluation")


def flat_metrics(result: EvaluationResult, k: int) -> dict[str, float]:
    """Each model's ranking metrics in ``result`` at every cut-off and its list figures at ``k``, by dotted name."""
    metrics = {}
    for model, figures in result.models.items():
        for cut, values in figures.ranking.items():
            metrics.update({f"{model}.{m}_at_{cut}": v for m, v in values.items()})
        metrics.update({f"{model}.{m}_at_{k}": v for m, v in figures.lists[k].items()})
    return metrics
