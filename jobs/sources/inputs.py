"""Input sources: read (the only I/O here), check the schema, and sort every row into kept or rejected.

Each ``annotate_*`` transform returns the source's rows in the data contract's columns plus
``_reason`` (null when the row is kept), ``_raw`` (the original row as JSON) and ``_ordinal`` (read
order, used to keep the first of duplicate ids deterministically). ``split`` turns that into the kept
rows and the ``rejects`` rows, so every input row ends in exactly one of the two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.utils import AnalysisException

from segrec.jobs.config import InteractionsSource, ItemsSource, Source, SuppressionsSource, UsersSource
from segrec.jobs.errors import InputError
from segrec.udfs.pii import KINDS as PII_KINDS
from segrec.udfs.pii import PLACEHOLDER, redact_series
from segrec.udfs.text import render_frame

# Reason codes written to `rejects`.
INVALID_ENCODING = "invalid_encoding"
MISSING_ID = "missing_id"
DUPLICATE_ID = "duplicate_id"
EMPTY_TEXT = "empty_text"
MISSING_USER_ID = "missing_user_id"
MISSING_ITEM_ID = "missing_item_id"
INVALID_RATING = "invalid_rating"
INVALID_TIMESTAMP = "invalid_timestamp"
UNKNOWN_ITEM = "unknown_item"
UNKNOWN_USER = "unknown_user"
MALFORMED_ROW = "malformed_row"
CORRUPT = "_corrupt_record"  # the CSV reader's column for rows it could not split into the header's fields

_ID_TYPES = (T.StringType, T.IntegerType, T.LongType, T.ShortType, T.ByteType, T.DecimalType)
_ATOMIC_TYPES = (T.StringType, T.NumericType, T.BooleanType, T.DateType, T.TimestampType, T.TimestampNTZType)
_TIME_TYPES = (T.TimestampType, T.TimestampNTZType, T.DateType)


# ------------------------------------------------------------------------------------------ read


def read_source(spark: SparkSession, name: str, source: Source) -> DataFrame:
    """Read input ``name`` from ``source``'s path or catalog table with ``spark``, failing with the source named."""
    try:
        if source.table:
            return spark.table(source.table)
        reader = spark.read.format(source.format)
        options = dict(source.options)
        if source.format in ("parquet", "orc"):
            # Spark takes the schema of one file unless told to merge: a directory whose files differ in
            # columns (one written before `description` existed) would lose a column that others hold.
            options.setdefault("mergeSchema", "true")
        if source.format == "csv":
            options.setdefault("header", "true")
            # Whole-row values (multi-line quoted text) and malformed rows stay visible to validation.
            options.setdefault("multiLine", "true")
            options.setdefault("mode", "PERMISSIVE")
            options.setdefault("escape", '"')  # RFC 4180: a quote inside quotes is doubled
            if options["mode"].upper() == "PERMISSIVE" and "columnNameOfCorruptRecord" not in options:
                # A row with too few or too many fields, or an unclosed quote that swallows the lines
                # after it, keeps its raw text in CORRUPT and becomes a malformed_row reject.
                columns = reader.options(**options).load(source.path).schema
                if CORRUPT not in columns.fieldNames():
                    schema = T.StructType(columns.fields + [T.StructField(CORRUPT, T.StringType())])
                    options["columnNameOfCorruptRecord"] = CORRUPT
                    return reader.options(**options).schema(schema).load(source.path)
        return reader.options(**options).load(source.path)
    except AnalysisException as exc:
        message = str(exc).splitlines()[0]
        if "PATH_NOT_FOUND" in message or "does not exist" in message:
            raise InputError(f"{name}: input path not found: {source.path}") from None
        if "TABLE_OR_VIEW_NOT_FOUND" in message:
            raise InputError(f"{name}: table not found: {source.table}") from None
        raise InputError(f"{name}: cannot read {source.location}: {message}") from None
    except Exception as exc:  # Spark's own read errors (Py4JJavaError) while inferring the schema
        mapped = unreadable(name, source, exc)
        if mapped is exc:
            raise
        raise mapped from None


