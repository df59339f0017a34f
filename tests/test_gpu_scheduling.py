"""GPU-aware scheduling without a GPU: a worker reports fake GPU addresses through a discovery script.

Tasks receive addresses from Spark's scheduler, choose them, find no CUDA, and encode on the CPU with
results identical to a plain CPU encode.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import encoder_settings

from segrec.udfs.encoder import Encoder

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


# long: the device choice (choose_device) is unit-tested in test_encoder.py; this runs it under
# local-cluster GPU scheduling
@pytest.mark.long
def test_tasks_receive_gpu_addresses_and_fall_back_to_cpu(tiny_model_dir):
    script = ROOT / "conf" / "gpu" / "fake_gpus_resources.sh"
    probe = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "gpu_scheduling_probe.py"), tiny_model_dir, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    lines = [line for line in probe.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, probe.stderr[-3000:]
    rows = json.loads(lines[0][len("RESULT ") :])
    assert len(rows) == 40
    assert all(len(r["slot"]["gpus"]) == 1 and r["slot"]["gpus"][0] in {"0", "1"} for r in rows)
    assert {r["slot"]["device"] for r in rows} == {"cpu"}
    plain = Encoder(encoder_settings(model_path=tiny_model_dir, max_length=32)).encode([r["text"] for r in rows])
    np.testing.assert_allclose(np.array([r["v"] for r in rows]), plain, atol=1e-5)
