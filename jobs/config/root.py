"""The whole run config: run, spark, output and MLflow sections, and ``Config``, which holds every section."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from segrec.jobs.config.base import Section
from segrec.jobs.config.inputs import Demo, Inputs, Text
from segrec.jobs.config.secrets import redact
from segrec.jobs.config.stages import Audience, Embed, Evaluate, Model, Profile, Recommend, Segment, Train


class Run(Section):
    """``run``: the run's name and id."""

    name: str = "segrec"
    id: str | None = Field(None, description="defaults to a UTC timestamp plus a random suffix")


class Spark(Section):
    """``spark``: the session segrec creates when no notebook or spark-submit provides one."""

    master: str | None = Field(None, description="None: whatever spark-submit or the notebook provides")
    remote: str | None = Field(
        None,
        description="a Spark Connect server (sc://host:15002, or local[N] to start one here); also "
        "--remote and SPARK_REMOTE. Not with master",
    )
    app_name: str = "segrec"
    driver_memory: str | None = Field("4g", pattern=r"^\d+[kmgt]?$")
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"] = "WARN"
    conf: dict[str, str] = Field(default_factory=dict, description="extra Spark conf, applied last")

    @model_validator(mode="after")
    def _one_of_master_and_remote(self) -> Spark:
        if self.master and self.remote:
            raise ValueError(
                f"set master ({self.master}) or remote ({self.remote}), not both: remote is a Spark "
                "Connect server, which has its own master"
            )
        return self


class Mlflow(Section):
    """Where train, segment and evaluate log their parameters, metrics, reports and models."""

    enabled: bool | Literal["auto"] = Field(
        "auto",
        description="auto: when a tracking URI is set (here or MLFLOW_TRACKING_URI) or on Databricks, "
        "and mlflow is installed; true: required (an error without mlflow)",
    )
    tracking_uri: str | None = Field(None, description="None: MLFLOW_TRACKING_URI, or the workspace's on Databricks")
    experiment: str = Field("segrec", description="experiment name (on Databricks a workspace path, /Users/...)")
    artifact_location: str | None = Field(
        None, description="where a new experiment keeps artifacts (None: server default)"
    )


class Output(Section):
    """``output``: where datasets, models and manifests go, in which format, and for which date."""

    path: str = Field("output", description="datasets (unless format is table), models, manifests, staging")
    format: Literal["parquet", "delta", "table"] = Field("parquet", description="table: catalog tables")
    database: str | None = Field(None, description="format table: the catalog database (None: the current one)")
    run_date: str | None = Field(
        None,
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="write (and read) every dataset's run_date=<date> partition; re-runs replace only that date",
    )

    @field_validator("run_date", mode="before")
    @classmethod
    def _date_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 2026-11-23 as a date: take it as the ISO text it was written as.
        return value.isoformat() if isinstance(value, date) else value


class Config(Section):
    """The whole run config: one field per section."""

    run: Run = Field(default_factory=Run)
    spark: Spark = Field(default_factory=Spark)
    inputs: Inputs
    text: Text = Field(default_factory=Text)
    demo: Demo = Field(default_factory=Demo)
    model: Model = Field(default_factory=Model)
    embed: Embed = Field(default_factory=Embed)
    profile: Profile = Field(default_factory=Profile)
    train: Train = Field(default_factory=Train)
    segment: Segment = Field(default_factory=Segment)
    recommend: Recommend = Field(default_factory=Recommend)
    evaluate: Evaluate = Field(default_factory=Evaluate)
    audience: Audience = Field(default_factory=Audience)
    mlflow: Mlflow = Field(default_factory=Mlflow)
    output: Output = Field(default_factory=Output)

    # Not a config key: the config as loaded, with secrets redacted, for the manifest.
    _redacted: dict[str, Any] = {}

    def redacted(self) -> dict[str, Any]:
        """The resolved config with values of secret-looking variables and keys replaced."""
        return self._redacted or redact(self.model_dump(mode="json"))