def unreadable(name: str, source, exc: Exception) -> Exception:
    """Source ``name`` (``source``) whose files Spark cannot read as configured (``exc``: another format,
    files with conflicting schemas, a corrupt file): an input error naming it, with Spark's own reason in
    one line. Anything else is unexpected and stays as it is."""
    text = str(exc)
    # the reason runs to Spark's SQLSTATE or its Java stack (CANNOT_MERGE_SCHEMAS prints both schemas
    # on lines of their own), whitespace folded onto one line
    match = re.search(
        r"\[(FAILED_READ_FILE[A-Z_.]*|CANNOT_[A-Z_.]+|MALFORMED_[A-Z_.]+|INCOMPATIBLE_[A-Z_.]+)\]"
        r"(?:(?!SQLSTATE|\n\s*at )[\s\S])*",
        text,
    )
    if match is None:
        return exc
    reason = " ".join(match.group(0).split())
    reason = reason if len(reason) <= 400 else reason[:397] + "..."
    return InputError(
        f"{name}: cannot read {source.location} as {source.format}: {reason} "
        f"Check inputs.{name}.format and that every file under the path has the same columns and types."
    )


# ---------------------------------------------------------------------------------------- schema


def check_columns(df: DataFrame, name: str, source: Source, roles: dict[str, list[str]]) -> None:
    """Fail fast when a column ``source`` maps is absent from ``df`` (source ``name``) or of a type that cannot
    mean what its role needs.

    ``roles`` maps a role ('id', 'text', 'rating', 'timestamp') to the mapped column names.
    """
    types = {f.name: f.dataType for f in df.schema.fields}
    for role, columns in roles.items():
        for column in columns:
            if column not in types:
                near = [c for c in types if c.lower() == column.lower()]
                hint = f"; did you mean '{near[0]}'?" if near else ""
                raise InputError(
                    f"{name}: mapped {role} column '{column}' is not in {source.location} "
                    f"(found: {', '.join(types) or 'no columns'}){hint}"
                )
            found = types[column]
            expected = _ROLE_TYPES[role]
            if not _type_ok(role, found):
                raise InputError(
                    f"{name}: column '{column}' ({role}) has type {found.simpleString()}, expected {expected}"
                )


_ROLE_TYPES = {
    "id": "string or integer",
    "text": "string, a number, a date, or an array of strings",
    "rating": "a number or a string holding a number",
    "timestamp": "timestamp, date, epoch number, or a string holding a timestamp",
}


def _type_ok(role: str, found: T.DataType) -> bool:
    if role == "id":
        return isinstance(found, _ID_TYPES) and not (isinstance(found, T.DecimalType) and found.scale > 0)
    if role == "text":
        if isinstance(found, T.ArrayType):
            return isinstance(found.elementType, _ATOMIC_TYPES)
        return isinstance(found, _ATOMIC_TYPES)
    if role == "rating":
        return isinstance(found, (T.NumericType, T.StringType))
    if role == "timestamp":
        return isinstance(found, (*_TIME_TYPES, T.NumericType, T.StringType))
    raise ValueError(role)


# ------------------------------------------------------------------------------------ transforms


def named_column(name: str) -> Column:
    """The column called ``name``, however it is spelt (dots, spaces and backticks quoted)."""
    return F.col("`" + name.replace("`", "``") + "`")


def clean_id(column: Column) -> Column:
    """The ids of ``column`` as trimmed strings; null when absent or blank."""
    text = F.trim(column.cast("string"))
    return F.when(F.length(text) > 0, text)


def _render_udf(separator: str, pii: str):
    @F.pandas_udf("string")  # type: ignore[call-overload]  # pyspark stubs: DDL strings
    def render(parts: pd.DataFrame) -> pd.Series:
        texts = render_frame(parts, separator)
        return redact_series(texts) if pii == "redact" else texts

    return render


def text_column(df: DataFrame, columns: list[str], separator: str, pii: str) -> Column:
    """The normalised text of each row of ``df``: the ``columns``, cleaned and joined with ``separator``, personal data
    replaced by typed placeholders (``udfs.pii``) unless ``pii`` is keep; null when empty."""
    if not columns:
        return F.lit(None).cast("string")
    types = {f.name: f.dataType for f in df.schema.fields}
    parts = []
    for i, name in enumerate(columns):
        value = named_column(name)
        if isinstance(types[name], T.ArrayType):
            value = F.array_join(value.cast("array<string>"), ", ")
        parts.append(value.cast("string").alias(f"p{i}"))
    return _render_udf(separator, pii)(F.struct(*parts))


def with_raw(df: DataFrame) -> DataFrame:
    """``df`` with the original row as JSON, whether the reader found it malformed (CSV), and its read
    order, before any column is touched. A malformed row's raw JSON is its text as read."""
    original = [named_column(c) for c in df.columns if c != CORRUPT]
    raw = F.to_json(F.struct(*original))
    malformed = F.lit(False)
    if CORRUPT in df.columns:
        malformed = F.col(CORRUPT).isNotNull()
        text = F.struct(F.col(CORRUPT).alias("malformed_text"), F.input_file_name().alias("file"))
        raw = F.when(malformed, F.to_json(text)).otherwise(raw)
    return df.select(
        *original,
        raw.alias("_raw"),
        malformed.alias("_malformed"),
        F.monotonically_increasing_id().alias("_ordinal"),
    )


