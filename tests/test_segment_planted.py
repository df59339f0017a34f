"""Segments on the planted-persona data with the real model: recovered personas, k, labels, assign mode."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from segrec.jobs import cli
from segrec.jobs.bootstrap.synthetic import PERSONAS, config_dict, generate, write_parquet

pytestmark = pytest.mark.slow


def adjusted_rand_index(a, b) -> float:
    a_ids = {v: i for i, v in enumerate(sorted(set(a)))}
    b_ids = {v: i for i, v in enumerate(sorted(set(b)))}
    table = np.zeros((len(a_ids), len(b_ids)))
    for x, y in zip(a, b, strict=True):
        table[a_ids[x], b_ids[y]] += 1
    comb = lambda n: n * (n - 1) / 2  # noqa: E731
    index = comb(table).sum()
    rows, cols, total = comb(table.sum(1)).sum(), comb(table.sum(0)).sum(), comb(table.sum())
    expected = rows * cols / total
    return float((index - expected) / ((rows + cols) / 2 - expected))


def test_ari_helper_on_known_values():
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 7, 7]) == 1.0
    assert abs(adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) + 0.5) < 1e-9


@pytest.fixture(scope="module")
def planted(tmp_path_factory, real_model_dir, spark):
    data = generate(n_users=150, items_per_persona=15, seed=11)
    root = tmp_path_factory.mktemp("planted")
    # Hold out 1 in 7 users (and their interactions) from the first fit, for assign mode.
    held = set(data.users["user_id"].iloc[3::7])  # every persona loses some users
    fit_data = generate(n_users=150, items_per_persona=15, seed=11)
    fit_data.users = data.users[~data.users["user_id"].isin(held)]
    fit_data.interactions = data.interactions[~data.interactions["user_id"].isin(held)]
    full_paths = write_parquet(data, str(root / "full"))
    fit_paths = write_parquet(fit_data, str(root / "fit"))
    conf = config_dict(fit_paths, str(root / "out"), model_path=real_model_dir)
    conf["segment"] = {"k": "auto", "k_min": 2, "k_max": 8}
    path = root / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    assert cli.main(["run", "--conf", str(path)]) == 0
    return data, root, path, full_paths, held


def segments_of(spark, root):
    rows = spark.read.parquet(str(root / "out" / "segments")).toPandas()
    return rows.set_index("user_id")


def test_planted_personas_are_recovered(planted, spark):
    data, root, _, _, _ = planted
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    figures = manifest["stages"]["segment"]
    curve = figures["stability_by_k"]
    assert figures["k"] == 5, curve  # the planted personas, chosen by bootstrap stability alone
    assert figures["reproducible_segments"] == 5 and figures["constructed_segments"] == []
    assert min(curve["6"]["stability"]) < 0.75  # a persona cut in two does not come back
    segments = segments_of(spark, root)
    truth = data.user_persona.loc[segments.index]
    assert adjusted_rand_index(truth.tolist(), segments["segment_id"].tolist()) >= 0.9
    summary = spark.read.parquet(str(root / "out" / "segment_summary")).toPandas()
    assert (summary["stability_class"] == "natural").all() and summary["parent_id"].isna().all()
    assert (segments["top_weights"].map(lambda w: abs(sum(w) - 1) < 1 and w[0] >= w[-1])).all()


def test_label_terms_speak_of_each_persona(planted, spark):
    data, root, _, _, _ = planted
    segments = segments_of(spark, root)
    majority = (
        pd.DataFrame({"segment": segments["segment_id"], "persona": data.user_persona.loc[segments.index]})
        .groupby("segment")["persona"]
        .agg(lambda s: s.value_counts().idxmax())
    )
    summary = {r["segment_id"]: r for r in json.loads((root / "out" / "manifest.json").read_text())["segments"]}
    for segment_id, persona in majority.items():
        vocabulary = " ".join(PERSONAS[persona]["things"] + PERSONAS[persona]["likes"]).lower().split()
        terms = summary[segment_id]["label_terms"]
        assert any(term in vocabulary for term in terms[:5]), (persona, terms)
        assert all(term in vocabulary for term in terms[:3]), (persona, terms)  # nothing another persona shares


# long: placing users by saved centres is tests/test_segments_udf.py's and assign mode's continuity
# tests/test_segment_continuity.py's; this uses the real model over planted personas
@pytest.mark.long
def test_assign_mode_places_held_out_users_where_a_refit_would(planted, spark):
    data, root, path, full_paths, held = planted
    conf = yaml.safe_load(path.read_text())
    conf["inputs"]["items"]["path"] = full_paths["items"]
    conf["inputs"]["users"]["path"] = full_paths["users"]
    conf["inputs"]["interactions"]["path"] = full_paths["interactions"]
    path.write_text(yaml.safe_dump(conf))
    for stage in ("validate", "embed", "profile"):
        assert cli.main([stage, "--conf", str(path)]) == 0
    assert cli.main(["segment", "--conf", str(path), "--set", "segment.mode=assign"]) == 0
    assigned = segments_of(spark, root)
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    figures = manifest["stages"]["segment"]
    assert figures["mode"] == "assign" and figures["new_users"] == len(held)
    assert figures["agreement_with_previous"] == 1.0  # the first fit's users, placed by the model that cut them
    assert manifest["stages"]["segment"]["reproducible_segments"] >= 4  # the saved segments, scored on these users

    k = manifest["stages"]["segment"]["k"]
    assert cli.main(["segment", "--conf", str(path), "--set", f"segment.k={k}"]) == 0
    refit = segments_of(spark, root)
    agreement = json.loads((root / "out" / "manifest.json").read_text())["stages"]["segment"]["agreement_with_previous"]
    assert agreement >= 0.9

    # the refit's segments keep the assigned ids (matched by members), so the held-out users compare directly
    both = pd.DataFrame({"a": assigned["segment_id"], "r": refit.loc[assigned.index, "segment_id"]})
    held_rows = both.loc[sorted(held)]
    agreement = (held_rows["r"] == held_rows["a"]).mean()
    assert agreement >= 0.9, agreement
    assert (refit.loc[assigned.index, "previous_segment_id"] == assigned["segment_id"]).all()
    summary = spark.read.parquet(str(root / "out" / "segment_summary")).toPandas()
    assert (summary["status"] == "kept").all() and (summary["matched_jaccard"] >= 0.8).all()
