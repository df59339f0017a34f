"""The train stage through the CLI and TorchDistributor: outputs, the learned space downstream, the saved
model's round trip, new items and users placed without retraining, several processes, bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from pyspark.sql import functions as F

from segrec.jobs import cli
from segrec.jobs.bootstrap.synthetic import config_dict, generate, write_parquet
from segrec.jobs.config import config_from_dict
from segrec.jobs.io.store import OutputStore, local_path
from segrec.jobs.towers.training import (
    checkpoint_dir,
    fit_towers,
    learned_item_vectors,
    learned_user_vectors,
    load_model,
    tower_settings,
    training_frames,
)
from segrec.udfs.towers.process import TrainJob, load_training_data

TRAIN = {"dim": 16, "hidden": 32, "epochs": 3, "batch_size": 64, "learning_rate": 0.005}


def workspace(tmp_path, tiny_model_dir, **train):
    data = generate(n_users=60, items_per_persona=6, personas=["hiker", "cook", "gamer"], seed=11)
    # an item nobody interacted with, and a user with a bio and no interaction
    data.items = pd.concat(
        [
            data.items,
            pd.DataFrame(
                [
                    {
                        "item_id": "new-item",
                        "title": "Trail map",
                        "description": "A trail map for anyone who loves hiking.",
                        "category": "hiker",
                    }
                ]
            ),
        ]
    )
    data.users = pd.concat([data.users, pd.DataFrame([{"user_id": "new-user", "bio": "I love hiking and camping."}])])
    paths = write_parquet(data, str(tmp_path / "in"))
    conf = config_dict(paths, str(tmp_path / "out"), model_path=tiny_model_dir)
    conf["model"].update({"max_length": 32, "chunk_overlap": 4})
    conf["train"] = {**TRAIN, **train}
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return str(path), conf, data


@pytest.fixture(scope="module")
def trained_run(spark, tmp_path_factory, tiny_model_dir):
    tmp_path = tmp_path_factory.mktemp("train-stage")
    conf_path, conf, data = workspace(tmp_path, tiny_model_dir)
    assert cli.main(["run", "--conf", conf_path]) == 0
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    return {"out": out, "conf": conf, "data": data, "manifest": manifest}


def read(spark, run, name):
    return spark.read.parquet(str(run["out"] / name))


def test_run_trains_between_embed_and_profile_and_records_the_model(trained_run):
    manifest = trained_run["manifest"]
    assert list(manifest["stages"])[:4] == ["validate", "embed", "train", "profile"]
    figures = manifest["stages"]["train"]
    assert figures["model_id"].startswith("towers-")
    # timestamps with objective auto: the processes chose on each user's newest interaction
    choice = figures["objective_choice"]
    assert figures["objective"] == choice["objective"] in ("sequential", "order_free")
    assert choice["validation_users"] > 0 and 0 <= choice["sequential"]["ndcg@10"] <= 1
    assert figures["items"] == len(trained_run["data"].items)
    # the winner's validation epochs up to its best, then one epoch on every interaction (refit_epochs)
    best = choice[choice["objective"]]["epochs"]
    assert 1 <= best <= TRAIN["epochs"] and len(manifest["train_curve"]) == best + 1
    assert all(np.isfinite(point["loss"]) for point in manifest["train_curve"])
    assert {"towers", "trained_item_vectors"} <= set(manifest["outputs"])
    saved = json.loads((trained_run["out"] / "towers" / "towers.json").read_text())
    assert saved["model_id"] == figures["model_id"] and saved["text_model_id"] == manifest["model"]["model_id"]
    assert saved["settings"]["objective"] == figures["objective"]  # what profile pools with is what was chosen


def test_every_item_and_user_lands_in_the_learned_space(spark, trained_run):
    model_id = trained_run["manifest"]["stages"]["train"]["model_id"]
    items = read(spark, trained_run, "trained_item_vectors").toPandas()
    assert len(items) == len(trained_run["data"].items) and set(items["model_id"]) == {model_id}
    matrix = np.stack(items["vector"].to_numpy())
    assert matrix.shape[1] == TRAIN["dim"]
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert "new-item" in set(items["item_id"])  # no interaction: placed through its text
    users = read(spark, trained_run, "user_vectors").toPandas()
    assert set(users["space"]) == {model_id}
    assert len(users) == len(trained_run["data"].users)
    new_user = users.set_index("user_id").loc["new-user"]
    assert new_user["n_items"] == 0 and np.isclose(np.linalg.norm(new_user["vector"]), 1.0, atol=1e-5)


def test_segments_and_recommendations_use_the_learned_space(spark, trained_run):
    recs = read(spark, trained_run, "recommendations")
    assert recs.select("user_id").distinct().count() == len(trained_run["data"].users)
    seen = trained_run["data"].interactions.groupby("user_id")["item_id"].agg(set).to_dict()
    for row in recs.collect():
        assert row.item_id not in seen.get(row.user_id, set())
    assert read(spark, trained_run, "segments").count() == len(trained_run["data"].users)


def test_saved_model_reloads_to_identical_vectors(spark, trained_run):
    config = config_from_dict(trained_run["conf"])
    store = OutputStore(spark, config.output, "check")
    model = load_model(store)
    assert model.model_id == trained_run["manifest"]["stages"]["train"]["model_id"]
    again = learned_item_vectors(read(spark, trained_run, "item_vectors"), model).toPandas().set_index("item_id")
    saved = read(spark, trained_run, "trained_item_vectors").toPandas().set_index("item_id")
    np.testing.assert_allclose(np.stack(again.loc[saved.index, "vector"]), np.stack(saved["vector"]), atol=1e-6)


def test_a_rerun_with_the_same_seed_gives_the_same_vectors(spark, trained_run):
    config = config_from_dict(trained_run["conf"])
    store = OutputStore(spark, config.output, "rerun")
    model, _ = fit_towers(
        spark,
        store,
        config,
        read(spark, trained_run, "interactions"),
        read(spark, trained_run, "item_vectors"),
        read(spark, trained_run, "text_vectors"),
        tag="rerun",
    )
    again = learned_item_vectors(read(spark, trained_run, "item_vectors"), model).toPandas().set_index("item_id")
    saved = read(spark, trained_run, "trained_item_vectors").toPandas().set_index("item_id")
    np.testing.assert_allclose(np.stack(again.loc[saved.index, "vector"]), np.stack(saved["vector"]), atol=1e-6)


def own_persona_share(spark, trained_run, model, config, k=3):
    """Share of each user's k best-scored items (seen ones included: with 6 items per persona a user has
    seen most of their own) that are of the user's own persona."""
    data = trained_run["data"]
    items = learned_item_vectors(read(spark, trained_run, "item_vectors"), model).toPandas()
    users = learned_user_vectors(
        read(spark, trained_run, "users"),
        read(spark, trained_run, "interactions"),
        spark.createDataFrame(items),
        read(spark, trained_run, "text_vectors"),
        model,
        config,
    )
    users = users.where(F.col("vector").isNotNull()).toPandas()
    users = users[users["user_id"].isin(data.user_persona.index)]
    scores = np.stack(users["vector"]) @ np.stack(items["vector"]).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    item_persona = items["item_id"].map(data.item_persona).to_numpy()
    user_persona = users["user_id"].map(data.user_persona).to_numpy()
    return float((item_persona[top] == user_persona[:, None]).mean())


