"""Build what spark-submit needs: the code as a zip for --py-files, and the entry script.

    python3 -m jobs.bootstrap package [DIST]        # default dist/

Writes DIST/segrec-<version>.zip (the ``segrec.jobs`` and ``segrec.udfs`` packages, for --py-files),
DIST/segrec_main.py (the entry script) and DIST/segrec-<version>-py3-none-any.whl (for cluster
libraries, e.g. Databricks; built by pip, without dependencies).
Executors need the third-party dependencies too (pyspark's Python side, torch, transformers, pandas,
pyarrow, numpy, pyyaml, pydantic, scipy and the model package): install them in the cluster's Python
environment (image, bootstrap action, Databricks cluster library), or ship a packed virtual
environment with --archives and point PYSPARK_PYTHON at it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from segrec.jobs import __version__ as VERSION

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("jobs", "udfs")
# Developer tooling (this package: set-up, packaging, synthetic test data) stays out of the artifacts.
DEV_ONLY = ROOT / "jobs" / "bootstrap"


def build(dist: Path, wheel: bool = False) -> dict[str, Path]:
    dist.mkdir(parents=True, exist_ok=True)
    archive = dist / f"segrec-{VERSION}.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        # `segrec` is a namespace package (no __init__.py): zipimport finds it only by its directory entry.
        zf.writestr("segrec/", "")
        for package in PACKAGES:
            for source in sorted((ROOT / package).rglob("*.py")):
                if DEV_ONLY not in source.parents:
                    zf.write(source, "segrec/" + source.relative_to(ROOT).as_posix())
    main = dist / "segrec_main.py"
    shutil.copyfile(ROOT / "jobs" / "spark_submit.py", main)
    built = {"py_files": archive, "main": main}
    if wheel:
        built["wheel"] = build_wheel(dist)
    return built


def build_wheel(dist: Path) -> Path:
    """The wheel, built by pip without dependencies. setuptools builds in ./build and keeps what it
    finds there: a module since moved or deleted would ship, so that directory is cleared first."""
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)], check=True
    )
    return next(dist.glob(f"segrec-{VERSION}-*.whl"))


if __name__ == "__main__":
    built = build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist", wheel=True)
    for role, path in built.items():
        print(f"{role}: {path}")
