"""segrec audience, as the shared small run's `run` ran it: every request kept or
rejected with its reason, audiences of the size asked, nobody suppressed or already owning the item,
reasons from the user's own history, and a per-user cap across the night's requests."""

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SUPPRESSIONS

from segrec.jobs.audiences.scoring import Targets, capped
from segrec.jobs.config import config_from_dict
from segrec.jobs.errors import InputError
from segrec.jobs.stages.audience import read_requests


@pytest.fixture(scope="module")
def audience_run(small_run):
    """(root, config dict, outputs) of the shared small run, whose `run` validated a suppressions list and
    ran the audience stage over AUDIENCE_REQUESTS with audience.size 6. Read only."""
    root, conf_path = small_run
    conf = yaml.safe_load(Path(conf_path).read_text())
    out = root / "out"
    return root, conf, {name: pd.read_parquet(out / name) for name in ("audiences", "audience_summary", "rejects")}


def test_every_request_is_kept_or_rejected_with_its_reason(audience_run):
    _, _, outputs = audience_run
    rejects = outputs["rejects"]
    mine = rejects[rejects.source == "audience_requests"]
    found = dict(zip(mine.id.fillna("-"), mine.reason, strict=True))
    assert found == {
        "none": "no_target",
        "two": "several_targets",
        "ghost": "unknown_item",
        "colour": "unknown_column",
        "boots": "duplicate_id",  # the second row of boots; the first is kept
        "opera": "no_matching_item",
        "bad-size": "invalid_size",
    }
    summary = outputs["audience_summary"].set_index("request_id")
    assert sorted(summary.index) == ["boots", "cooks", "pasta-brief"]
    assert summary.loc["boots", "kind"] == "items" and summary.loc["cooks", "kind"] == "attribute"
    assert summary.loc["cooks", "target_items"] == 4  # the cook persona's items, by the items' own column
    assert summary.loc["boots", "requested_size"] == 5 and summary.loc["cooks", "requested_size"] == 6


def test_audiences_have_the_size_asked_and_nobody_who_must_be_left_out(audience_run, small_run):
    root, _, outputs = audience_run
    audiences = outputs["audiences"]
    sizes = audiences.groupby("request_id").size().to_dict()
    assert sizes == {"boots": 5, "cooks": 6, "pasta-brief": 4}
    assert not set(audiences.user_id) & set(SUPPRESSIONS["user_id"])
    interactions = pd.read_parquet(root / "out" / "interactions")
    owners = set(interactions[interactions.item_id == "i000000"].user_id)
    assert owners and not set(audiences[audiences.request_id == "boots"].user_id) & owners
    for _, group in audiences.groupby("request_id"):
        ordered = group.sort_values("rank")
        assert ordered["rank"].tolist() == list(range(1, len(group) + 1))
        assert ordered.score.is_monotonic_decreasing
    segments = pd.read_parquet(root / "out" / "segments").set_index("user_id").segment_id
    assert (audiences.segment_id == audiences.user_id.map(segments)).all()
    history = interactions.groupby("user_id").item_id.apply(set)
    with_reason = audiences.dropna(subset=["because_item_id"])
    assert len(with_reason) == len(audiences)  # every member has a history here
    pairs = zip(with_reason.user_id, with_reason.because_item_id, strict=True)
    assert all(item in history[user] for user, item in pairs)


def test_an_attribute_audience_is_the_best_users_for_the_mean_of_its_items(audience_run, small_run):
    root, _, outputs = audience_run
    out = root / "out"
    users = pd.read_parquet(out / "user_vectors")
    learned = users.space.iloc[0] != "text"
    items = pd.read_parquet(out / ("trained_item_vectors" if learned else "item_vectors")).set_index("item_id")
    catalogue = pd.read_parquet(small_run[0] / "in" / "items.parquet")
    unit = np.stack(items.loc[catalogue[catalogue.category == "cook"].item_id].vector.map(np.asarray))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    target = unit.mean(axis=0) / np.linalg.norm(unit.mean(axis=0))
    vectors = np.stack(users.vector.map(np.asarray))
    expected = pd.DataFrame(
        {"user_id": users.user_id, "score": vectors / np.linalg.norm(vectors, axis=1)[:, None] @ target}
    )
    expected = expected[~expected.user_id.isin(SUPPRESSIONS["user_id"])].sort_values(
        ["score", "user_id"], ascending=[False, True]
    )
    cooks = outputs["audiences"][outputs["audiences"].request_id == "cooks"].sort_values("rank")
    assert cooks.user_id.tolist() == expected.user_id.head(6).tolist()  # owners included: a kind, not an item
    np.testing.assert_allclose(cooks.score, expected.score.head(6), atol=1e-5)


def test_a_cap_per_user_sends_each_user_where_they_stand_out_most(spark):
    # r1's pool: u1 .9, u2 .8, u3 .7, u4 .1; r2's: u1 .95, u2 .5, u3 .45, u4 .4. Within each pool's
    # spread u1 stands out most in r2, u2 and u3 in r1, u4 (far below r1's others) in r2.
    scores = {"r1": [0.9, 0.8, 0.7, 0.1], "r2": [0.95, 0.5, 0.45, 0.4]}
    rows = [(r, f"u{i + 1}", s, i + 1) for r, pool in scores.items() for i, s in enumerate(pool)]
    ranked = spark.createDataFrame(rows, "request_id string, user_id string, score double, rank int")
    targets = Targets(["r1", "r2"], np.eye(2, dtype=np.float32), [4, 4], [None, None])
    kept = capped(ranked, targets, [2, 2], max_per_user=1).collect()
    chosen = {(r.request_id, r.user_id, r.rank) for r in kept}
    assert chosen == {("r1", "u2", 1), ("r1", "u3", 2), ("r2", "u1", 1), ("r2", "u4", 2)}


def test_a_missing_requests_column_stops_with_the_source_and_column_named(audience_run, spark):
    conf = copy.deepcopy(audience_run[1])
    conf["audience"]["requests"]["columns"]["brief"] = "summary"
    ctx = SimpleNamespace(spark=spark, config=config_from_dict(conf))
    with pytest.raises(InputError, match="audience_requests: mapped text column 'summary' is not in"):
        read_requests(ctx)
