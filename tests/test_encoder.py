"""The executor-side encoder with the tiny random BERT: no Spark needed."""

import logging

import numpy as np
import pandas as pd
import pytest
from conftest import encoder_settings

from segrec.udfs import device, encoder
from segrec.udfs.device import TaskSlot
from segrec.udfs.embedding import embed_batches
from segrec.udfs.encoder import Encoder

TEXTS = ["hiking boots", "a cast iron skillet for the kitchen", "guitar", "trail running shoes in the mountain " * 5]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return Encoder(encoder_settings(model_path=tiny_model_dir, max_length=32, chunk_overlap=4, token_budget=256))


def test_vectors_are_unit_float32_in_input_order(tiny):
    vectors = tiny.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    for text, vector in zip(TEXTS, vectors, strict=True):
        np.testing.assert_allclose(tiny.encode([text])[0], vector, atol=1e-5)


def test_vector_does_not_depend_on_batch_companions(tiny):
    alone = tiny.encode(["guitar"])[0]
    crowded = tiny.encode(["x " * 25, "guitar", "seeds and flowers in the garden"])[1]
    np.testing.assert_allclose(alone, crowded, atol=1e-5)


def test_empty_input(tiny):
    assert tiny.encode([]).shape == (0, 32)


def test_windows_chunk_with_overlap_and_truncate(tiny_model_dir):
    settings = encoder_settings(model_path=tiny_model_dir, max_length=12, chunk_overlap=2)
    chunker = Encoder(settings)
    assert chunker.capacity == 10  # [CLS] and [SEP] take two
    windows = chunker.windows(list(range(25)))
    assert windows == [list(range(0, 10)), list(range(8, 18)), list(range(16, 25))]
    assert chunker.windows(list(range(10))) == [list(range(10))]
    truncator = Encoder(
        encoder_settings(model_path=tiny_model_dir, max_length=12, chunk_overlap=2, long_text="truncate")
    )
    assert truncator.windows(list(range(25))) == [list(range(10))]


def test_long_text_is_pooled_over_windows_weighted_by_tokens(tiny_model_dir):
    chunker = Encoder(encoder_settings(model_path=tiny_model_dir, max_length=12, chunk_overlap=0))
    text = "hiking boots tent camping " * 6  # 24 word tokens -> windows of 10, 10, 4
    ids = chunker.tokenizer(text, add_special_tokens=False)["input_ids"]
    windows = chunker.windows(ids)
    assert [len(w) for w in windows] == [10, 10, 4]
    pooled = chunker._forward([chunker.prefix + w + chunker.suffix for w in windows])
    expected = (pooled * np.array([10, 10, 4])[:, None]).sum(axis=0)
    expected /= np.linalg.norm(expected)
    got = chunker.encode([text])[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    first_window_only = pooled[0] / np.linalg.norm(pooled[0])
    assert np.abs(got - first_window_only).max() > 1e-3


def test_plan_respects_the_token_budget_and_covers_every_window(tiny):
    lengths = [5, 30, 7, 30, 12, 3, 3, 30, 9]
    plan = tiny.plan(lengths)  # budget 256
    flat = sorted(i for batch in plan for i in batch)
    assert flat == list(range(len(lengths)))
    for batch in plan:
        assert len(batch) * max(lengths[i] for i in batch) <= 256
        # sorted longest first, so each sub-batch pads to its own first member only
        assert lengths[batch[0]] == max(lengths[i] for i in batch)
    one_big = Encoder.plan(tiny, [400])  # a single window over budget still runs, alone
    assert one_big == [[0]]


def test_cls_pooling_differs_from_mean(tiny_model_dir):
    mean = Encoder(encoder_settings(model_path=tiny_model_dir)).encode(["guitar piano"])[0]
    cls = Encoder(encoder_settings(model_path=tiny_model_dir, pooling="cls")).encode(["guitar piano"])[0]
    assert np.abs(mean - cls).max() > 1e-3


def test_encoder_is_cached_per_process(tiny_model_dir):
    settings = encoder_settings(model_path=tiny_model_dir, max_length=64)
    first = encoder.get_encoder(settings)
    assert encoder.get_encoder(settings) is first
    assert encoder.ENCODERS.loads[encoder.cache_key(settings)] == 1


def test_embed_batches_keeps_nulls_and_order(tiny_model_dir):
    settings = encoder_settings(model_path=tiny_model_dir)
    batches = [pd.Series(["guitar", None, "seeds"]), pd.Series([None])]
    out = list(embed_batches(settings, iter(batches)))
    assert [len(b) for b in out] == [3, 1]
    assert out[0][1] is None and out[1][0] is None
    direct = encoder.get_encoder(settings).encode(["guitar", "seeds"])
    np.testing.assert_allclose(np.stack([out[0][0], out[0][2]]), direct, atol=1e-6)


def test_hub_names_and_missing_packages_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not a local model directory"):
        encoder.resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="not a local model directory"):
        encoder.resolve_model_path(str(tmp_path))  # a directory without config.json
    with pytest.raises(ValueError, match="model package 'no_such_model_pkg' is not installed"):
        encoder.resolve_model_path("package:no_such_model_pkg")


