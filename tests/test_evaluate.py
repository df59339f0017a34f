"""The evaluate stage end to end on synthetic data: no held-out interaction reaches any model, and the
report, metrics and printed table are complete and consistent."""

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from segrec.jobs import cli
from segrec.jobs.bootstrap.synthetic import config_dict, generate, write_parquet
from segrec.jobs.evaluation import audience_quality, baselines, report
from segrec.jobs.evaluation.results import Split
from segrec.jobs.evaluation.split import holdout_split
from segrec.jobs.stages import evaluate

HOLDOUT = 2
NEW_USERS = 0.2  # evaluate.cold_user_share


def pairs(df) -> set[tuple[str, str]]:
    return {(r.user_id, r.item_id) for r in df.select("user_id", "item_id").collect()}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model_dir, spark):
    """One evaluate run through the CLI, with every model builder's interactions recorded as it is called."""
    root = tmp_path_factory.mktemp("evaluate")
    paths = write_parquet(generate(n_users=60, items_per_persona=8, seed=3), str(root / "in"))
    conf = config_dict(paths, str(root / "out"), model_path=tiny_model_dir)
    conf["segment"] = {"k": 3, "k_max": 4}
    conf["evaluate"] = {
        "holdout": HOLDOUT,
        "ks": [3, 5],
        "tune_k": 5,
        "popularity_weights": [0.0, 1.0],
        "segment_ks": [2, 3],
        "als": {"ranks": [4], "reg_params": [0.1], "alphas": [1.0, 5.0], "max_iter": 3},
        "projection_sample": 40,
        "chance_draws": 2,
        "train_grid": [{}, {"id_embeddings": False}],
        "cold_user_share": NEW_USERS,
        "audience_share": 0.2,
        "audience_min_responders": 2,
    }
    # blended with ALS whichever objective validation picks (auto blends the order-free one only)
    conf["train"] = {
        "dim": 16,
        "hidden": 32,
        "epochs": 3,
        "batch_size": 64,
        "learning_rate": 0.005,
        "als_weight": 0.5,
        "als_rank": 4,
        "als_max_iter": 3,
    }
    # a real MLflow tracking store (sqlite) and artifact folder in the temp dir
    conf["mlflow"] = {
        "tracking_uri": f"sqlite:///{root}/mlflow.db",
        "experiment": "segrec-test",
        "artifact_location": str(root / "mlartifacts"),
    }
    (root / "conf.yaml").write_text(yaml.safe_dump(conf))

    seen: dict[str, list[set]] = {}

    def recorder(name, fn, position):
        def wrapped(*args, **kwargs):
            seen.setdefault(name, []).append(pairs(args[position]))  # read now: staged inputs are dropped later
            return fn(*args, **kwargs)

        return wrapped

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate, "user_vectors", recorder("profiles", evaluate.user_vectors, 1))
        mp.setattr(
            evaluate, "Recommender", recorder("ours: seen-masks and segment popularity", evaluate.Recommender, 2)
        )
        mp.setattr(baselines, "Recommender", recorder("baselines: seen-masks", baselines.Recommender, 2))
        mp.setattr(baselines, "most_popular", recorder("most popular counts", baselines.most_popular, 1))
        mp.setattr(baselines, "als", recorder("ALS fit", baselines.als, 1))
        mp.setattr(baselines, "random_lists", recorder("random", baselines.random_lists, 0))
        mp.setattr(evaluate, "fit_towers", recorder("towers fit", evaluate.fit_towers, 3))
        mp.setattr(evaluate, "als_factors", recorder("ALS blended with the towers", evaluate.als_factors, 0))
        mp.setattr(
            evaluate, "learned_user_vectors", recorder("towers: user histories", evaluate.learned_user_vectors, 1)
        )
        mp.setattr(evaluate, "targeting_report", recorder("segments' top items", evaluate.targeting_report, 1))
        mp.setattr(audience_quality, "als_model", recorder("audiences: ALS", audience_quality.als_model, 0))
        code = cli.main(["evaluate", "--conf", str(root / "conf.yaml")])
    assert code == 0
    interactions = spark.read.parquet(str(root / "out" / "evaluation" / "interactions"))
    train, held, _ = evaluate.new_user_split(*holdout_split(interactions, HOLDOUT, seed=42), NEW_USERS, seed=42)
    return root, seen, pairs(train), pairs(held)