# long: training itself is tests/test_towers.py's; this runs two gloo processes and compares them with one
@pytest.mark.long
def test_two_processes_train_as_well_as_one(spark, trained_run):
    config = config_from_dict(trained_run["conf"])
    store = OutputStore(spark, config.output, "procs")
    inputs = [read(spark, trained_run, n) for n in ("interactions", "item_vectors", "text_vectors")]
    shares, examples = {}, {}
    for processes in (1, 2):
        train = config.train.model_copy(update={"processes": processes, "epochs": 20, "batch_size": 16})
        model, figures = fit_towers(spark, store, config, *inputs, train=train, tag=f"procs{processes}")
        shares[processes] = own_persona_share(spark, trained_run, model, config)
        examples[processes] = figures["examples"]
    assert shares[1] >= 0.6 and shares[2] >= 0.6, shares
    assert abs(shares[1] - shares[2]) <= 0.15, shares
    assert examples[1] == examples[2] > 0  # each process counts its own share; the figure is their sum


def test_each_training_process_reads_only_its_own_users(spark, trained_run, tmp_path):
    config = config_from_dict(trained_run["conf"])
    store = OutputStore(spark, config.output.model_copy(update={"path": str(tmp_path)}), "shards")
    inputs = [read(spark, trained_run, n) for n in ("interactions", "item_vectors", "text_vectors")]
    frames = training_frames(*inputs, config, processes=3)
    paths = {}
    for name, frame in frames.items():
        store.write_staged(frame, name, partition_by="shard" if "shard" in frame.columns else None)
        paths[name] = local_path(store.staging_path(name))
    job = TrainJob(paths["catalogue"], paths["sequences"], paths["user_texts"], tower_settings(config.train, True))
    shares = [load_training_data(job, rank) for rank in range(3)]
    users = [set(data_users(frames["sequences"], rank)) for rank in range(3)]
    assert all(users) and not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    expected = {r.user_id: r.shard for r in frames["sequences"].select("user_id", "shard").collect()}
    assert expected == {u: rank for rank in range(3) for u in users[rank]}
    # each process holds its own users' histories, and every process the counts over all of them
    assert sum(len(d.flat_items) for d in shares) == inputs[0].count()
    counts = shares[0].item_counts
    assert all(np.array_equal(d.item_counts, counts) for d in shares) and counts.sum() == inputs[0].count()
    assert all(len(d.item_ids) == inputs[1].count() for d in shares)