def test_device_choice_from_task_resources(caplog, monkeypatch):
    monkeypatch.setattr(device, "_warned_no_cuda", False)
    assert device.choose_device(device.TaskSlot()) == "cpu"
    assert device.choose_device(device.TaskSlot(gpu_addresses=("1",)), cuda_available=True) == "cuda:1"
    with caplog.at_level(logging.WARNING, logger="segrec.udfs.device"):
        assert device.choose_device(device.TaskSlot(gpu_addresses=("0",)), cuda_available=False) == "cpu"
        assert device.choose_device(device.TaskSlot(gpu_addresses=("0",)), cuda_available=False) == "cpu"
    warnings = [r for r in caplog.records if "CUDA is not available" in r.message]
    assert len(warnings) == 1  # one warning per worker, not per batch


def test_outside_spark_the_slot_has_no_gpu():
    slot = device.current_slot()
    assert slot.gpu_addresses == () and slot.cpus >= 1


def test_ten_megabyte_text_is_chunked_under_the_token_budget(tiny_model_dir):
    from segrec.udfs.text import normalize_text

    enc = Encoder(encoder_settings(model_path=tiny_model_dir, max_length=128, chunk_overlap=0, token_budget=4096))
    text = normalize_text("hiking boots <b>tent</b> camping\x00 " * 300_000)  # 10.5 MB before cleaning
    padded_sizes = []
    forward = enc._forward

    def counting(windows):
        padded_sizes.append(len(windows) * max(len(w) for w in windows))
        return forward(windows)

    enc._forward = counting
    vectors = enc.encode([text, "guitar"])
    assert len(padded_sizes) > 100 and max(padded_sizes) <= 4096  # memory per forward pass is bounded
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[1], enc.encode(["guitar"])[0], atol=1e-5)


def test_settings_that_change_the_vectors_get_their_own_encoder_in_one_worker(tiny_model_dir):
    short = encoder_settings(model_path=tiny_model_dir, max_length=16)
    long = encoder_settings(model_path=tiny_model_dir, max_length=64)
    a, b = encoder.get_encoder(short, TaskSlot()), encoder.get_encoder(long, TaskSlot())
    assert a is not b and (a.capacity, b.capacity) == (14, 62)
    assert encoder.get_encoder(encoder_settings(model_path=tiny_model_dir, max_length=16), TaskSlot()) is a
    truncating = encoder_settings(model_path=tiny_model_dir, max_length=16, long_text="truncate")
    assert encoder.get_encoder(truncating, TaskSlot()) is not a


def test_bfloat16_on_the_cpu_stays_within_a_cosine_of_float32(tiny_model_dir):
    texts = ["hiking boots for the mountain trail", "a cast iron skillet", "guitar " * 40]
    full = encoder.Encoder(encoder_settings(model_path=tiny_model_dir)).encode(texts)
    half = encoder.Encoder(encoder_settings(model_path=tiny_model_dir), dtype="bfloat16").encode(texts)
    assert half.dtype == np.float32 and np.allclose(np.linalg.norm(half, axis=1), 1, atol=1e-5)
    assert (np.sum(full * half, axis=1) > 0.99).all() and not np.array_equal(full, half)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_onnx_runtime_gives_torchs_vectors_and_exports_once_per_model(tiny_model_dir, tmp_path, pooling):
    from segrec.udfs import onnx_runtime

    texts = ["hiking boots for the mountain trail", "a cast iron skillet", "guitar " * 40, "x"]
    settings = encoder_settings(
        model_path=tiny_model_dir,
        max_length=32,
        chunk_overlap=4,
        token_budget=64,
        pooling=pooling,
        onnx_cache_dir=str(tmp_path / "onnx"),
    )
    reference = Encoder(settings).encode(texts)
    on_onnx = Encoder(settings, engine="onnx").encode(texts)  # long text chunked, batches of mixed lengths
    assert on_onnx.dtype == np.float32
    assert np.abs(on_onnx - reference).max() < 1e-5
    (exported,) = (tmp_path / "onnx").glob("*.onnx")
    assert onnx_runtime.EXPORTS[str(exported)] == 1
    Encoder(settings, engine="onnx")  # a second worker's encoder: the cached file, no second export
    assert onnx_runtime.EXPORTS[str(exported)] == 1 and not list((tmp_path / "onnx").glob("*.partial"))


def test_onnx_runs_only_on_cpus_and_needs_onnxruntime(monkeypatch):
    from segrec.udfs import onnx_runtime

    assert encoder.runtime("onnx", "cpu") == "onnx"
    assert encoder.runtime("onnx", "cuda:0") == "torch"  # GPUs run torch
    assert encoder.runtime("torch", "cpu") == "torch"
    monkeypatch.setattr(onnx_runtime, "available", lambda: False)
    with pytest.raises(encoder.WorkerInputError, match="segrec\\[onnx\\]"):
        onnx_runtime.OnnxTransformer("unused", "unused", 1)
