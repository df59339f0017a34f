"""Models saved by another segrec version: defaults for fields they lack, exit 2 naming the file and
the field for anything that cannot be read."""

import logging

import numpy as np
import pytest
from conftest import tower_settings

from segrec.jobs.errors import InputError
from segrec.jobs.towers.training import check_state, saved_settings

WHERE = "out/towers/towers.json"


def test_a_field_an_earlier_version_did_not_write_takes_the_documented_default(caplog):
    recorded = tower_settings(patience=3).as_dict()
    del recorded["patience"], recorded["history_map"]
    with caplog.at_level(logging.WARNING, logger="segrec"):
        settings = saved_settings({"settings": recorded}, WHERE)
    defaults = tower_settings()
    assert settings.patience == defaults.patience and settings.history_map == defaults.history_map
    assert settings.objective == "sequential" and settings.dim == defaults.dim
    assert "without settings history_map, patience" in caplog.text and WHERE in caplog.text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"surprise": 1}, r"towers\.json: field\(s\) settings\.surprise are unknown"),
        ({"dim": "wide"}, r"towers\.json: field settings\.dim is 'wide', expected a int"),
        ({"decay": None}, r"field settings\.decay is None, expected a float"),
        ({"id_embeddings": 1}, r"field settings\.id_embeddings is 1, expected a bool"),
    ],
)
def test_a_field_that_cannot_be_read_stops_with_the_file_and_the_field(change, message):
    recorded = {**tower_settings().as_dict(), **change}
    with pytest.raises(InputError, match=message):
        saved_settings({"settings": recorded}, WHERE)


def test_the_objective_has_no_default_and_settings_must_be_there():
    recorded = tower_settings().as_dict()
    del recorded["objective"]
    with pytest.raises(InputError, match=r"field settings\.objective is missing"):
        saved_settings({"settings": recorded}, WHERE)
    with pytest.raises(InputError, match=r"field 'settings' is missing"):
        saved_settings({}, WHERE)


def test_an_int_where_a_float_is_recorded_is_read_as_the_number_it_is():
    recorded = {**tower_settings().as_dict(), "decay": 1}
    assert saved_settings({"settings": recorded}, WHERE).decay == 1


def test_weights_that_do_not_fit_the_settings_name_the_tensor():
    settings = tower_settings(dim=4, hidden=8, history_map=True, user_text=True)
    state = {
        "text_skip.weight": np.zeros((4, 6)),
        "text_mlp.0.weight": np.zeros((8, 6)),
        "text_mlp.0.bias": np.zeros(8),
        "text_mlp.2.weight": np.zeros((4, 8)),
        "text_mlp.2.bias": np.zeros(4),
        "item_id.weight": np.zeros((1, 4)),
        "user_text.weight": np.zeros((4, 6)),
    }
    with pytest.raises(InputError, match=r"towers\.safetensors: tensor\(s\) history_map\.weight missing"):
        check_state(settings, state, "out/towers/towers.safetensors")
    check_state(settings, {**state, "history_map.weight": np.eye(4)}, "w")
    with pytest.raises(InputError, match="text_skip.weight has 4 rows, settings.dim is 8"):
        check_state(tower_settings(dim=8, history_map=False, user_text=True), state, "w")
