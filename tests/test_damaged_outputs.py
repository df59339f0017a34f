"""What a night reads and cannot use: a damaged published dataset, a model directory without a model.
Exit 2 naming the dataset or the key and what to do, never a traceback or a Java stack."""

import shutil
from pathlib import Path

import pytest
import yaml

from segrec.jobs import cli
from segrec.jobs.errors import ConfigError
from segrec.jobs.sources.model_info import check_model_directory


def quiet(err: str) -> bool:
    return "Traceback" not in err and "at org.apache" not in err


@pytest.fixture
def copied_run(small_run, tmp_path):
    """A copy of the small run's outputs (the fixture's own are never written to), and its config."""
    root, conf = small_run
    shutil.copytree(root / "out", tmp_path / "out")
    config = yaml.safe_load(Path(conf).read_text())
    config["output"]["path"] = str(tmp_path / "out")
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(config))
    return tmp_path / "out", path


def parquet_file(folder: Path) -> Path:
    return sorted(p for p in folder.glob("*.parquet") if p.stat().st_size > 0)[0]


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_dataset_names_itself_and_the_stage_to_run_again(copied_run, capfd, damage):
    out, conf = copied_run
    target = parquet_file(out / "user_vectors")
    data = bytearray(target.read_bytes())
    if damage == "truncated":  # a copy cut short: the footer is gone
        data = data[: len(data) // 2]
    else:  # the footer is whole, the pages are not
        data[8 : len(data) // 2] = b"\xab" * (len(data) // 2 - 8)
    target.write_bytes(bytes(data))
    capfd.readouterr()
    assert cli.main(["segment", "--conf", str(conf)]) == 2
    err = capfd.readouterr().err
    assert "dataset 'user_vectors' under output.path cannot be read" in err and target.name in err
    assert "Run `segrec profile` again" in err and quiet(err)


def test_a_model_directory_without_a_model_is_named_before_any_worker_starts(
    copied_run, tmp_path, capfd, tiny_model_dir
):
    _, conf = copied_run
    empty = tmp_path / "model"
    empty.mkdir()
    shutil.copy(Path(tiny_model_dir) / "config.json", empty / "config.json")
    capfd.readouterr()
    assert cli.main(["embed", "--conf", str(conf), "--set", f"model.path={empty}"]) == 2
    err = capfd.readouterr().err
    assert f"model.path '{empty}' holds no model weights" in err and quiet(err)


def test_each_missing_part_of_a_model_directory_is_named(tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    check_model_directory(str(model), str(model))  # the whole model passes
    (model / "config.json").write_text('{"x":')
    with pytest.raises(ConfigError, match="config.json is not a model configuration"):
        check_model_directory(str(model), "package:some_model")
    shutil.copy(Path(tiny_model_dir) / "config.json", model / "config.json")
    for name in ("vocab.txt", "tokenizer.json"):
        (model / name).unlink(missing_ok=True)
    with pytest.raises(ConfigError, match=r"model.path 'package:some_model' \(.*\) holds no tokenizer"):
        check_model_directory(str(model), "package:some_model")
