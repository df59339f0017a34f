"""The input sources' sections (items, interactions, users, suppressions...), their column mappings, the
demo data, and what happens to every text column."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from segrec.jobs.config.base import Section


class Source(Section):
    """Where one input comes from: a path in a file format, or a catalog table."""

    path: str | None = None
    table: str | None = None
    format: Literal["parquet", "csv", "json", "orc", "delta"] = "parquet"
    options: dict[str, str] = Field(default_factory=dict, description="reader options, e.g. header for csv")
    text_separator: str = Field(". ", description="joins the text columns of one row into one text")
    max_reject_share: float = Field(
        0.5, ge=0, le=1, description="stop the run when a larger share of this source's rows is rejected"
    )

    @model_validator(mode="after")
    def _one_location(self) -> Source:
        if bool(self.path) == bool(self.table):
            raise ValueError("give exactly one of 'path' or 'table'")
        return self

    @property
    def location(self) -> str:
        """Where the source is read from, for messages: its path, or the catalog table."""
        return self.path or f"table {self.table}"


class ItemColumns(Section):
    """The items source's column mapping: the item ``id`` and the ``text`` columns joined into its text."""

    id: str
    text: list[str] = Field(default_factory=list)


class InteractionColumns(Section):
    """The interactions source's column mapping: ``user_id``, ``item_id``, and optionally ``rating``,
    ``timestamp`` and review ``text`` columns."""

    user_id: str
    item_id: str
    rating: str | None = None
    timestamp: str | None = None
    text: list[str] = Field(default_factory=list)


class UserColumns(Section):
    """The users source's column mapping: the user ``id`` and the ``text`` columns of the user's own text."""

    id: str
    text: list[str] = Field(default_factory=list)


class ItemsSource(Source):
    """``inputs.items``: the catalogue."""

    columns: ItemColumns


class InteractionsSource(Source):
    """``inputs.interactions``: who interacted with what, and how the rating column reads."""

    columns: InteractionColumns
    timestamp_unit: Literal["s", "ms"] = Field("s", description="unit of numeric timestamps")
    feedback: Literal["explicit", "implicit"] = Field(
        "explicit",
        description="explicit: the rating column holds ratings (weights centred per user); "
        "implicit: it holds counts or plays (weight from implicit_weight)",
    )
    implicit_weight: Literal["log1p", "binary"] = Field(
        "log1p", description="implicit feedback: weight = log(1 + count), or 1 for any interaction"
    )


class UsersSource(Source):
    """``inputs.users`` (optional): users' own texts."""

    columns: UserColumns
    complete: bool = Field(
        False,
        description="true: the users source lists every user, so interactions of unlisted users are "
        "rejected as unknown_user; false: it holds text for some users only, and the others are kept",
    )


class SuppressionColumns(Section):
    """The suppressions source's column mapping: the ``id`` of a user never to contact."""

    id: str


class SuppressionsSource(Source):
    """``inputs.suppressions`` (optional): users never to contact (opt-outs, complaints, legal holds)."""

    columns: SuppressionColumns


class AudienceRequestColumns(Section):
    """The audience requests' column mapping. Each row needs an ``id`` and exactly one target: ``items``
    (item ids: an array, or a string of ids separated by commas), ``attribute`` (``column=value`` over
    the items source's own columns: equal, or one of a list or comma-separated value), or ``brief``
    (free text). ``size`` and ``min_score`` (optional columns) override the defaults per request."""

    id: str
    items: str | None = None
    attribute: str | None = None
    brief: str | None = None
    size: str | None = None
    min_score: str | None = None


class AudienceRequestsSource(Source):
    """``audience.requests``: the campaigns to find audiences for, one request per row."""

    columns: AudienceRequestColumns

    @model_validator(mode="after")
    def _some_target(self) -> AudienceRequestsSource:
        if not (self.columns.items or self.columns.attribute or self.columns.brief):
            raise ValueError("map at least one target column: items, attribute or brief")
        return self


class Inputs(Section):
    """``inputs``: the sources a run reads (items and interactions required, users and suppressions
    optional)."""

    items: ItemsSource
    interactions: InteractionsSource
    users: UsersSource | None = None
    suppressions: SuppressionsSource | None = None


class Demo(Section):
    """The embedded demo data: written to ``dir`` from the installed registry package when absent."""

    dataset: Literal["movielens100k"] | None = None
    dir: str = "data/movielens100k"


class Text(Section):
    """What happens to every text column after normalisation, before hashing, embedding and labels."""

    pii: Literal["redact", "keep"] = Field(
        "redact",
        description="redact: e-mail addresses, phone, card and IBAN numbers, IPs and URLs with "
        "credentials become typed placeholders (<email>, <phone>, ...); keep: texts as written",
    )