def undecodable() -> Column:
    """True when the row held bytes that were not valid UTF-8: readers decode them to U+FFFD."""
    return F.instr(F.col("_raw"), "\ufffd") > 0


def first_reason(*checks: tuple[Column, str]) -> Column:
    """The reason of the first failing check, in order; null when every check passes."""
    expr = None
    for failed, reason in checks:
        expr = F.when(failed, F.lit(reason)) if expr is None else expr.when(failed, F.lit(reason))
    return expr if expr is not None else F.lit(None).cast("string")


def mark_duplicates(df: DataFrame, key: str) -> DataFrame:
    """Reject every row of ``df`` but the first (by read order) of each ``key``, among rows not already rejected."""
    valid = F.col("_reason").isNull()
    window = Window.partitionBy(key, valid).orderBy("_ordinal")
    duplicate = valid & (F.row_number().over(window) > 1)
    return df.withColumn("_reason", F.when(duplicate, F.lit(DUPLICATE_ID)).otherwise(F.col("_reason")))


def annotate_entities(
    raw: DataFrame, source: ItemsSource | UsersSource, key: str, require_text: bool, pii: str = "redact"
) -> DataFrame:
    """Items or users in ``raw`` under ``source``'s mapping: a clean id (``key``), the rendered text (redacted
    per ``pii``; required when ``require_text``), and the first failing reason per row."""
    cols = source.columns
    df = with_raw(raw).select(
        clean_id(named_column(cols.id)).alias(key),
        text_column(raw, cols.text, source.text_separator, pii).alias("text"),
        "_raw",
        "_malformed",
        "_ordinal",
    )
    # bytes that are not UTF-8 come first: a JSON parser fails on them too, and the bytes are the cause
    checks = [
        (undecodable(), INVALID_ENCODING),
        (F.col("_malformed"), MALFORMED_ROW),
        (F.col(key).isNull(), MISSING_ID),
    ]
    if require_text and cols.text:
        checks.append((F.col("text").isNull(), EMPTY_TEXT))
    return mark_duplicates(df.withColumn("_reason", first_reason(*checks)), key)


def annotate_suppressions(raw: DataFrame, source: SuppressionsSource) -> DataFrame:
    """``raw`` suppressions sorted into kept and rejected under ``source``'s mapping: a clean user id per
    row; a row without one (or unreadable) is rejected, and a repeated id is a duplicate_id."""
    user_id = clean_id(named_column(source.columns.id)).alias("user_id")
    no_text = F.lit(None).cast("string").alias("text")  # nothing to redact or count in a suppression
    df = with_raw(raw).select(user_id, no_text, "_raw", "_malformed", "_ordinal")
    checks = [
        (undecodable(), INVALID_ENCODING),
        (F.col("_malformed"), MALFORMED_ROW),
        (F.col("user_id").isNull(), MISSING_ID),
    ]
    return mark_duplicates(df.withColumn("_reason", first_reason(*checks)), "user_id")


def annotate_items(raw: DataFrame, source: ItemsSource, pii: str = "redact") -> DataFrame:
    """``raw`` items sorted into kept and rejected under the items ``source``'s mapping, texts redacted
    per ``pii``."""
    return annotate_entities(raw, source, "item_id", require_text=True, pii=pii)


def annotate_users(raw: DataFrame, source: UsersSource, pii: str = "redact") -> DataFrame:
    """``raw`` users sorted into kept and rejected under the users ``source``'s mapping, texts redacted
    per ``pii``; a user without text is kept."""
    # A user's own text is optional: a user with none is still known and keeps their interactions.
    return annotate_entities(raw, source, "user_id", require_text=False, pii=pii)


# Ratings and counts beyond this are a unit or mapping mistake, and sums of a few of them would overflow
# the weights built from them: rejected as invalid_rating.
MAX_RATING = 1e9


def parse_rating(column: Column, dtype: T.DataType) -> Column:
    """The ratings of ``column`` (of type ``dtype``) as doubles; null when the value is not a number (checked
    for NaN/inf afterwards)."""
    return column.cast("double") if isinstance(dtype, T.NumericType) else F.trim(column).try_cast("double")


def _epoch(seconds: Column) -> Column:
    # Out-of-range epochs would overflow (an error under ANSI mode): they become null, i.e. invalid.
    return F.when(F.abs(seconds) < 1e11, F.timestamp_seconds(seconds))


