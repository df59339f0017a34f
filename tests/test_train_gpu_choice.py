"""train.device auto asks TorchDistributor for GPUs exactly where Spark schedules them."""

import pytest

from segrec.jobs.config import Train
from segrec.jobs.towers import training as two_towers
from segrec.udfs.device import job_uses_gpus


class FakeConf:
    def __init__(self, values):
        self.values = values

    def get(self, key, default=None):
        return self.values.get(key, default)


class FakeSession:
    def __init__(self, **values):
        self.conf = FakeConf(values)


@pytest.fixture
def asked(monkeypatch):
    """The keyword arguments TorchDistributor is built with (it is not started)."""
    import pyspark.ml.torch.distributor as module

    calls = []
    monkeypatch.setattr(module, "TorchDistributor", lambda **kwargs: calls.append(kwargs) or kwargs)
    return calls


@pytest.mark.parametrize(
    "device, conf, local_mode, use_gpu",
    [
        # executors with a fake GPU resource per task: auto trains on them
        ("auto", {"spark.master": "yarn", "spark.task.resource.gpu.amount": "1"}, False, True),
        ("auto", {"spark.master": "yarn"}, False, False),  # no GPUs scheduled: CPU
        ("cpu", {"spark.master": "yarn", "spark.task.resource.gpu.amount": "1"}, False, False),
        ("cuda", {"spark.master": "yarn"}, False, True),
        # a local master trains on the driver: the driver's GPUs decide
        ("auto", {"spark.master": "local[4]", "spark.driver.resource.gpu.amount": "2"}, True, True),
        ("auto", {"spark.master": "local[4]", "spark.task.resource.gpu.amount": "1"}, True, False),
    ],
)
def test_the_distributor_is_asked_for_gpus_where_spark_schedules_them(asked, device, conf, local_mode, use_gpu):
    two_towers.distributor(FakeSession(**conf), Train(device=device, processes=2))
    assert asked == [{"num_processes": 2, "local_mode": local_mode, "use_gpu": use_gpu}]


def test_fractional_gpus_per_task_are_not_a_gpu_each():
    assert not job_uses_gpus("auto", 0.5) and job_uses_gpus("auto", 1.0) and not job_uses_gpus("cpu", 4)


def test_a_failed_training_says_why_in_one_line():
    local = RuntimeError("Command ['torchrun', '--nproc_per_node=1', 'train.py'] failed with return code 17. See logs")
    assert two_towers.failure_reason(local) == "return code 17"
    spark = RuntimeError(
        "An error occurred while calling o1515.collectToPython.\n: org.apache.spark.SparkException: Job aborted due "
        "to stage failure: Could not recover from a failed barrier ResultStage. Most recent failure reason: "
        "Stage failed because barrier task ResultTask(75, 0) finished unsuccessfully.\norg.apache..."
    )
    assert two_towers.failure_reason(spark).startswith("Could not recover from a failed barrier ResultStage.")
    assert two_towers.failure_reason(ValueError("\n  odd  \nmore")) == "odd"
    message = str(two_towers.training_failed(local, "/out/_staging/checkpoints-train"))
    assert message.startswith("train: the training processes failed (return code 17); nothing was published")
    assert "resumes after the last finished epoch" in message
    assert "starts again from its first epoch" in str(two_towers.training_failed(local, None))
