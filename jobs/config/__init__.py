"""Run configuration: YAML -> typed, validated objects, before any Spark work starts.

One module per seam: ``inputs`` (sources, columns, demo, text), ``stages`` (each stage's section),
``root`` (run, spark, output, MLflow, and ``Config`` holding them all), ``loading`` (YAML, ``${VAR}``,
``--set``, error messages), ``secrets`` (what the manifest redacts) and ``executor`` (settings values
for executor code). Everything is importable from here.

- Unknown keys are errors (a misspelt key never silently falls back to a default).
- Wrong types and out-of-range values name the key, the value and what is allowed.
- ``--set section.key=value`` overrides any key; values are parsed as YAML scalars.
- ``${VAR}`` and ``${VAR:-default}`` in strings are replaced from the environment.
- Nothing is evaluated or unpickled: YAML is read with ``safe_load``.
"""

from segrec.jobs.config.base import DEFAULT_CONF, PACKAGED_MODEL, Section
from segrec.jobs.config.executor import executor_settings
from segrec.jobs.config.inputs import (
    AudienceRequestColumns,
    AudienceRequestsSource,
    Demo,
    Inputs,
    InteractionColumns,
    InteractionsSource,
    ItemColumns,
    ItemsSource,
    Source,
    SuppressionColumns,
    SuppressionsSource,
    Text,
    UserColumns,
    UsersSource,
)
from segrec.jobs.config.loading import (
    MAX_CONFIG_VALUES,
    apply_override,
    config_from_dict,
    format_validation_error,
    load_config,
)
from segrec.jobs.config.root import Config, Mlflow, Output, Run, Spark
from segrec.jobs.config.secrets import is_secret_name, redact
from segrec.jobs.config.stages import Als, Audience, Embed, Evaluate, Model, Profile, Recommend, Segment, Train

__all__ = [
    "Als",
    "Audience",
    "AudienceRequestColumns",
    "AudienceRequestsSource",
    "SuppressionColumns",
    "SuppressionsSource",
    "Config",
    "DEFAULT_CONF",
    "Demo",
    "Embed",
    "Evaluate",
    "Inputs",
    "InteractionColumns",
    "InteractionsSource",
    "ItemColumns",
    "ItemsSource",
    "MAX_CONFIG_VALUES",
    "Mlflow",
    "Model",
    "Output",
    "PACKAGED_MODEL",
    "Profile",
    "Recommend",
    "Run",
    "Section",
    "Segment",
    "Source",
    "Spark",
    "Text",
    "Train",
    "UserColumns",
    "UsersSource",
    "apply_override",
    "config_from_dict",
    "executor_settings",
    "format_validation_error",
    "is_secret_name",
    "load_config",
    "redact",
]