def parse_timestamp(column: Column, dtype: T.DataType, unit: str) -> Column:
    """Timestamps from ``column`` of type ``dtype``: timestamp/date, epoch numbers (``unit``: s or ms), or
    strings of either."""
    if isinstance(dtype, _TIME_TYPES):
        return column.cast("timestamp")
    divisor = 1000.0 if unit == "ms" else 1.0
    if isinstance(dtype, T.NumericType):
        return _epoch(column.cast("double") / divisor)
    text = F.trim(column)
    return F.coalesce(F.try_to_timestamp(text), _epoch(text.try_cast("double") / divisor))


def annotate_interactions(
    raw: DataFrame,
    source: InteractionsSource,
    known_items: DataFrame,
    known_users: DataFrame | None,
    pii: str = "redact",
) -> DataFrame:
    """``raw`` interactions under ``source``'s mapping, texts redacted per ``pii``, each row with its first
    failing reason. ``known_items`` / ``known_users`` hold the kept ids (one column each: item_id / user_id)."""
    cols = source.columns
    types = {f.name: f.dataType for f in raw.schema.fields}
    base = with_raw(raw)
    extra = []
    if cols.rating:
        extra.append(named_column(cols.rating).alias("_r"))
    if cols.timestamp:
        extra.append(named_column(cols.timestamp).alias("_t"))
    df = base.select(
        clean_id(named_column(cols.user_id)).alias("user_id"),
        clean_id(named_column(cols.item_id)).alias("item_id"),
        text_column(raw, cols.text, source.text_separator, pii).alias("text"),
        *extra,
        "_raw",
        "_malformed",
        "_ordinal",
    )
    rating = parse_rating(F.col("_r"), types[cols.rating]) if cols.rating else F.lit(None).cast("double")
    timestamp = (
        parse_timestamp(F.col("_t"), types[cols.timestamp], source.timestamp_unit)
        if cols.timestamp
        else F.lit(None).cast("timestamp")
    )
    df = df.withColumn("rating", rating).withColumn("timestamp", timestamp)

    df = df.join(known_items.select("item_id", F.lit(True).alias("_item_known")), on="item_id", how="left")
    if known_users is not None:
        df = df.join(known_users.select("user_id", F.lit(True).alias("_user_known")), on="user_id", how="left")
    else:
        df = df.withColumn("_user_known", F.lit(True))

    bad_rating = F.lit(bool(cols.rating)) & (
        F.col("rating").isNull() | F.isnan("rating") | (F.abs(F.col("rating")) > MAX_RATING)
    )
    bad_time = F.lit(bool(cols.timestamp)) & F.col("timestamp").isNull()
    df = df.withColumn(
        "_reason",
        first_reason(
            (undecodable(), INVALID_ENCODING),  # before malformed_row: the bytes are the cause
            (F.col("_malformed"), MALFORMED_ROW),
            (F.col("user_id").isNull(), MISSING_USER_ID),
            (F.col("item_id").isNull(), MISSING_ITEM_ID),
            (bad_rating, INVALID_RATING),
            (bad_time, INVALID_TIMESTAMP),
            (F.col("_item_known").isNull(), UNKNOWN_ITEM),
            (F.col("_user_known").isNull(), UNKNOWN_USER),
        ),
    )
    return df.select("user_id", "item_id", "rating", "timestamp", "text", "_reason", "_raw", "_ordinal")


CONTRACT_COLUMNS = {
    "items": ["item_id", "text"],
    "users": ["user_id", "text"],
    "interactions": ["user_id", "item_id", "rating", "timestamp", "text"],
    "suppressions": ["user_id"],
}


def split(annotated: DataFrame, name: str) -> tuple[DataFrame, DataFrame]:
    """(kept rows in contract columns, rejects rows) of one annotated source, ``name``."""
    kept = annotated.where(F.col("_reason").isNull()).select(*CONTRACT_COLUMNS[name])
    if name == "interactions":
        reject_id = F.concat_ws(
            " ",
            F.concat(F.lit("user="), F.coalesce("user_id", F.lit("null"))),
            F.concat(F.lit("item="), F.coalesce("item_id", F.lit("null"))),
        )
    else:
        reject_id = F.col(CONTRACT_COLUMNS[name][0])
    rejects = annotated.where(F.col("_reason").isNotNull()).select(
        F.lit(name).alias("source"),
        F.col("_ordinal").alias("row_ordinal"),
        reject_id.alias("id"),
        F.col("_reason").alias("reason"),
        F.col("_raw").alias("raw"),
    )
    return kept, rejects


