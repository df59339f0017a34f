"""Outputs never destroy inputs: overlapping locations, a file or foreign directory in the way."""

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from segrec.jobs import cli
from segrec.jobs.bootstrap.synthetic import config_dict, generate, write_parquet


def digest(directory) -> dict[str, str]:
    """Every file under ``directory`` with the sha256 of its bytes."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, directory)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture
def inputs(tmp_path):
    paths = write_parquet(
        generate(n_users=12, items_per_persona=3, personas=["hiker", "cook"], seed=1), str(tmp_path / "data")
    )
    return tmp_path, paths


def validate(tmp_path, paths, output) -> int:
    conf = config_dict(paths, str(output))
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return cli.main(["validate", "--conf", str(path)])


@pytest.mark.parametrize("where", ["data", "data/users.parquet", "data/items_dir/out", "."])
def test_an_output_path_overlapping_an_input_is_refused_and_inputs_stay_intact(spark, inputs, capsys, where):
    tmp_path, paths = inputs
    # one input as a directory of part files, as warehouses write them
    os.makedirs(tmp_path / "data" / "items_dir")
    os.replace(paths["items"], tmp_path / "data" / "items_dir" / "part-0.parquet")
    paths = {**paths, "items": str(tmp_path / "data" / "items_dir")}
    before = digest(tmp_path / "data")
    assert validate(tmp_path, paths, tmp_path / where) == 2
    err = capsys.readouterr().err
    assert "output.path" in err and "input" in err and "Traceback" not in err
    assert digest(tmp_path / "data") == before


def test_an_output_path_that_is_a_file_is_refused(spark, inputs, capsys):
    tmp_path, paths = inputs
    (tmp_path / "out").write_text("not a directory")
    assert validate(tmp_path, paths, tmp_path / "out") == 2
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "out").read_text() == "not a directory"


def test_an_output_path_that_cannot_be_written_is_refused(spark, inputs, capsys):
    tmp_path, paths = inputs
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Root writes through permission bits (CI runs as root): a kernel file system that refuses
        # writes to everyone stands in for a read-only mount.
        locked = Path("/proc/sys")
        if os.access(locked, os.W_OK):
            pytest.skip("running as root and /proc/sys is writable here: no directory refuses root's writes")
        assert validate(tmp_path, paths, locked / "segrec-out") == 2
        assert "not writable (/proc/sys does not let this user write)" in capsys.readouterr().err
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert validate(tmp_path, paths, locked / "out") == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_a_directory_segrec_did_not_write_is_never_replaced(spark, inputs, capsys):
    tmp_path, paths = inputs
    foreign = tmp_path / "out" / "items"
    foreign.mkdir(parents=True)
    (foreign / "precious.csv").write_text("a,b\n1,2\n")
    assert validate(tmp_path, paths, tmp_path / "out") == 2
    assert "was not written by segrec" in capsys.readouterr().err
    assert (foreign / "precious.csv").read_text() == "a,b\n1,2\n"
    # directories segrec wrote carry its marker and are replaced on the next run
    foreign.joinpath("precious.csv").unlink()
    foreign.rmdir()
    assert validate(tmp_path, paths, tmp_path / "out") == 0
    assert (tmp_path / "out" / "items" / "_SEGREC").exists()
    assert validate(tmp_path, paths, tmp_path / "out") == 0


@pytest.mark.parametrize("path", ["output", "/Volumes/main/segrec/out", "/dbfs/segrec", "file:/tmp/out", "C:/out"])
def test_mounted_and_local_outputs_are_writable_without_a_jvm(path):
    from segrec.jobs.io.store import check_local_path

    check_local_path(path)  # no error


@pytest.mark.parametrize(
    "path",
    [
        "s3://bucket/out",
        "s3a://bucket/out",
        "abfss://c@acct.dfs.core.windows.net/out",
        "gs://bucket/out",
        "hdfs:///segrec",
        "dbfs:/segrec",
    ],
)
def test_object_store_outputs_without_a_jvm_are_refused_naming_the_alternatives(path):
    from segrec.jobs.errors import ConfigError
    from segrec.jobs.io.store import check_local_path

    with pytest.raises(ConfigError, match="/Volumes/") as refused:
        check_local_path(path)
    assert path in str(refused.value) and "output.format: table" in str(refused.value)
