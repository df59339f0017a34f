"""The encoder's transformer on ONNX Runtime (``model.runtime: onnx``; CPUs only, float32).

The model directory is exported to ONNX once per machine and model: the file is named by a hash of
the model's files and kept under ``model.onnx_cache_dir``, so later workers and runs load it in well
under a second. The export writes to a temporary name and renames it into place, so workers exporting
at the same time never read a half-written file. ONNX Runtime runs the same float32 graph as torch
(vectors agree to about 1e-6; tests check it). It is not the default: on the benchmark machine it was
slower than torch (benchmarks/embed_throughput.py --onnx); CPUs where it is faster can opt in.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from segrec.udfs.errors import WorkerInputError
from segrec.udfs.model_files import fingerprint

log = logging.getLogger(__name__)

OPSET = 17
# Exports in this process per model file (tests check a cached file is not exported again).
EXPORTS: dict[str, int] = {}
_LOCK = threading.Lock()


def available() -> bool:
    """Whether this Python has ONNX Runtime and the ONNX package the export needs."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def exported_model(model_dir: str, cache_dir: str) -> str:
    """The ONNX file of ``model_dir`` under ``cache_dir``, exported first when it is not there."""
    cache = Path(os.path.expanduser(cache_dir))
    target = cache / f"{fingerprint(model_dir)[:32]}-opset{OPSET}.onnx"
    with _LOCK:
        if not target.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            partial = target.with_name(f"{target.name}.{os.getpid()}-{threading.get_ident()}.partial")
            try:
                _export(model_dir, partial)
                os.replace(partial, target)  # atomic: another worker sees the old state or the whole file
            finally:
                partial.unlink(missing_ok=True)
            EXPORTS[str(target)] = EXPORTS.get(str(target), 0) + 1
            log.info("exported %s to ONNX at %s in %.1fs", model_dir, target, time.perf_counter() - started)
    return str(target)


def _export(model_dir: str, path: Path) -> None:
    """The model's last hidden state for (input_ids, attention_mask), batch and length dynamic."""
    import torch
    from transformers import AutoModel

    # Eager attention: the exporter traces its plain matrix products (the SDPA path's shape checks
    # would be traced as constants of the example input).
    model = AutoModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    mask[1, 10:] = 0  # an example with padding, so the mask's path is traced
    axes = {"batch": 0, "tokens": 1}
    dynamic = {name: {i: axis for axis, i in axes.items()} for name in ("input_ids", "attention_mask", "hidden")}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on tracing; the tests compare the outputs
        torch.onnx.export(
            LastHiddenState(),
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


class OnnxTransformer:
    """An ONNX Runtime session over the exported model: (ids, mask) int64 arrays -> hidden float32."""

    def __init__(self, model_dir: str, cache_dir: str, threads: int):
        if not available():
            raise WorkerInputError(
                "model.runtime: onnx needs onnxruntime and onnx in the executors' Python "
                "(pip install 'segrec[onnx]'), or set model.runtime: torch"
            )
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)  # the task's cores, as torch.set_num_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = exported_model(model_dir, cache_dir)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
