"""The text encoder that runs inside Python workers: loaded once per worker, batched by token budget.

``get_encoder`` keeps one loaded model per (model path, device, dtype, quantisation) in the worker
process; with ``spark.python.worker.reuse`` on, every task and Arrow batch the worker serves reuses it.

``Encoder.encode`` tokenises a whole Arrow batch, cuts long texts into windows of ``max_length``
tokens (or truncates, when configured), sorts the windows by length, packs them into sub-batches under
a padded-token budget, pads each sub-batch only to its own longest window, pools each window, averages
the windows of a text weighted by their token counts, L2-normalises, and returns vectors in input order.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segrec.udfs.config_keys import from_config
from segrec.udfs.device import TaskSlot, choose_device, current_slot, use_task_cpus
from segrec.udfs.errors import WorkerInputError
from segrec.udfs.worker_cache import WorkerCache

if TYPE_CHECKING:
    from segrec.udfs.onnx_runtime import OnnxTransformer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderSettings:
    """Everything that decides the vectors (and so belongs in the model id) plus batching knobs."""

    model_path: str = from_config("model.path")
    pooling: str = from_config("model.pooling")
    max_length: int = from_config("model.max_length")
    long_text: str = from_config("model.long_text")
    chunk_overlap: int = from_config("model.chunk_overlap")
    gpu_dtype: str = from_config("model.gpu_dtype")
    cpu_dtype: str = from_config("model.cpu_dtype")
    runtime: str = from_config("model.runtime")
    onnx_cache_dir: str = from_config("model.onnx_cache_dir")
    token_budget: int | str = from_config("embed.token_budget")

    def vector_settings(self) -> dict:
        """What decides the vectors besides the model's files: the model id hashes it (with the files'
        hash), and a worker keeps one encoder per value of it (with the device and dtype)."""
        return {
            "pooling": self.pooling,
            "max_length": self.max_length,
            "long_text": self.long_text,
            "chunk_overlap": self.chunk_overlap if self.long_text == "chunk" else None,
        }


def resolve_model_path(path: str) -> str:
    """The local model directory of the model setting ``path``: a directory as it is, or for
    ``package:<module>`` that module's ``get_model_path()``. A missing package or directory raises
    ``WorkerInputError`` naming it."""
    if path.startswith("package:"):
        module_name = path.split(":", 1)[1]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise WorkerInputError(
                f"model package '{module_name}' is not installed in this Python environment "
                f"(pip install {module_name.replace('_', '-')})"
            ) from None
        return str(module.get_model_path())
    directory = Path(path)
    if not directory.is_dir() or not (directory / "config.json").is_file():
        raise WorkerInputError(
            f"model path '{path}' is not a local model directory with a config.json "
            "(hub names are not fetched: download the model and point model.path at its directory)"
        )
    return str(directory)


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text ([CLS] / [SEP] for BERT, <s> / </s> ...)."""
    content = tokenizer("hello world", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello world", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(content) + 1):
        if full[start : start + len(content)] == content:
            return list(full[:start]), list(full[start + len(content) :])
    raise WorkerInputError("cannot locate the text inside the tokenizer's special tokens")


# On a CPU, batches past a few thousand padded tokens got slower per token (their activations leave
# the caches: benchmarks/embed_throughput.py --budgets); a GPU wants large batches.
CPU_TOKEN_BUDGET = 2048
GPU_TOKEN_BUDGET = 16384

ENCODERS: WorkerCache[Encoder] = WorkerCache(size=4)


def get_encoder(settings: EncoderSettings, slot: TaskSlot | None = None) -> Encoder:
    """The worker's encoder for ``settings`` on the device of ``slot`` (default: the running task's),
    loaded on first use only and cached by ``cache_key``."""
    slot = slot or current_slot()
    device = choose_device(slot)
    if device == "cpu":
        use_task_cpus(slot)
    dtype = settings.gpu_dtype if device.startswith("cuda") else cpu_dtype(settings.cpu_dtype)
    engine = runtime(settings.runtime, device)
    if engine == "onnx":
        dtype = "float32"  # the exported graph is float32
    key = cache_key(settings, device, dtype, engine)
    return ENCODERS.get(key, lambda: Encoder(settings, device, dtype, engine, threads=slot.cpus))


def cache_key(settings: EncoderSettings, device: str = "cpu", dtype: str = "float32", engine: str = "torch") -> tuple:
    """The worker cache's key: one encoder per model, vector-deciding ``settings``, ``device``, ``dtype``,
    runtime ``engine`` and batching budget."""
    vector = tuple(sorted(settings.vector_settings().items()))
    return (settings.model_path, vector, device, dtype, engine, token_budget(settings.token_budget, device))


def token_budget(setting: int | str, device: str) -> int:
    """Padded tokens per forward pass for the ``embed.token_budget`` ``setting`` on ``device``: the
    number given, or for ``auto`` CPU_TOKEN_BUDGET on a CPU and GPU_TOKEN_BUDGET on a GPU."""
    if setting != "auto":
        return int(setting)
    return CPU_TOKEN_BUDGET if device == "cpu" else GPU_TOKEN_BUDGET


def runtime(setting: str, device: str) -> str:
    """What runs the transformer on ``device`` for the ``model.runtime`` ``setting``: ``onnx`` (ONNX
    Runtime in float32, CPUs only) when asked for, else torch; GPUs always run torch."""
    return "onnx" if setting == "onnx" and device == "cpu" else "torch"


def cpu_dtype(setting: str) -> str:
    """The encoder's CPU dtype for the ``model.cpu_dtype`` ``setting``: as given, or for ``auto``
    bfloat16 where the CPU multiplies bfloat16 natively (AVX512-BF16, AMX), else float32."""
    if setting != "auto":
        return setting
    from segrec.udfs.device import native_bfloat16

    return "bfloat16" if native_bfloat16() else "float32"


class Encoder:
    """One loaded text encoder (tokenizer and transformer, torch or ONNX Runtime) for ``settings`` on
    ``device`` in ``dtype``, with ``threads`` torch threads: ``encode`` turns texts into unit vectors."""

    def __init__(
        self,
        settings: EncoderSettings,
        device: str = "cpu",
        dtype: str = "float32",
        engine: str = "torch",
        threads: int = 1,
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        started = time.perf_counter()
        # Python workers write to the executor's log: no progress bars there (the load is logged below).
        hf_logging.disable_progress_bar()
        path = resolve_model_path(settings.model_path)
        self.settings = settings
        self.device = torch.device(device)
        self.token_budget = token_budget(settings.token_budget, device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        self.onnx: OnnxTransformer | None = None
        self.model: Any = None  # a transformers model on the torch runtime
        if engine == "onnx":
            from transformers import AutoConfig

            from segrec.udfs.onnx_runtime import OnnxTransformer

            self.onnx = OnnxTransformer(path, settings.onnx_cache_dir, threads)
            self.dim = int(AutoConfig.from_pretrained(path, local_files_only=True).hidden_size)
        else:
            model = AutoModel.from_pretrained(path, local_files_only=True, trust_remote_code=False)
            model.eval()
            if self.device.type == "cuda" or dtype == "bfloat16":
                model = model.to(self.device, dtype=getattr(torch, dtype))
            self.model = model
            self.dim = int(model.config.hidden_size)
        self.prefix, self.suffix = special_tokens(self.tokenizer)
        # Room for content tokens in one window once the special tokens are added.
        self.capacity = settings.max_length - len(self.prefix) - len(self.suffix)
        self.pad_id = self.tokenizer.pad_token_id or 0
        log.info(
            "loaded encoder %s on %s (%s, %s) in %.1fs", path, device, dtype, engine, time.perf_counter() - started
        )

    # ---------------------------------------------------------------------------------- windows

    def windows(self, token_ids: list[int]) -> list[list[int]]:
        """Content-token windows of one text's ``token_ids``: one when it fits, else overlapping chunks
        (or the first window alone when truncating)."""
        cap = self.capacity
        if len(token_ids) <= cap:
            return [token_ids]
        if self.settings.long_text == "truncate":
            return [token_ids[:cap]]
        step = cap - self.settings.chunk_overlap
        starts = range(0, max(len(token_ids) - self.settings.chunk_overlap, 1), step)
        return [token_ids[s : s + cap] for s in starts]

    def plan(self, lengths: list[int]) -> list[list[int]]:
        """Window indices grouped into sub-batches for windows of ``lengths`` tokens: longest first,
        each sub-batch's padded size under the token budget."""
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            longest = lengths[current[0]] if current else lengths[i]
            if current and (len(current) + 1) * longest > self.token_budget:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    # ----------------------------------------------------------------------------------- encode

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) L2-normalised float32 vectors, one row per text of ``texts``, in input
        order; a long text is the token-weighted mean of its windows."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        token_ids = self.tokenizer(
            list(texts), add_special_tokens=False, truncation=False, return_attention_mask=False, verbose=False
        )["input_ids"]

        inputs: list[list[int]] = []  # windows with special tokens
        owner: list[int] = []  # text index of each window
        weight: list[int] = []  # content tokens in each window (at least 1)
        for t, ids in enumerate(token_ids):
            for window in self.windows(ids):
                inputs.append(self.prefix + window + self.suffix)
                owner.append(t)
                weight.append(max(1, len(window)))

        pooled = np.zeros((len(inputs), self.dim), dtype=np.float32)
        lengths = [len(x) for x in inputs]
        for batch in self.plan(lengths):
            pooled[batch] = self._forward([inputs[i] for i in batch])

        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        np.add.at(sums, np.asarray(owner), pooled.astype(np.float64) * np.asarray(weight, dtype=np.float64)[:, None])
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.maximum(norms, 1e-12)).astype(np.float32)

    def _forward(self, windows: list[list[int]]) -> np.ndarray:
        import torch

        width = max(len(w) for w in windows)
        ids = np.full((len(windows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(windows), width), dtype=np.int64)
        for row, window in enumerate(windows):
            ids[row, : len(window)] = window
            mask[row, : len(window)] = 1
        if self.onnx is not None:
            states = self.onnx(ids, mask)
            if self.settings.pooling == "cls":
                return np.ascontiguousarray(states[:, 0], dtype=np.float32)
            weights = mask[..., None].astype(np.float32)
            return ((states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)).astype(np.float32)
        ids_t, mask_t = torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device)
        with torch.inference_mode():
            hidden = self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state.float()
            if self.settings.pooling == "cls":
                vectors = hidden[:, 0]
            else:
                m = mask_t.unsqueeze(-1).to(hidden.dtype)
                vectors = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return vectors.cpu().numpy()
