"""Driver-side code for segrec.

The run's machinery sits at the top (cli, pipeline, context, session, errors, spark_submit, and the
``config`` package); the stages are together in ``stages/``; the libraries they share are grouped by
domain: ``sources``, ``vectors``, ``towers``, ``segments``, ``recommendations``, ``audiences``,
``evaluation`` and ``io``.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("segrec")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
