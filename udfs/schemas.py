"""The columns of segrec's datasets, defined once as Arrow schemas.

Workers write Arrow batches of these schemas; the driver derives its Spark schemas from the same
definitions (``spark_schema``), and the output store checks every dataset it writes against
``DATASETS`` before writing, so a dataset's columns and types are stated in one place.
"""

from __future__ import annotations

import pyarrow as pa

_VECTOR = pa.list_(pa.float32())

# recommendations: one row per (user, rank); the reason (because_*) is null when not explained.
RECOMMENDATIONS = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("score", pa.float64()),
        ("similarity", pa.float64()),
        ("popularity_boost", pa.float64()),
        ("because_item_id", pa.string()),
        ("because_similarity", pa.float64()),
        # the part of similarity from the item's learned embedding (trained towers; the rest is its text)
        ("learned_similarity", pa.float64()),
    ]
)
RECOMMENDATION_COLUMNS = RECOMMENDATIONS.names
# numpy dtypes of the columns (strings: object), for the pandas side of the adapters
RECOMMENDATION_DTYPES = {f.name: f.type.to_pandas_dtype() for f in RECOMMENDATIONS}

# rejects: every input row that was not kept, with its reason code and the raw row as JSON.
REJECTS = pa.schema(
    [
        ("source", pa.string()),
        ("row_ordinal", pa.int64()),
        ("id", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)

# The segment assignment the workers compute for each user vector (soft top segments and weights).
SEGMENT_ASSIGNMENT = pa.schema(
    [
        ("segment_id", pa.int32()),
        ("distance", pa.float64()),
        ("top_segments", pa.list_(pa.int32())),
        ("top_weights", pa.list_(pa.float64())),
    ]
)

# What a worker returns for one candidate k: each reference segment's size and bootstrap Jaccard
# stability, and the k's cosine silhouette (the same on every row of that k).
SEGMENT_STABILITY = pa.schema(
    [
        ("k", pa.int32()),
        ("segment_id", pa.int32()),
        ("size", pa.int64()),
        ("stability", pa.float64()),
        ("silhouette", pa.float64()),
    ]
)

# How each segment relates to the previous run's (jobs.segment_continuity): kept | merged | split | new,
# the previous ids involved, the Jaccard of the match that kept the id, the size it had, the run date
# its id first appeared (null where a model of an earlier segrec did not record it).
SEGMENT_CONTINUITY = pa.schema(
    [
        ("status", pa.string()),
        ("status_ids", pa.list_(pa.int32())),
        ("matched_jaccard", pa.float64()),
        ("previous_size", pa.int64()),
        ("first_seen", pa.date32()),
    ]
)

_TIMESTAMP = pa.timestamp("us", tz="UTC")  # Spark's TimestampType (session time zone)

# Every dataset a stage writes under output.path, by name (a dated run adds its run_date partition).
DATASETS: dict[str, pa.Schema] = {
    # validate
    "items": pa.schema([("item_id", pa.string()), ("text", pa.string())]),
    "users": pa.schema([("user_id", pa.string()), ("text", pa.string())]),
    # users never to contact (inputs.suppressions), one row per user
    "suppressions": pa.schema([("user_id", pa.string())]),
    "interactions": pa.schema(
        [
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("rating", pa.float64()),
            ("timestamp", _TIMESTAMP),
            ("text", pa.string()),
        ]
    ),
    "rejects": REJECTS,
    # embed: one vector per text hash and model; text_vectors also holds users' own and review texts
    "item_vectors": pa.schema(
        [("item_id", pa.string()), ("vector", _VECTOR), ("text_hash", pa.string()), ("model_id", pa.string())]
    ),
    "text_vectors": pa.schema(
        [
            ("user_id", pa.string()),
            ("kind", pa.string()),
            ("item_id", pa.string()),
            ("vector", _VECTOR),
            ("text_hash", pa.string()),
            ("model_id", pa.string()),
        ]
    ),
    # train
    "trained_item_vectors": pa.schema(
        [("item_id", pa.string()), ("vector", _VECTOR), ("learned_part", _VECTOR), ("model_id", pa.string())]
    ),
    # train, with the ALS blend on (jobs.collaborative)
    "als_user_factors": pa.schema([("user_id", pa.string()), ("factor", _VECTOR), ("model_id", pa.string())]),
    "als_item_factors": pa.schema([("item_id", pa.string()), ("factor", _VECTOR), ("model_id", pa.string())]),
    # profile
    "user_vectors": pa.schema(
        [
            ("user_id", pa.string()),
            ("vector", _VECTOR),
            ("n_items", pa.int64()),
            ("n_texts", pa.int64()),
            ("space", pa.string()),
        ]
    ),
    # segment
    # segment ids are stable across runs (jobs.segment_continuity); previous_segment_id: the user's id
    # in the previous run, null for a user new tonight
    "segments": pa.schema(
        [
            ("user_id", pa.string()),
            *zip(SEGMENT_ASSIGNMENT.names, SEGMENT_ASSIGNMENT.types, strict=True),
            ("previous_segment_id", pa.int32()),
        ]
    ),
    "segment_summary": pa.schema(
        [
            ("segment_id", pa.int32()),
            ("parent_id", pa.int32()),
            ("size", pa.int64()),
            ("share", pa.float64()),
            ("stability", pa.float64()),
            ("stability_class", pa.string()),
            ("label_terms", pa.list_(pa.string())),
            ("representative_items", pa.list_(pa.string())),
            (
                "engaged_items",
                pa.list_(pa.struct([("item", pa.string()), ("users", pa.int64()), ("lift", pa.float64())])),
            ),
            ("nearest_segment", pa.int32()),
            ("description", pa.string()),
            *SEGMENT_CONTINUITY,
        ]
    ),
    # users moving between the previous run's segments and tonight's (null from: new users; null to:
    # users gone since); cells under segment.min_term_users users are summed into one pooled row
    "segment_transitions": pa.schema(
        [
            ("from_segment_id", pa.int32()),
            ("to_segment_id", pa.int32()),
            ("users", pa.int64()),
            ("pooled", pa.bool_()),
        ]
    ),
    # interest tags per user: the terms of their history and own text that set them apart, weights summing to 1
    "user_interests": pa.schema(
        [
            ("user_id", pa.string()),
            ("interests", pa.list_(pa.struct([("term", pa.string()), ("weight", pa.float64())]))),
        ]
    ),
    # recommend: the lists, and whether each item is new (fewer than recommend.new_item_interactions)
    "recommendations": pa.schema([*RECOMMENDATIONS, pa.field("new_item", pa.bool_())]),
    # audience: the users to contact for each request, best first (ties by user id); the reason is the
    # user's history item most like the request's target, and their interest tags found in its text
    "audiences": pa.schema(
        [
            ("request_id", pa.string()),
            ("user_id", pa.string()),
            ("rank", pa.int32()),
            ("score", pa.float64()),
            ("segment_id", pa.int32()),
            ("because_item_id", pa.string()),
            ("because_similarity", pa.float64()),
            ("matching_interests", pa.list_(pa.string())),
        ]
    ),
    # one row per request: what it asked for and what it got
    "audience_summary": pa.schema(
        [
            ("request_id", pa.string()),
            ("kind", pa.string()),
            ("target_items", pa.int64()),
            ("requested_size", pa.int64()),
            ("min_score", pa.float64()),
            ("audience_size", pa.int64()),
            ("owners_excluded", pa.int64()),
            ("lowest_score", pa.float64()),
        ]
    ),
    # each request's audience by segment: which segments to target and what share of each it reaches
    "audience_segments": pa.schema(
        [
            ("request_id", pa.string()),
            ("segment_id", pa.int32()),
            ("members", pa.int64()),
            ("audience_share", pa.float64()),
            ("segment_size", pa.int64()),
            ("segment_reach", pa.float64()),
        ]
    ),
}


def spark_schema(schema: pa.Schema):
    """The Spark StructType of the Arrow ``schema`` (one of these: what the driver declares for UDF
    outputs)."""
    from pyspark.sql.pandas.types import from_arrow_schema  # a type mapping: no session involved

    return from_arrow_schema(schema)


def schema_differences(name: str, spark_type) -> list[str]:
    """How a frame's Spark schema ``spark_type`` differs from dataset ``name``'s (column names, order and types;
    nullability aside): one line per difference, empty when it matches or ``name`` is not declared."""
    if name not in DATASETS:
        return []
    expected = {f.name: f.dataType for f in _without_nullability(spark_schema(DATASETS[name])).fields}
    found = {f.name: f.dataType for f in _without_nullability(spark_type).fields}
    problems = [
        f"{column}: expected {kind.simpleString()}, found {found[column].simpleString()}"
        for column, kind in expected.items()
        if column in found and found[column] != kind
    ]
    problems += [f"{column}: missing" for column in expected if column not in found]
    problems += [f"{column}: not declared" for column in found if column not in expected]
    if not problems and list(found) != list(expected):
        problems.append(f"column order {list(found)}, declared {list(expected)}")
    return problems


def _without_nullability(spark_type):
    """The same Spark type with every field, element and value nullable (parquet reads them so)."""
    from pyspark.sql import types as T

    if isinstance(spark_type, T.StructType):
        return T.StructType([T.StructField(f.name, _without_nullability(f.dataType), True) for f in spark_type.fields])
    if isinstance(spark_type, T.ArrayType):
        return T.ArrayType(_without_nullability(spark_type.elementType), True)
    if isinstance(spark_type, T.MapType):
        return T.MapType(_without_nullability(spark_type.keyType), _without_nullability(spark_type.valueType), True)
    return spark_type
