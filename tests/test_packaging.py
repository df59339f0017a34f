"""What gets installed: one `segrec` import package, without the developer tooling, that a user's own
`jobs` or `udfs` package on sys.path cannot shadow."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from segrec.jobs.bootstrap.package import build, build_wheel

ROOT = Path(__file__).resolve().parent.parent
# Every runtime module of the repository, as it is named inside the artifacts.
RUNTIME = {
    f"segrec/{p.relative_to(ROOT).as_posix()}"
    for folder in ("jobs", "udfs")
    for p in (ROOT / folder).rglob("*.py")
    if "bootstrap" not in p.relative_to(ROOT).parts
}


@pytest.fixture()
def decoy(tmp_path):
    """A user's repository root with its own `jobs` and `udfs` packages, as Databricks Repos put it
    on sys.path."""
    for name in ("jobs", "udfs"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"WHO = 'decoy {name}'\n")
    (tmp_path / "jobs" / "cli.py").write_text("raise ImportError('the decoy jobs.cli was imported')\n")
    return tmp_path


def test_segrec_imports_past_a_decoy_jobs_package_first_on_sys_path(decoy):
    probe = (
        "import sys, json; sys.path.insert(0, sys.argv[1]);"
        "import segrec.jobs.cli, segrec.udfs.topk.exact, jobs, udfs;"
        "print(json.dumps([segrec.jobs.cli.__file__, segrec.udfs.topk.exact.__file__, jobs.WHO, udfs.WHO]))"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(decoy)], cwd=decoy, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cli, topk, user_jobs, user_udfs = json.loads(done.stdout)
    assert Path(cli) == ROOT / "jobs" / "cli.py" and Path(topk) == ROOT / "udfs" / "topk" / "exact.py"
    assert (user_jobs, user_udfs) == ("decoy jobs", "decoy udfs")  # and the user's packages still import


def test_the_console_script_runs_with_a_decoy_jobs_package_on_pythonpath(decoy, tmp_path):
    script = Path(sys.executable).parent / "segrec"
    env = dict(os.environ, PYTHONPATH=str(decoy))
    done = subprocess.run(
        [str(script), "validate", "--conf", str(tmp_path / "missing.yaml")],
        cwd=decoy,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr  # segrec's own config error, not the decoy's ImportError
    assert "missing.yaml" in done.stderr and "decoy" not in done.stderr


@pytest.mark.slow
def test_the_wheel_holds_segrec_jobs_and_udfs_and_no_developer_tooling(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    code = [n for n in names if not n.startswith("segrec-")]
    assert {n.split("/")[1] for n in code} == {"jobs", "udfs"} and all(n.startswith("segrec/") for n in code)
    assert "segrec/jobs/cli.py" in code and "segrec/udfs/topk/exact.py" in code
    assert set(code) == RUNTIME  # no module left out (a subpackage missing from pyproject's list)
    assert not [n for n in code if "bootstrap" in n or "synthetic" in n]
    top_level = next(n for n in names if n.endswith("top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["segrec"]
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "segrec = segrec.jobs.cli:main" in entry_points


def test_the_spark_submit_zip_holds_the_same_packages(tmp_path):
    built = build(tmp_path)
    names = zipfile.ZipFile(built["py_files"]).namelist()
    assert "segrec/jobs/cli.py" in names and "segrec/udfs/topk/exact.py" in names
    assert set(names) - {"segrec/"} == RUNTIME
    assert all(n.startswith(("segrec/jobs/", "segrec/udfs/")) for n in names if n != "segrec/")
    assert not [n for n in names if "/bootstrap/" in n]
    assert "from segrec.jobs.cli import main" in built["main"].read_text()