def test_no_held_out_interaction_reaches_any_training_input(evaluated):
    _, seen, train, held = evaluated
    assert len(held) > 100 and len(train) > 100
    # validation pass and test pass of ours; every ALS cell plus the refit; one call each for the rest
    assert len(seen["profiles"]) == 2
    assert len(seen["ALS fit"]) == 3
    assert len(seen["towers fit"]) == 3  # two grid cells on validation, then the refit
    assert len(seen["ALS blended with the towers"]) == 3  # beside each towers fit, on the same rows
    assert seen["ALS blended with the towers"] == seen["towers fit"]
    assert {"most popular counts", "random", "baselines: seen-masks", "ours: seen-masks and segment popularity"} <= set(
        seen
    )
    for name, inputs in seen.items():
        for used in inputs:
            assert used, name
            assert not used & held, f"{name}: held-out interactions leaked into a training input"
            assert used <= train, name
    # the final models were trained on the whole training set, not only the validation part
    assert seen["profiles"][1] == train and seen["most popular counts"][0] == train
    assert seen["towers fit"][-1] == train and seen["towers: user histories"][-1] == train
    assert seen["segments' top items"] == [train, train]  # text and learned space
    assert seen["audiences: ALS"] == [train]  # recommendForItemSubset fitted on the training rows


