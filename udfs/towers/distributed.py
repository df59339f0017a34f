"""Sums and maxima over the training processes (torch.distributed all-reduce; the value itself with one process)."""

from __future__ import annotations

import numpy as np


def max_over_processes(value: int, world: int) -> int:
    """The largest ``value`` of the ``world``'s processes."""
    if world == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def sum_over_processes(value: int, world: int) -> int:
    """``value`` summed over the ``world``'s processes."""
    if world == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor)
    return int(tensor.item())


def sum_floats_over_processes(values: list[float], world: int) -> list[float]:
    """Each of ``values`` summed over the ``world``'s processes (float64)."""
    if world == 1:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def sum_array_over_processes(values: np.ndarray, world: int) -> np.ndarray:
    """``values`` (an int64 array) summed element-wise over the ``world``'s processes."""
    if world == 1:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.from_numpy(np.ascontiguousarray(values, np.int64))
    dist.all_reduce(tensor)
    return tensor.numpy()


def mean_over_processes(total: float, count: int, world: int) -> float:
    """The mean of the ``world``'s processes together: their ``total`` summed over their ``count`` summed."""
    if world > 1:
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([total, float(count)], dtype=torch.float64)
        dist.all_reduce(tensor)
        total, count = float(tensor[0]), int(tensor[1])
    return total / max(count, 1)
