"""Driver-side code for segrec: config, Spark session, sources, one module per stage, outputs."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("segrec")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
