"""The columns of segrec's datasets, defined once as Arrow schemas.

Workers write Arrow batches of these schemas; the driver derives its Spark schemas from the same
definitions (``segrec.jobs.schemas``), so a dataset's columns and types are stated in one place.
"""

from __future__ import annotations

import pyarrow as pa

_VECTOR = pa.list_(pa.float32())

# recommendations: one row per (user, rank); the reason (because_*) is null when not explained.
RECOMMENDATIONS = pa.schema([
    ("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()), ("score", pa.float64()),
    ("similarity", pa.float64()), ("popularity_boost", pa.float64()),
    ("because_item_id", pa.string()), ("because_similarity", pa.float64()),
])
RECOMMENDATION_COLUMNS = RECOMMENDATIONS.names
# numpy dtypes of the columns (strings: object), for the pandas side of the adapters
RECOMMENDATION_DTYPES = {f.name: f.type.to_pandas_dtype() for f in RECOMMENDATIONS}

# rejects: every input row that was not kept, with its reason code and the raw row as JSON.
REJECTS = pa.schema([
    ("source", pa.string()), ("row_ordinal", pa.int64()), ("id", pa.string()), ("reason", pa.string()),
    ("raw", pa.string()),
])

# The segment assignment the workers compute for each user vector (soft top segments and weights).
SEGMENT_ASSIGNMENT = pa.schema([
    ("segment_id", pa.int32()), ("distance", pa.float64()), ("top_segments", pa.list_(pa.int32())),
    ("top_weights", pa.list_(pa.float64())),
])


def spark_schema(schema: pa.Schema):
    """The Spark StructType of one of these schemas (what the driver declares for UDF outputs)."""
    from pyspark.sql.pandas.types import from_arrow_schema  # a type mapping: no session involved

    return from_arrow_schema(schema)
