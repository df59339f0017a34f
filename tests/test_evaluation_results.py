"""What evaluate measured reaches every table: a model is never dropped for lacking a place in a list,
and a baseline is one registration."""

import json

import pytest

from segrec.jobs.evaluation import baselines, report
from segrec.jobs.evaluation.ranking import METRICS
from segrec.jobs.evaluation.results import EvaluationResult, ModelResult, Split


def figures(ndcg: float) -> ModelResult:
    ranking = {5: dict.fromkeys(METRICS, ndcg)}
    lists = {5: {"coverage": 0.5, "novelty": 9.0, "diversity": 0.3, "personalisation": 0.8, "long_tail_share": 0.1}}
    return ModelResult(ranking=ranking, lists=lists, cold_users=ranking, long_tail=ranking, cold_items=ranking)


def result(models: dict[str, float]) -> EvaluationResult:
    return EvaluationResult(
        run_id="r1",
        split=Split(train_rows=100, held_out_rows=20, users_evaluated=10, holdout_per_user=2, holdout_by="time"),
        tuning={},
        slices={"cold_users": {"users": 3}, "long_tail": {"held_out_rows": 4}},
        segments={},
        models={name: figures(ndcg) for name, ndcg in models.items()},
        seconds=1.0,
        baselines=list(baselines.BASELINES),
    )


def test_models_are_ordered_baselines_then_ours_then_any_other_and_none_is_dropped():
    measured = result({"trained": 0.3, "recent_popular": 0.1, "als": 0.2, "content": 0.25, "most_popular": 0.05})
    assert measured.model_names() == ["most_popular", "als", "content", "trained", "recent_popular"]
    table = report.comparison_table(measured, 5).splitlines()
    assert [line.split()[0] for line in table[1:]] == measured.model_names()
    assert set(report.flat_metrics(measured, 5)) >= {"recent_popular.ndcg_at_5", "recent_popular.coverage_at_5"}
    assert any("trained (0.3000)" in line for line in report.winners(measured, 5))


def test_the_strongest_baseline_is_the_best_registered_one_ties_to_the_first():
    assert result({"most_popular": 0.1, "als": 0.2, "trained": 0.9}).strongest_baseline(5) == "als"
    assert result({"most_popular": 0.2, "als": 0.2}).strongest_baseline(5) == "most_popular"
    assert result({"trained": 0.9}).strongest_baseline(5) is None


def test_metrics_json_holds_every_model_with_its_figures_and_no_empty_slices():
    measured = result({"als": 0.2, "hybrid": 0.3})
    measured.models["hybrid"].new_users = {5: {"ndcg": 0.4}}
    document = json.loads(json.dumps(measured.to_json()))
    assert list(document["models"]) == ["als", "hybrid"]
    assert document["models"]["hybrid"]["new_users"] == {"5": {"ndcg": 0.4}}
    assert "new_users" not in document["models"]["als"] and "cold_items_only" not in document["models"]["als"]
    assert document["split"] == {
        "train_rows": 100,
        "held_out_rows": 20,
        "users_evaluated": 10,
        "holdout_per_user": 2,
        "holdout_by": "time",
    }


def test_a_baseline_name_registers_once():
    assert list(baselines.BASELINES)[:3] == ["most_popular", "als", "random"]
    with pytest.raises(ValueError, match="'als' is registered twice"):
        baselines.baseline("als")(lambda inputs: None)