def test_report_files_and_metrics_are_complete(evaluated):
    root, _, _, held = evaluated
    folder = root / "out" / "evaluation"
    doc = json.loads((folder / "metrics.json").read_text())
    assert set(doc["models"]) == {"most_popular", "als", "random", "content", "hybrid", "trained"}
    towers = doc["tuning"]["trained"]
    assert [c["cell"] for c in towers["grid"]] == [{}, {"id_embeddings": False}]
    assert towers["best"] == max(towers["grid"], key=lambda c: c["ndcg"])["cell"]
    # every held-out item was seen in training here (dense synthetic data): the slice is empty, reported as such
    cold = doc["slices"]["cold_items"]
    assert cold["held_out_rows"] == 0 or doc["models"]["als"]["cold_items"]["5"]["ndcg"] == 0.0
    assert doc["split"]["held_out_rows"] == len(held)
    grid = doc["tuning"]["hybrid"]["grid"]
    assert [(r["segment_k"], r["popularity_weight"]) for r in grid] == [(2, 0.0), (2, 1.0), (3, 0.0), (3, 1.0)]
    best = max(grid, key=lambda r: r["ndcg"])
    assert doc["tuning"]["hybrid"]["best"] == {
        "segment_k": best["segment_k"],
        "popularity_weight": best["popularity_weight"],
    }
    assert doc["segments"]["k"] == best["segment_k"]  # the report's segments are the chosen hybrid's
    assert len(doc["tuning"]["als"]["grid"]) == 2
    for name, figures in doc["models"].items():
        assert set(figures["ranking"]) == {"3", "5"}
        at5 = figures["ranking"]["5"]
        assert 0.0 <= at5["precision"] <= 1.0 and 0.0 <= at5["ndcg"] <= 1.0, name
        assert at5["recall"] >= figures["ranking"]["3"]["recall"] - 1e-12, name  # recall grows with k
        lists = figures["lists"]["5"]
        assert 0.0 < lists["coverage"] <= 1.0 and lists["novelty"] > 0, name
    # content ranks by text similarity: on planted personas it must beat random
    assert doc["models"]["content"]["ranking"]["5"]["ndcg"] > doc["models"]["random"]["ranking"]["5"]["ndcg"]
    assert doc["models"]["trained"]["ranking"]["5"]["ndcg"] > doc["models"]["random"]["ranking"]["5"]["ndcg"]
    assert sum(doc["segments"]["sizes"].values()) == 60
    assert doc["segments"]["davies_bouldin"] > 0 and -1 <= doc["segments"]["silhouette"] <= 1
    for space in (doc["segments"], doc["segments"]["learned"]):
        assert len(space["stability"]) == space["k"] and all(0 <= j <= 1 for j in space["stability"])
        targeting = space["targeting"]
        assert [row["segment_id"] for row in targeting["segments"]["segments"]] == list(range(space["k"]))
        assert sum(row["members"] for row in targeting["segments"]["segments"]) == len({u for u, _ in held})
        assert sum(row["members"] for row in targeting["random"]["segments"]) == len({u for u, _ in held})
        assert len(targeting["random"]["draws"]) <= 2  # evaluate.chance_draws (a draw may have no top item)
    # (what the lift is worth is tests/test_targeting.py's: here a tiny random BERT and 3-epoch towers)
    text = (folder / "report.md").read_text()
    assert doc["split"]["holdout_by"] == "time"
    assert f"Hold-out: the newest {HOLDOUT} interactions per user;" in text
    assert "ndcg@5" in text and "Best per metric" in text
    for model in doc["models"]:  # in the headline table, the table at every k and the slices' table
        assert text.count(f"| {model} |") >= 3, model
    assert "Two-tower model, chosen by ndcg@5" in text and "Cold items (no training interaction)" in text
    towers = doc["tuning"]["trained"]
    assert towers["objective"] == towers["objective_choice"]["objective"]  # timestamps: chosen on validation
    assert f"The towers were trained with the {towers['objective']} objective, chosen by" in text
    assert towers["als_weight"] == 0.5 and "Its lists add 0.5 x the product of ALS factors" in text
    assert "Mean targeting lift" in text and "learned space" in text
    # new users: no training row, their own text only, scored apart from everyone else
    new = doc["slices"]["new_users"]
    assert 0 < new["users"] < 60 and new["with_text"] == new["users"] and new["cold_user_share"] == NEW_USERS
    assert doc["models"]["als"]["new_users"]["5"]["ndcg"] == 0.0  # no factor without an interaction
    assert doc["models"]["most_popular"]["new_users"]["5"]["hit_rate"] > 0  # listed although never seen
    assert doc["models"]["trained"]["new_users"]["5"]["hit_rate"] > 0  # placed by the user tower's text path
    assert f"New users (`evaluate.cold_user_share` {NEW_USERS}): {new['users']} users" in text
    # audiences: every method over the same items, precision a share, our scorer and ALS on training rows only
    audiences = doc["audiences"]
    assert audiences["protocol"]["audience_size"] == math.ceil(0.2 * doc["split"]["users_evaluated"])
    existing = audiences["existing_items"]
    assert set(existing) == {"trained", "content", "als", "segments", "most_active", "random"}
    assert len({figures["items"] for figures in existing.values()}) == 1 and existing["random"]["items"] >= 1
    assert all(0.0 <= figures["precision"] <= 1.0 for figures in existing.values())
    assert "## Audiences (who should get this item)" in text and "| most_active |" in text
    for plot in ("stability_by_k", "segments", "user_projection", "metrics_vs_baselines"):
        assert (folder / "plots" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((root / "out" / "evaluation" / "_staging").glob("eval-*"))  # no staged leftovers
    assert sorted(os.listdir(root / "out")) == ["evaluation"]  # evaluate writes nowhere else


def test_the_report_says_how_the_held_out_interactions_were_chosen():
    split = Split(train_rows=10, held_out_rows=5, users_evaluated=1, holdout_per_user=5, holdout_by="time")
    assert report.holdout_line(split) == "the newest 5 interactions per user"
    by_hash = report.holdout_line(replace(split, holdout_per_user=3, holdout_by="seeded hash"))
    assert by_hash == "3 interactions per user, chosen by a seeded hash (the interactions have no timestamps)"


def test_the_cli_prints_the_comparison_table(evaluated, capsys):
    root, *_ = evaluated
    manifest = json.loads((root / "out" / "evaluation" / "manifest.json").read_text())
    table = manifest["evaluation_table"].splitlines()
    assert table[0].split()[:4] == ["model", "precision@5", "recall@5", "ndcg@5"]
    doc = json.loads((root / "out" / "evaluation" / "metrics.json").read_text())
    # every model measured, baselines first in registration order, then ours
    assert [line.split()[0] for line in table[1:]] == list(doc["models"])
    assert list(doc["models"]) == ["most_popular", "als", "random", "content", "hybrid", "trained"]
    ratio = doc["models"]["trained"]["ranking"]["5"]["ndcg"] / doc["models"]["als"]["ranking"]["5"]["ndcg"]
    assert manifest["evaluation_ratios"][0].startswith(f"trained / als: ndcg@5 {ratio:.2f}x, recall@5 ")
    assert manifest["stages"].keys() >= {"validate", "embed", "evaluate"}


def test_the_mlflow_run_read_back_holds_metrics_json_and_the_report(evaluated):
    mlflow = pytest.importorskip("mlflow")
    root, *_ = evaluated
    doc = json.loads((root / "out" / "evaluation" / "metrics.json").read_text())
    manifest = json.loads((root / "out" / "evaluation" / "manifest.json").read_text())
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("segrec-test").experiment_id])
    assert run.info.run_id == manifest["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.tags["segrec.run_id"] == doc["run_id"] and run.data.tags["segrec.command"] == "evaluate"
    metrics = run.data.metrics
    for model, figures in doc["models"].items():
        for cut, values in figures["ranking"].items():
            for name, value in values.items():
                assert metrics[f"{model}.{name}_at_{cut}"] == pytest.approx(value), (model, name, cut)
    assert metrics["als.coverage_at_5"] == pytest.approx(doc["models"]["als"]["lists"]["5"]["coverage"])
    params = run.data.params
    assert params["evaluate.holdout"] == str(HOLDOUT) and params["train.dim"] == "16"
    assert json.loads(params["evaluate.als.rank"]) == doc["tuning"]["als"]["best"]["rank"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/report.md", "evaluation/plots"} <= artifacts
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "evaluation/metrics.json")).read_text())
    assert logged == doc


