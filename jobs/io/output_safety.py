"""Outputs can never destroy inputs: checked before any write, and enforced at every replacement.

- ``check_locations``: before the first write of a run, every input path is resolved and an
  ``output.path`` equal to it, inside it or containing it is refused (exit 2, naming both); so is a
  catalog-table output whose table name is an input table's, and an output root that is a file or
  cannot be written.
- ``MARKER``: every dataset, model or report directory segrec writes carries a ``_SEGREC`` file (Spark,
  pyarrow and Hive skip files whose names start with an underscore). ``OutputStore`` replaces an
  existing directory only when it carries the marker or the last successful run's manifest lists it:
  anything else under ``output.path`` was not written by segrec, and is refused rather than deleted.
"""

from __future__ import annotations

import glob
import os
import re
from urllib.parse import urlparse

from segrec.jobs.config import Config
from segrec.jobs.errors import ConfigError

MARKER = "_SEGREC"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _is_local(path: str) -> bool:
    return not _SCHEME.match(path) or path.startswith("file:")


def normalise(path: str) -> str:
    """``path`` in a comparable form: local paths absolute and with links resolved, URIs without a trailing slash."""
    if _is_local(path):
        local = path[len("file:") :] if path.startswith("file:") else path
        local = local[2:] if local.startswith("//") else local
        return os.path.realpath(os.path.expanduser(local))
    parsed = urlparse(path)
    return f"{parsed.scheme}://{parsed.netloc}{os.path.normpath(parsed.path or '/')}".rstrip("/")


def _without_glob(path: str) -> str:
    """The directory part of a path before its first glob character (an input can be ``data/*.csv``)."""
    if not glob.has_magic(path):
        return path
    head = re.split(r"[*?\[{]", path, maxsplit=1)[0]
    return head.rsplit("/", 1)[0] if "/" in head else "."


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def check_locations(config: Config, dataset_names: list[str]) -> None:
    """Refuse (ConfigError, exit 2) an output location of ``config`` (for ``dataset_names``) that overlaps an
    input, or cannot be written."""
    output = config.output
    root = normalise(output.path)
    for name in ("items", "users", "interactions"):
        source = getattr(config.inputs, name)
        if source is None:
            continue
        if source.path:
            where = normalise(_without_glob(source.path))
            if _inside(root, where) or _inside(where, root):
                relation = "is" if root == where else ("is inside" if _inside(root, where) else "contains")
                raise ConfigError(
                    f"output.path {output.path} {relation} the {name} input {source.path}: outputs replace whole "
                    "directories, so segrec never writes where it reads. Choose an output.path outside every input."
                )
        elif source.table and output.format == "table":
            # Without output.database the current database is unknown here: a bare name clash is refused.
            clashing = {f"{output.database}.{n}" if output.database else n for n in dataset_names}
            bare = source.table.split(".")[-1]
            if source.table in clashing or (output.database is None and bare in dataset_names):
                raise ConfigError(
                    f"output.format table would write a table named like the {name} input table {source.table}: "
                    "set output.database to a database that holds no input."
                )
    if _is_local(output.path):
        _check_writable(root, output.path)


def _check_writable(root: str, shown: str) -> None:
    if os.path.isfile(root):
        raise ConfigError(f"output.path {shown} is a file: it must be a directory (or not exist yet)")
    existing = root
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if os.path.isfile(existing):
        raise ConfigError(f"output.path {shown} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output.path {shown} is not writable ({existing} does not let this user write)")