@dataclass
class SourceCounts:
    """Rows in = kept + rejected, with the rejected broken down by reason."""

    rows_in: int = 0
    kept: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    pii_redacted: dict[str, int] = field(default_factory=dict)  # placeholders per kind, never the values

    @property
    def rejected(self) -> int:
        """Rows rejected, all reasons together."""
        return sum(self.rejected_by_reason.values())

    def as_dict(self) -> dict[str, object]:
        """The counts as the manifest records them."""
        return {
            "rows_in": self.rows_in,
            "kept": self.kept,
            "rejected": self.rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "pii_redacted": dict(self.pii_redacted),
        }


@dataclass(frozen=True)
class UnclosedQuote:
    """A CSV record whose quote is never closed: it swallowed every record after it in its file."""

    file: str
    line: int  # where the quote opens (1 = the header line)
    swallowed: int  # non-empty lines after it, each a record lost into this one

    def describe(self, name: str) -> str:
        """One sentence for source ``name``: where the quote opens and what it swallowed."""
        where = self.file[len("file://") :] if self.file.startswith("file:///") else self.file
        return (
            f"{name}: line {self.line} of {where} opens a quote that is never closed; the {self.swallowed} "
            f"line(s) after it were read as part of that one record, rejected as {MALFORMED_ROW}"
        )


def unclosed_quotes(spark: SparkSession, annotated: DataFrame, limit: int = 10) -> list[UnclosedQuote]:
    """The malformed CSV records of ``annotated`` whose text runs over several lines (found with ``spark``): a quote
    never closed reads everything to the end of its file as one field. At most ``limit`` of them, in
    read order, each located in its file (a small job per record: few files have more than one)."""
    text = F.get_json_object("_raw", "$.malformed_text")
    lines = F.filter(F.split(text, "\n"), lambda line: F.length(F.trim(line)) > 0)
    found = (
        annotated.where((F.col("_reason") == MALFORMED_ROW) & text.contains("\n"))
        .select(
            F.get_json_object("_raw", "$.file").alias("file"),
            F.substring(text, 1, 200).alias("head"),
            (F.size(lines) - 1).alias("swallowed"),
            "_ordinal",
        )
        .orderBy("_ordinal")
        .limit(limit)
        .collect()
    )
    quotes = []
    for row in found:
        # one job over the file: where the record starts, and the line that is (lines before it + 1)
        at = F.locate(row["head"], F.col("value"))
        preceding = F.substring(F.col("value"), F.lit(1), F.greatest(at - 1, F.lit(0)))
        found_at = spark.read.text(row["file"], wholetext=True).select(
            at.alias("at"), F.size(F.split(preceding, "\n")).alias("line")
        )
        located = found_at.collect()[0]
        start = located["line"] if located["at"] > 0 else 0
        head = row["head"]
        opened = start + head[: head.index('"')].count("\n") if '"' in head else start
        quotes.append(UnclosedQuote(row["file"], opened, row["swallowed"]))
    return quotes


def count_reasons(annotated: DataFrame) -> SourceCounts:
    """One Spark action over ``annotated``: rows per reason (null reason = kept), and the placeholders of
    redacted personal data per kind (normalisation strips tags, so only a text that spelled one out as HTML entities,
    ``&lt;email&gt;``, holds a placeholder it did not get from redaction)."""
    counts = SourceCounts()
    found = [
        F.sum(F.coalesce(F.regexp_count(F.col("text"), F.lit(PLACEHOLDER[kind])), F.lit(0))).alias(kind)
        for kind in PII_KINDS
    ]
    for row in annotated.groupBy("_reason").agg(F.count("*").alias("count"), *found).collect():
        counts.rows_in += row["count"]
        if row["_reason"] is None:
            counts.kept = row["count"]
        else:
            counts.rejected_by_reason[row["_reason"]] = row["count"]
        for kind in PII_KINDS:
            counts.pii_redacted[kind] = counts.pii_redacted.get(kind, 0) + (row[kind] or 0)
    return counts


def roles_for(name: str, source: Source) -> dict[str, list[str]]:
    """Column role -> the mapped column names of source ``name`` (``source``'s mapping): ids, text, and
    for interactions rating and timestamp."""
    cols = source.columns  # type: ignore[attr-defined]
    if name == "interactions":
        roles = {"id": [cols.user_id, cols.item_id], "text": list(cols.text)}
        if cols.rating:
            roles["rating"] = [cols.rating]
        if cols.timestamp:
            roles["timestamp"] = [cols.timestamp]
        return roles
    if name == "suppressions":
        return {"id": [cols.id]}
    return {"id": [cols.id], "text": list(cols.text)}
