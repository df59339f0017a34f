"""What a Python worker loads once and reuses: encoders, item catalogues.

With ``spark.python.worker.reuse`` on (Spark's default), one worker process serves many tasks and
Arrow batches, so a model or item matrix loaded at module level is loaded once per worker, not per
batch. A long-lived worker (a notebook session, evaluate's many models) meets several keys; it keeps
the ``size`` most recently used values, so memory stays bounded (a GPU holds few models).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class WorkerCache(Generic[V]):
    """The ``size`` most recently used values by key, loaded on first use under a lock (a worker may
    run tasks on several threads); ``loads`` counts the loads per key (tests check it stays at one)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a worker cache holds at least one value (got size {size})")
        self.size = size
        self.loads: Counter = Counter()
        self._values: dict[Hashable, V] = {}  # insertion order is recency order
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], V]) -> V:
        """The value for ``key``, from ``load()`` when it is not held; the least recently used value
        is dropped when the cache is full."""
        with self._lock:
            if key in self._values:
                self._values[key] = self._values.pop(key)  # now the most recent
            else:
                self._values[key] = load()
                self.loads[key] += 1
                while len(self._values) > self.size:
                    self._values.pop(next(iter(self._values)))
            return self._values[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)
