"""Per-epoch checkpoints of the towers' training: a training stopped after an epoch resumes to the very
weights an uninterrupted one reaches; a checkpoint of another training is never used."""

import os

import numpy as np
import pytest
from conftest import tower_settings
from test_towers import FAST, planted

from segrec.udfs.towers import train
from segrec.udfs.towers.checkpoints import Checkpoints, fingerprint


class Stop(Exception):
    """Raised from the epoch log, as a process killed between epochs would stop."""


def stopping_after(epoch: int):
    def log(line: str) -> None:
        if line.startswith(f"train: epoch {epoch}/"):
            raise Stop(line)

    return log


@pytest.fixture(scope="module")
def data():
    return planted("informative")[0]


def test_a_resumed_training_ends_with_the_weights_of_an_uninterrupted_one(data, tmp_path):
    settings = tower_settings(**{**FAST, "epochs": 4})
    whole = train(data, settings, log=lambda line: None)
    checkpoints = Checkpoints(str(tmp_path), fingerprint(settings, 1, data))
    with pytest.raises(Stop):
        train(data, settings, log=stopping_after(3), checkpoints=checkpoints)  # epoch 3 done, not saved
    assert checkpoints.load()["epochs"] == 2
    lines = []
    resumed = train(data, settings, log=lines.append, checkpoints=checkpoints)
    assert resumed.resumed_after == 2 and lines[0].startswith("train: resumed after epoch 2/4")
    assert [point["epoch"] for point in resumed.curve] == [1, 2, 3, 4]
    assert [point["loss"] for point in resumed.curve] == [point["loss"] for point in whole.curve]
    for name, value in whole.state.items():
        np.testing.assert_array_equal(resumed.state[name], value, err_msg=name)


def test_the_last_epoch_leaves_no_checkpoint_to_resume_and_a_fresh_one_starts_from_scratch(data, tmp_path):
    settings = tower_settings(**{**FAST, "epochs": 2})
    checkpoints = Checkpoints(str(tmp_path), fingerprint(settings, 1, data))
    first = train(data, settings, log=lambda line: None, checkpoints=checkpoints)
    assert first.resumed_after == 0 and checkpoints.load()["epochs"] == 1  # epoch 2, the last, is not saved


def test_other_settings_data_or_process_counts_never_resume_from_a_checkpoint(data, tmp_path):
    settings = tower_settings(**{**FAST, "epochs": 3})
    key = fingerprint(settings, 1, data)
    assert fingerprint(tower_settings(**{**FAST, "epochs": 3, "seed": 7}), 1, data) != key
    assert fingerprint(settings, 2, data) != key
    changed = planted("informative")[0]
    changed.flat_weights = changed.flat_weights * 2
    assert fingerprint(settings, 1, changed) != key
    old = Checkpoints(str(tmp_path), fingerprint(tower_settings(**{**FAST, "epochs": 3, "seed": 7}), 1, data))
    with pytest.raises(Stop):
        train(data, tower_settings(**{**FAST, "epochs": 3, "seed": 7}), log=stopping_after(2), checkpoints=old)
    assert os.path.exists(old.path)
    current = Checkpoints(str(tmp_path), key)
    result = train(data, settings, log=lambda line: None, checkpoints=current)
    assert result.resumed_after == 0
    assert not os.path.exists(old.path) and os.listdir(tmp_path) == [os.path.basename(current.path)]
