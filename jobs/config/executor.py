"""The one path from a config section to executor code: frozen settings values built from the config."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from segrec.jobs.config.root import Config
from segrec.udfs.config_keys import config_fields

S = TypeVar("S")


def executor_settings(cls: type[S], *sources: BaseModel, **values: Any) -> S:
    """The frozen settings value ``cls`` (``EncoderSettings``, ``TopKSettings``, ``TowerSettings``) that
    executor code receives, built from the config: the one path from a config section to the workers.

    Each field of ``cls`` names its ``section.key`` (``udfs.config_keys``) and takes that key's value
    from ``sources``: a whole ``Config``, or single sections (a ``Recommend``, a ``Train`` with a grid
    cell's overrides). A section not given is the config's default section, so
    ``executor_settings(TopKSettings)`` is what a default config runs. ``values`` give the fields the
    driver resolves (no config key) and override any other (evaluate's grids, tests).
    """
    sections = _sections(sources)
    kwargs: dict[str, Any] = {}
    for name, key in config_fields(cls).items():
        if name in values:
            kwargs[name] = values.pop(name)
        elif key is None:
            raise TypeError(f"{cls.__name__}.{name} is resolved by the driver: pass {name}=...")
        else:
            section, field_name = key.split(".")
            if section not in sections:
                sections[section] = Config.model_fields[section].default_factory()  # type: ignore[misc,call-arg]
            kwargs[name] = getattr(sections[section], field_name)
    if values:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(values)}")
    return cls(**kwargs)


def _sections(sources: tuple[BaseModel, ...]) -> dict[str, BaseModel]:
    """Section name -> section, from whole configs and single sections."""
    names = {field.annotation: name for name, field in Config.model_fields.items()}
    found: dict[str, BaseModel] = {}
    for source in sources:
        if isinstance(source, Config):
            found.update({name: getattr(source, name) for name in Config.model_fields})
        elif type(source) in names:
            found[names[type(source)]] = source
        else:
            raise TypeError(f"not a config or a config section: {type(source).__name__}")
    return found
