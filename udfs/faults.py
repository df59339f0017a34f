"""Fault injection for tests of Spark's retries: makes a Python worker die on a task's first attempt.

Off unless SEGREC_FAULT_DIR names a directory. Then the first task of the named stage
(SEGREC_FAULT_STAGE, default "embed") that reaches this point in each partition kills its worker
(os._exit, as an out-of-memory kill would) after leaving a marker file; the retry finds the marker
and runs normally.
"""

from __future__ import annotations

import os


def maybe_fail(stage: str) -> None:
    """Kill this process (exit 17) on the first attempt of each partition of ``stage`` when
    SEGREC_FAULT_DIR is set and SEGREC_FAULT_STAGE names ``stage``; otherwise do nothing."""
    directory = os.environ.get("SEGREC_FAULT_DIR")
    if not directory or os.environ.get("SEGREC_FAULT_STAGE", "embed") != stage:
        return
    from pyspark import TaskContext

    context = TaskContext.get()
    partition = context.partitionId() if context is not None else 0
    marker = os.path.join(directory, f"{stage}-{partition}")
    if os.path.exists(marker):
        return
    with open(marker, "w") as fh:
        fh.write(str(os.getpid()))
    os._exit(17)