def test_tracking_is_off_without_a_uri_and_required_when_asked(monkeypatch):
    from segrec.jobs.config import Mlflow
    from segrec.jobs.errors import ConfigError
    from segrec.jobs.io.tracking import Tracker

    for name in ("MLFLOW_TRACKING_URI", "DATABRICKS_RUNTIME_VERSION"):
        monkeypatch.delenv(name, raising=False)
    off = Tracker(Mlflow(), "r1", "run")
    assert not off.enabled
    off.log_metrics({"x": 1.0})  # a no-op, no run started
    assert off.run_id is None
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    assert Tracker(Mlflow(), "r1", "run").uri == "databricks"
    monkeypatch.setattr("segrec.jobs.io.tracking._mlflow_installed", lambda: False)
    assert not Tracker(Mlflow(), "r1", "run").enabled  # auto: a warning, nothing logged
    with pytest.raises(ConfigError, match="mlflow is not installed"):
        Tracker(Mlflow(enabled=True), "r1", "run")


def test_a_failing_tracking_server_stops_tracking_not_the_run_unless_required(tmp_path, caplog):
    pytest.importorskip("mlflow")
    from segrec.jobs.config import Mlflow
    from segrec.jobs.io.tracking import Tracker, experiment_name

    (tmp_path / "a-file").write_text("not a folder")
    broken = f"sqlite:///{tmp_path}/a-file/mlflow.db"  # a store that cannot be created
    tracker = Tracker(Mlflow(tracking_uri=broken), "r1", "run")
    tracker.log_metrics({"x": 1.0})
    assert not tracker.enabled and "nothing more is logged to MLflow" in caplog.text
    tracker.log_params({"y": 2})  # now a no-op
    with pytest.raises(Exception):  # noqa: B017 (MLflow's error class differs by version and store)
        Tracker(Mlflow(tracking_uri=broken, enabled=True), "r1", "run").log_metrics({"x": 1.0})
    assert experiment_name("segrec", "databricks") == "/Shared/segrec"
    assert experiment_name("/Users/me/segrec", "databricks") == "/Users/me/segrec"
    assert experiment_name("segrec", "sqlite:///x.db") == "segrec"


def test_a_source_where_nothing_can_be_held_out_is_refused(spark, tmp_path, tiny_model_dir, capsys):
    data = generate(n_users=12, items_per_persona=4, seed=2)
    data.interactions = data.interactions.groupby("user_id").head(1)  # one interaction per user
    paths = write_parquet(data, str(tmp_path / "in"))
    conf = config_dict(paths, str(tmp_path / "out"), model_path=tiny_model_dir)
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(conf))
    assert cli.main(["evaluate", "--conf", str(tmp_path / "conf.yaml")]) == 2
    assert "no interaction could be held out (every user has a single interaction)" in capsys.readouterr().err


