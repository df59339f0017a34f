"""Reading a config: YAML safely loaded, ``${VAR}`` interpolated, ``--set`` overrides applied, and
validation errors that name the key, the value and what is allowed."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from segrec.jobs.config.base import DEFAULT_CONF
from segrec.jobs.config.root import Config
from segrec.jobs.config.secrets import is_secret_name, redact
from segrec.jobs.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


_FREE_FORM = ("conf", "options")  # mappings whose keys may contain dots


# A config (aliases expanded) larger than this is refused before it is built: a YAML alias bomb.
MAX_CONFIG_VALUES = 100_000


def load_config(path: str | os.PathLike[str] = DEFAULT_CONF, overrides: list[str] | None = None) -> Config:
    """Read the YAML config at ``path``, apply ``overrides`` (``--set``) and ``${ENV}`` interpolation, validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        _check_expanded_size(yaml.compose(text, Loader=yaml.SafeLoader), str(path))
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, found {type(raw).__name__}")
    return config_from_dict(raw, overrides, source=str(path))


def _check_expanded_size(root: yaml.Node | None, source: str) -> None:
    """Count the values the document holds once its aliases are expanded, without expanding them."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(f"{source}: a YAML alias refers to itself")
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in node.value)
        else:
            total = 1
        open_nodes.discard(key)
        sizes[key] = total
        if total > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{source}: the config holds more than {MAX_CONFIG_VALUES:,} values once its YAML aliases are "
                "expanded (an alias bomb?): refused"
            )
        return total

    if root is not None:
        size(root)


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None, source: str = "<dict>") -> Config:
    """A validated ``Config`` from ``raw`` (a parsed YAML mapping, copied first), with ``overrides``
    (``section.key=value``) applied and ``${VAR}`` interpolated; a ``ConfigError`` naming ``source`` and
    the key otherwise."""
    raw = _deep_copy(raw)
    for item in overrides or []:
        apply_override(raw, item)
    secret_paths: set[tuple[str, ...]] = set()
    resolved = _interpolate(raw, (), secret_paths)
    try:
        config = Config.model_validate(resolved)
    except ValidationError as exc:
        set_keys = [item.partition("=")[0].strip() for item in overrides or []]
        raise ConfigError(f"{source}: invalid config:\n" + format_validation_error(exc, resolved, set_keys)) from None
    config._redacted = redact(config.model_dump(mode="json"), secret_paths)
    return config


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` override ``item`` to the ``raw`` config mapping, in place.

    Keys of free-form mappings (``spark.conf``, ``*.options``) may contain dots themselves, so once the
    walk reaches such a mapping the rest of the dotted path is one key.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    dotted, _, text = item.partition("=")
    keys = dotted.strip().split(".")
    if not dotted.strip() or any(not k for k in keys):
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for i, key in enumerate(keys):
        if i == len(keys) - 1:
            node[key] = value
            return
        if key in _FREE_FORM:
            # Spark conf and reader options are strings to Spark: keep the text as typed.
            node.setdefault(key, {})[".".join(keys[i + 1 :])] = text.strip()
            return
        child = node.setdefault(key, {})
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: '{'.'.join(keys[: i + 1])}' is a value, not a section")
        node = child


def format_validation_error(exc: ValidationError, data: dict[str, Any], set_keys: list[str] | None = None) -> str:
    """One line per problem of ``exc`` in the config ``data``; a problem in a key of ``set_keys`` (given with
    ``--set``) says so (the file is not at fault)."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        given = [k for k in set_keys or [] if loc == k or loc.startswith(k + ".") or k.startswith(loc + ".")]
        origin = f" [given with --set {given[0]}]" if given else ""
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            allowed = _allowed_keys(parent)
            hint = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
            did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
            lines.append(f"  {loc}: unknown key (allowed here: {', '.join(allowed)}){did_you_mean}{origin}")
        elif err["type"] == "missing":
            lines.append(f"  {loc}: required key is missing{origin}")
        else:
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {_short(repr(value))})"
            lines.append(f"  {loc}: {err['msg']}{shown}{origin}")
    return "\n".join(lines)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        sub = _model_in(field.annotation)
        if sub is None:
            return []
        model = sub
    return sorted(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _interpolate(value: Any, path: tuple[str, ...], secret_paths: set[tuple[str, ...]]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, path + (str(k),), secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, path + (str(i),), secret_paths) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if is_secret_name(name):
            secret_paths.add(path)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{'.'.join(path)}: environment variable ${{{name}}} is not set and has no default")

    return _ENV_REF.sub(substitute, value)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
