"""How an executor settings dataclass says where each of its fields comes from in the run config.

A settings value (``EncoderSettings``, ``TopKSettings``, ``TowerSettings``) is built on the driver by
``segrec.jobs.config.executor_settings`` and shipped to the workers. Its fields carry no defaults: each
one names its config key (``from_config("model.max_length")``), so every default is declared once, in
the config, and a settings value built in a test or benchmark is the one the job runs. A field the
driver works out itself (``resolved()``, such as the towers' objective once ``auto`` is decided) must
be given when the value is built.
"""

from __future__ import annotations

from dataclasses import Field, field, fields
from typing import Any

CONFIG_KEY = "segrec_config_key"


def from_config(key: str) -> Any:
    """A dataclass field whose value is the config's ``section.key``."""
    return field(metadata={CONFIG_KEY: key})


def resolved() -> Any:
    """A dataclass field the driver computes (it has no config key of its own)."""
    return field(metadata={CONFIG_KEY: None})


def config_key(item: Field) -> str | None:
    """The ``section.key`` the settings field ``item`` is read from, or None for a resolved field."""
    return item.metadata.get(CONFIG_KEY)


def config_fields(cls: type) -> dict[str, str | None]:
    """Field name -> config key (None: resolved by the driver) for a settings dataclass."""
    return {item.name: config_key(item) for item in fields(cls)}