def test_new_item_protocol_removes_whole_items_from_training(spark):
    rows = [(f"u{u}", f"i{i}") for u in range(20) for i in range(30) if (u + i) % 3 == 0]
    train = spark.createDataFrame(rows, "user_id string, item_id string")
    kept, removed = evaluate.without_new_items(train, 0.3, seed=5)
    kept_items = {r.item_id for r in kept.select("item_id").distinct().collect()}
    removed_items = {r.item_id for r in removed.select("item_id").distinct().collect()}
    assert removed_items and kept_items and not kept_items & removed_items  # an item is new for every user
    assert kept.count() + removed.count() == len(rows)
    again, _ = evaluate.without_new_items(train, 0.3, seed=5)
    assert {r.item_id for r in again.select("item_id").distinct().collect()} == kept_items  # seeded
    untouched, nothing = evaluate.without_new_items(train, 0.0, seed=5)
    assert untouched.count() == len(rows) and nothing.count() == 0


def test_new_user_protocol_moves_every_training_row_of_a_seeded_share_of_users(spark):
    rows = [(f"u{u}", f"i{i}") for u in range(40) for i in range(6)]
    train = spark.createDataFrame(rows[::2], "user_id string, item_id string")
    held = spark.createDataFrame(rows[1::2], "user_id string, item_id string")
    kept, held_now, new = evaluate.new_user_split(train, held, 0.25, seed=5)
    new_ids = {r.user_id for r in new.collect()}
    assert 3 < len(new_ids) < 20 and not new_ids & {r.user_id for r in kept.select("user_id").collect()}
    assert pairs(kept) | pairs(held_now) == set(rows) and not pairs(kept) & pairs(held_now)  # nothing lost
    assert {u for u, _ in pairs(held_now)} == {f"u{u}" for u in range(40)}  # every user still scored
    again = {r.user_id for r in evaluate.new_user_split(train, held, 0.25, seed=5)[2].collect()}
    assert again == new_ids  # seeded
    same_train, same_held, nobody = evaluate.new_user_split(train, held, 0.0, seed=5)
    assert pairs(same_train) == pairs(train) and pairs(same_held) == pairs(held) and nobody.count() == 0


def test_a_user_sample_is_seeded_and_sized_as_asked(spark):
    held = spark.createDataFrame(
        [(f"u{u}", f"i{i}") for u in range(400) for i in range(2)], "user_id string, item_id string"
    )

    def users(sample, seed=42):
        return {r.user_id for r in evaluate.sampled_users(held, sample, seed).collect()}

    everyone = users(None)
    assert len(everyone) == 400
    share = users(0.25)
    assert share == users(0.25) and share < everyone and 60 < len(share) < 140  # about a quarter, the same again
    assert users(0.25, seed=7) != share
    counted = users(37)
    assert len(counted) == 37 and counted == users(37) and counted < everyone
    assert users(1000) == everyone


# long: the choice of k is tests/test_segment_choice.py's and evaluate's tuning is the fixture run's; this
# runs a second evaluate with k auto to see the choice made once, on validation
@pytest.mark.long
def test_segment_k_auto_is_chosen_once_on_validation_and_refitted_for_the_test(
    spark, tmp_path, tiny_model_dir, monkeypatch
):
    """``segment.k: auto`` in the text space: the bootstrap choice runs on the validation split, and the
    test side fits the chosen k (its curve reported as validation's), never choosing again."""
    from conftest import small_config

    conf = small_config(tmp_path, tiny_model_dir, "out", segment={"k": "auto", "k_min": 2, "k_max": 3, "bootstrap": 2})
    raw = yaml.safe_load(Path(conf).read_text())
    raw["train"]["enabled"] = False
    Path(conf).write_text(yaml.safe_dump(raw))
    asked: list = []
    fit = evaluate.fit

    def recording(spark, feats, settings, n_users):
        asked.append(settings.k)
        return fit(spark, feats, settings, n_users)

    monkeypatch.setattr(evaluate, "fit", recording)
    assert cli.main(["evaluate", "--conf", conf]) == 0
    doc = json.loads((tmp_path / "out" / "evaluation" / "metrics.json").read_text())
    hybrid = doc["tuning"]["hybrid"]
    chosen = hybrid["best"]["segment_k"]
    assert chosen in (2, 3) and [row["segment_k"] for row in hybrid["grid"]] == [chosen]
    assert asked == ["auto", chosen]  # validation chooses, the test side refits that k
    assert doc["segments"]["k"] == chosen
    assert set(doc["segments"]["stability_by_k"]) == {"2", "3"} == set(hybrid["stability_by_k"])
