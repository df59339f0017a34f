"""Audience requests: read and checked like every input, then resolved into the items each one targets.

A request targets item ids (existing items, new ones included: they are placed by their text), an
attribute of the items (``column=value`` over the items source's own columns), or a free-text brief.
Every row ends kept or rejected with a reason code; the rejected go to ``rejects`` as source
``audience_requests``.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segrec.jobs.config import AudienceRequestsSource
from segrec.jobs.sources.inputs import (
    INVALID_ENCODING,
    MALFORMED_ROW,
    MISSING_ID,
    UNKNOWN_ITEM,
    clean_id,
    first_reason,
    mark_duplicates,
    named_column,
    text_column,
    undecodable,
    with_raw,
)

SOURCE = "audience_requests"
NO_TARGET = "no_target"
SEVERAL_TARGETS = "several_targets"
INVALID_ATTRIBUTE = "invalid_attribute"
UNKNOWN_COLUMN = "unknown_column"
NO_MATCHING_ITEM = "no_matching_item"
INVALID_SIZE = "invalid_size"
INVALID_SCORE = "invalid_min_score"

KINDS = ("items", "attribute", "brief")
# What a kept request holds, one row per request.
REQUEST_COLUMNS = ["request_id", "kind", "items", "attribute_column", "attribute_value", "brief", "size", "min_score"]


def id_list(raw: DataFrame, column: str | None) -> Column:
    """The item ids of ``column`` in ``raw`` as a clean array (an array column, or a string of ids
    separated by commas); null when the column is absent, empty, or holds no id."""
    if column is None:
        return F.lit(None).cast("array<string>")
    kind = raw.schema[column].dataType
    values = (
        named_column(column).cast("array<string>")
        if isinstance(kind, T.ArrayType)
        else F.split(named_column(column).cast("string"), ",")
    )
    cleaned = F.filter(F.transform(values, lambda v: F.trim(v)), lambda v: (v.isNotNull()) & (F.length(v) > 0))
    return F.when(F.size(cleaned) > 0, cleaned)


def optional_text(raw: DataFrame, column: str | None) -> Column:
    """``column`` of ``raw`` as trimmed text (null when absent or blank)."""
    if column is None:
        return F.lit(None).cast("string")
    text = F.trim(named_column(column).cast("string"))
    return F.when(F.length(text) > 0, text)


def annotate_requests(
    raw: DataFrame, source: AudienceRequestsSource, item_columns: list[str], known_items: DataFrame, pii: str
) -> DataFrame:
    """``raw`` requests with their parsed target and the first failing reason per row (``_reason``):
    unreadable rows, a missing id, no target or more than one, an attribute not written ``column=value``
    or naming a column not among the items source's ``item_columns``, a size that is not a positive whole
    number, a min_score that is not a number, and item ids not in ``known_items`` (the validated
    catalogue). Briefs are normalised and redacted per ``pii`` like every text; duplicates of an id
    after its first row are rejected."""
    cols = source.columns
    size_text = optional_text(raw, cols.size)
    score_text = optional_text(raw, cols.min_score)
    attribute = optional_text(raw, cols.attribute)
    brief = text_column(raw, [cols.brief], source.text_separator, pii) if cols.brief else F.lit(None).cast("string")
    df = with_raw(raw).select(
        clean_id(named_column(cols.id)).alias("request_id"),
        id_list(raw, cols.items).alias("items"),
        attribute.alias("attribute"),
        brief.alias("brief"),
        size_text.alias("_size_text"),
        score_text.alias("_score_text"),
        "_raw",
        "_malformed",
        "_ordinal",
    )
    parts = F.split(F.col("attribute"), "=", 2)
    df = df.select(
        "*",
        F.trim(parts.getItem(0)).alias("attribute_column"),
        F.trim(parts.getItem(1)).alias("attribute_value"),
        F.col("_size_text").cast("double").alias("_size"),
        F.col("_score_text").cast("double").alias("min_score"),
    )
    targets = (
        F.col("items").isNotNull().cast("int")
        + F.col("attribute").isNotNull().cast("int")
        + F.col("brief").isNotNull().cast("int")
    )
    unknown = unknown_item_requests(df, known_items)
    df = df.join(unknown, on="_ordinal", how="left")
    bad_attribute = F.col("attribute").isNotNull() & (
        F.col("attribute_value").isNull() | (F.length("attribute_value") == 0) | (F.length("attribute_column") == 0)
    )
    checks = [
        (undecodable(), INVALID_ENCODING),
        (F.col("_malformed"), MALFORMED_ROW),
        (F.col("request_id").isNull(), MISSING_ID),
        (targets == 0, NO_TARGET),
        (targets > 1, SEVERAL_TARGETS),
        (bad_attribute, INVALID_ATTRIBUTE),
        (F.col("attribute").isNotNull() & ~F.col("attribute_column").isin(item_columns), UNKNOWN_COLUMN),
        (
            F.col("_size_text").isNotNull()
            & (F.col("_size").isNull() | (F.col("_size") < 1) | (F.col("_size") != F.floor("_size"))),
            INVALID_SIZE,
        ),
        (F.col("_score_text").isNotNull() & F.col("min_score").isNull(), INVALID_SCORE),
        (F.coalesce(F.col("_unknown_items"), F.lit(False)), UNKNOWN_ITEM),
    ]
    kind = (
        F.when(F.col("items").isNotNull(), "items")
        .when(F.col("attribute").isNotNull(), "attribute")
        .when(F.col("brief").isNotNull(), "brief")
    )
    annotated = df.withColumn("_reason", first_reason(*checks)).withColumn("kind", kind)
    annotated = annotated.withColumn("size", F.col("_size").cast("long"))
    return mark_duplicates(annotated, "request_id")


def unknown_item_requests(requests: DataFrame, known_items: DataFrame) -> DataFrame:
    """(_ordinal, _unknown_items): the rows of ``requests`` naming an item id not in ``known_items``."""
    named = requests.where(F.col("items").isNotNull()).select("_ordinal", F.explode("items").alias("item_id"))
    missing = named.join(known_items.select("item_id"), on="item_id", how="left_anti")
    return missing.select("_ordinal").distinct().withColumn("_unknown_items", F.lit(True))


def attribute_pairs(requests: DataFrame, raw_items: DataFrame, id_column: str) -> DataFrame:
    """(request_id, item_id) of each attribute request in ``requests``: the items of ``raw_items`` (the
    items source as read, ids in ``id_column``) whose ``attribute_column`` equals ``attribute_value``,
    or holds it in a list or a comma-separated string; compared trimmed and case-blind."""
    wanted = requests.where(F.col("kind") == "attribute")
    columns = sorted({r["attribute_column"] for r in wanted.select("attribute_column").distinct().collect()})
    frames = []
    for column in columns:
        kind = raw_items.schema[column].dataType
        values = (
            named_column(column).cast("array<string>")
            if isinstance(kind, T.ArrayType)
            else F.split(named_column(column).cast("string"), ",")
        )
        frames.append(
            raw_items.select(
                clean_id(named_column(id_column)).alias("item_id"),
                F.lit(column).alias("attribute_column"),
                F.explode(F.transform(values, lambda v: F.lower(F.trim(v)))).alias("_value"),
            )
        )
    if not frames:
        return requests.sparkSession.createDataFrame([], "request_id string, item_id string")
    item_values = frames[0]
    for frame in frames[1:]:
        item_values = item_values.unionByName(frame)
    matched = wanted.select("request_id", "attribute_column", F.lower("attribute_value").alias("_value")).join(
        item_values.where(F.col("item_id").isNotNull()), on=["attribute_column", "_value"], how="inner"
    )
    return matched.select("request_id", "item_id").distinct()


def target_pairs(requests: DataFrame, raw_items: DataFrame, id_column: str) -> DataFrame:
    """(request_id, item_id): the items each items or attribute request of ``requests`` targets (attributes
    matched over ``raw_items``, the items source as read, its ids in ``id_column``)."""
    listed = requests.where(F.col("kind") == "items").select("request_id", F.explode("items").alias("item_id"))
    return listed.distinct().unionByName(attribute_pairs(requests, raw_items, id_column))


def with_unmatched_rejected(annotated: DataFrame, pairs: DataFrame) -> DataFrame:
    """``annotated`` with valid attribute requests that matched no item (no row in ``pairs``) rejected
    as no_matching_item."""
    matched = pairs.select("request_id").distinct().withColumn("_matched", F.lit(True))
    joined = annotated.join(matched, on="request_id", how="left")
    unmatched = F.col("_reason").isNull() & (F.col("kind") == "attribute") & F.col("_matched").isNull()
    return joined.withColumn("_reason", F.when(unmatched, F.lit(NO_MATCHING_ITEM)).otherwise(F.col("_reason"))).drop(
        "_matched"
    )


def split_requests(annotated: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(kept requests in ``REQUEST_COLUMNS``, rejects rows) of the annotated requests."""
    kept = annotated.where(F.col("_reason").isNull()).select(*REQUEST_COLUMNS)
    rejects = annotated.where(F.col("_reason").isNotNull()).select(
        F.lit(SOURCE).alias("source"),
        F.col("_ordinal").alias("row_ordinal"),
        F.col("request_id").alias("id"),
        F.col("_reason").alias("reason"),
        F.col("_raw").alias("raw"),
    )
    return kept, rejects