def data_users(sequences, rank):
    return [r.user_id for r in sequences.where(F.col("shard") == rank).select("user_id").collect()]


def test_items_without_text_stop_training_with_a_clear_error(spark, tmp_path, tiny_model_dir, capsys):
    conf_path, conf, _ = workspace(tmp_path, tiny_model_dir)
    conf["inputs"]["items"]["columns"]["text"] = []
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(conf))
    for stage in ("validate", "embed"):
        assert cli.main([stage, "--conf", conf_path]) == 0
    assert cli.main(["train", "--conf", conf_path]) == 2
    err = capsys.readouterr().err
    assert "train: no item text vectors" in err and "Traceback" not in err


def test_train_disabled_keeps_the_text_space(spark, tmp_path, tiny_model_dir):
    conf_path, _, _ = workspace(tmp_path, tiny_model_dir, enabled=False)
    assert cli.main(["run", "--conf", conf_path]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "skipped" in manifest["stages"]["train"]
    users = spark.read.parquet(str(tmp_path / "out" / "user_vectors"))
    assert {r.space for r in users.select("space").distinct().collect()} == {"text"}


def test_data_without_timestamps_trains_order_free(spark, trained_run):
    config = config_from_dict(trained_run["conf"])
    store = OutputStore(spark, config.output, "untimed")
    untimed = read(spark, trained_run, "interactions").withColumn("timestamp", F.lit(None).cast("timestamp"))
    model, figures = fit_towers(
        spark,
        store,
        config,
        untimed,
        read(spark, trained_run, "item_vectors"),
        read(spark, trained_run, "text_vectors"),
        tag="untimed",
    )
    assert figures["objective"] == "order_free" and model.weights.settings.objective == "order_free"
    users = learned_user_vectors(
        None,
        untimed,
        learned_item_vectors(read(spark, trained_run, "item_vectors"), model),
        read(spark, trained_run, "text_vectors"),
        model,
        config,
    ).toPandas()
    matrix = np.stack(users["vector"].to_numpy())
    assert np.isfinite(matrix).all()
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


# long: saved towers load in tests/test_saved_models.py and place items by their text alone in
# tests/test_towers.py; this runs train in apply mode over a grown catalogue
@pytest.mark.long
def test_apply_mode_places_new_items_with_the_saved_towers(spark, tmp_path, tiny_model_dir):
    conf_path, conf, data = workspace(tmp_path, tiny_model_dir, epochs=1)
    assert cli.main(["run", "--conf", conf_path]) == 0
    towers = (tmp_path / "out" / "towers" / "towers.safetensors").read_bytes()
    fitted = json.loads((tmp_path / "out" / "manifest.json").read_text())["stages"]["train"]["model_id"]
    items = pd.concat(
        [
            data.items,
            pd.DataFrame(
                [
                    {
                        "item_id": "brand-new",
                        "title": "Camping stove",
                        "description": "A stove for anyone who loves camping.",
                        "category": "hiker",
                    }
                ]
            ),
        ]
    )
    items.to_parquet(conf["inputs"]["items"]["path"], index=False)
    for stage in ("validate", "embed"):
        assert cli.main([stage, "--conf", conf_path]) == 0
    assert cli.main(["train", "--conf", conf_path, "--set", "train.mode=apply"]) == 0
    figures = json.loads((tmp_path / "out" / "manifest.json").read_text())["stages"]["train"]
    assert figures["mode"] == "apply" and figures["model_id"] == fitted and figures["items"] == len(items)
    assert (tmp_path / "out" / "towers" / "towers.safetensors").read_bytes() == towers  # nothing retrained
    learned = spark.read.parquet(str(tmp_path / "out" / "trained_item_vectors")).toPandas().set_index("item_id")
    assert np.isclose(np.linalg.norm(learned.loc["brand-new", "vector"]), 1.0, atol=1e-5)


def test_an_als_blend_is_fitted_beside_the_towers_and_scored_by_recommend(spark, tmp_path, tiny_model_dir, capsys):
    conf_path, _, data = workspace(tmp_path, tiny_model_dir, epochs=1, als_weight=0.5, als_rank=4, als_max_iter=3)
    assert cli.main(["run", "--conf", conf_path]) == 0
    out = tmp_path / "out"
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert stages["train"]["als_weight"] == 0.5 == stages["recommend"]["als_weight"]
    assert stages["train"]["als_users"] == data.interactions["user_id"].nunique()
    assert stages["train"]["als_items"] == data.interactions["item_id"].nunique()
    assert json.loads((out / "towers" / "towers.json").read_text())["als_weight"] == 0.5
    users = pd.read_parquet(out / "user_vectors").set_index("user_id")["vector"]
    items = pd.read_parquet(out / "trained_item_vectors").set_index("item_id")
    g = pd.read_parquet(out / "als_user_factors").set_index("user_id")["factor"]
    f = pd.read_parquet(out / "als_item_factors").set_index("item_id")["factor"]
    recs = pd.read_parquet(out / "recommendations")
    assert "new-user" in set(recs["user_id"])
    for row in recs.itertuples():
        u = np.asarray(users[row.user_id], np.float64)
        als = 0.5 * float(np.dot(g[row.user_id], f[row.item_id])) if row.user_id in g and row.item_id in f else 0.0
        assert row.similarity == pytest.approx(float(u @ items.at[row.item_id, "vector"]) + als, abs=1e-5)
        part = items.at[row.item_id, "learned_part"]
        learned = 0.0 if part is None else float(u @ np.asarray(part, np.float64))
        assert row.learned_similarity == pytest.approx(learned + als, abs=1e-5)  # ALS's share is learned too
    # factors from another model are refused, naming what to run
    stale = pd.read_parquet(out / "als_item_factors").assign(model_id="towers-other")
    for old in (out / "als_item_factors").glob("*.parquet"):
        old.unlink()
    stale.to_parquet(out / "als_item_factors" / "part-0.parquet", index=False)
    assert cli.main(["recommend", "--conf", conf_path]) == 2
    err = capsys.readouterr().err
    assert "als_item_factors was fitted beside towers-other" in err and "run train again" in err


class _Store:
    def __init__(self, root):
        self.root = root

    def checkpoint_path(self, name):
        return f"{self.root}/_staging/checkpoints-{name}"


def test_checkpoints_go_under_a_relative_output_path_and_not_to_an_object_store(tmp_path, monkeypatch, caplog):
    """A relative output.path (the demo's ``output``) is the driver's working directory's, as Spark
    qualifies it: the training processes keep checkpoints there; an object store has no file to resume."""
    monkeypatch.chdir(tmp_path)
    assert checkpoint_dir(_Store("output"), "train") == str(tmp_path / "output" / "_staging" / "checkpoints-train")
    assert checkpoint_dir(_Store("file:/data/out"), "train") == "/data/out/_staging/checkpoints-train"
    assert checkpoint_dir(_Store("dbfs:/out"), "train") == "/dbfs/out/_staging/checkpoints-train"
    assert checkpoint_dir(_Store("s3://bucket/out"), "train") is None
    assert "a failed training will restart from its first epoch" in caplog.text
