"""Which device a Python worker's task should run on, with how many CPU threads, and what that CPU can do.

Spark tells a task which GPU it was given (``TaskContext.resources()["gpu"].addresses``) when the
cluster schedules GPUs (``spark.task.resource.gpu.amount``). That address is used when CUDA is
available; a task given a GPU on a machine without CUDA logs one warning and uses the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

_warned_no_cuda = False


@dataclass(frozen=True)
class TaskSlot:
    """What Spark gave the running task: GPU addresses and CPU cores."""

    gpu_addresses: tuple[str, ...] = ()
    cpus: int = 1


def current_slot() -> TaskSlot:
    """The running task's resources; an empty slot outside Spark (tests, plain processes)."""
    try:
        from pyspark import TaskContext  # executor-side API: no session needed
    except ImportError:
        return TaskSlot(cpus=_default_threads())
    context = TaskContext.get()
    if context is None:
        return TaskSlot(cpus=_default_threads())
    resources = context.resources() or {}
    gpu = resources.get("gpu")
    addresses = tuple(gpu.addresses) if gpu is not None else ()
    return TaskSlot(gpu_addresses=addresses, cpus=max(1, int(context.cpus() or 1)))


def use_task_cpus(slot: TaskSlot | None = None) -> int:
    """Set torch's intra-op threads to the cores of ``slot`` (default: the running task's; outside Spark
    they are left as they are); returns the number of threads."""
    import torch

    cpus = (slot or current_slot()).cpus
    if torch.get_num_threads() != cpus:
        torch.set_num_threads(cpus)
    return cpus


def _default_threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def choose_device(slot: TaskSlot, cuda_available: bool | None = None) -> str:
    """'cuda:<address>' for the first GPU of the task ``slot`` when CUDA works; else 'cpu'.
    ``cuda_available`` overrides torch's answer (tests)."""
    global _warned_no_cuda
    if not slot.gpu_addresses:
        return "cpu"
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        if not _warned_no_cuda:
            log.warning(
                "task was given GPU %s but CUDA is not available in this Python worker: encoding on CPU",
                ",".join(slot.gpu_addresses),
            )
            _warned_no_cuda = True
        return "cpu"
    index = int(slot.gpu_addresses[0])
    # Container runtimes (YARN, Kubernetes) often expose only the assigned GPU, renumbered as 0.
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else index + 1
    return f"cuda:{index if index < visible else 0}"


def native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX), which make
    bfloat16 matrix products several times faster than float32 ones; without them they are slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    import torch

    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def job_uses_gpus(setting: str, gpus_per_task: float) -> bool:
    """The rule of :func:`task_device` for a device ``setting``, asked on the driver before a job's tasks
    start (barrier tasks of TorchDistributor): ``cuda`` always; ``auto`` when ``gpus_per_task`` (Spark's
    ``spark.task.resource.gpu.amount``, or the driver's GPUs for a job run on the driver) is at least
    one; ``cpu`` never."""
    return setting == "cuda" or (setting == "auto" and gpus_per_task >= 1)


def task_device(setting: str) -> str:
    """Where a task computes, for a device ``setting``: ``auto``, its GPU when Spark gave it one; ``cuda``, GPU 0
    whatever Spark scheduled (local mode on a GPU machine, single-GPU nodes). Without CUDA both fall back to
    the CPU with one warning."""
    if setting == "auto":
        return choose_device(current_slot())
    if setting == "cuda":
        return choose_device(TaskSlot(gpu_addresses=("0",)))
    return "cpu"
