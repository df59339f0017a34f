"""Vector spaces and the Spark column arithmetic on vectors that the stages share.

A run's user vectors live in one space, named in ``user_vectors.space``: ``text`` (profiles built from
the text vectors alone) or the model id of trained towers (``towers-...``). Segment and recommend read
the item vectors of that very space (``item_vectors_for``). Vectors are ``array<float>`` columns; the
helpers here scale, normalise and sum them on executors (Spark array functions and MLlib's Summarizer),
so nothing is collected to the driver.
"""

from __future__ import annotations

from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from segrec.jobs.errors import InputError
from segrec.jobs.io.store import OutputStore

TEXT_SPACE = "text"  # user_vectors.space of profiles built from the text vectors alone
TRAINED_ITEM_VECTORS = "trained_item_vectors"  # the items in a trained model's space


def item_vectors_for(store: OutputStore, space: str) -> DataFrame:
    """The item vectors in ``store`` in the ``space`` the user vectors were built in: the text vectors, or a trained
    model's learned vectors (which must be from that very model)."""
    if space == TEXT_SPACE:
        return store.read("item_vectors")
    learned = store.read(TRAINED_ITEM_VECTORS, needed_by="user vectors in a learned space")
    found = learned.select("model_id").first()
    if found is None or found["model_id"] != space:
        raise InputError(
            f"user_vectors were built with {space}, but {TRAINED_ITEM_VECTORS} holds "
            f"{found['model_id'] if found else 'nothing'}: run profile again after train"
        )
    return learned


def space_of(user_vectors: DataFrame) -> str:
    """The space ``user_vectors`` live in: their ``space`` column's value, or the text space."""
    if "space" not in user_vectors.columns:
        return TEXT_SPACE
    row = user_vectors.select("space").first()
    return row["space"] if row else TEXT_SPACE


def check_finite(vectors: DataFrame, name: str, key: str, column: str = "vector") -> int:
    """The number of rows of ``vectors`` (dataset ``name``), checked in the same pass for NaN or infinity
    in any array of ``column``: a bad one fails the stage, naming its row by ``key``."""
    bad = F.exists(column, lambda x: F.isnan(x) | (F.abs(x) == float("inf")))
    row = vectors.agg(F.count("*").alias("n"), F.min(F.when(bad, F.col(key).cast("string"))).alias("bad")).collect()[0]
    if row["bad"] is not None:
        raise RuntimeError(f"{name}: the {column} of {key} {row['bad']!r} is not finite")
    return row["n"]


def scale(vector: Column, factor: Column) -> Column:
    """Each element of the array column ``vector`` times ``factor``."""
    return F.transform(vector, lambda x: x * factor)


def l2_normalise(vector: Column) -> Column:
    """Unit length; null for a null or all-zero vector (no direction, no signal)."""
    norm = F.sqrt(F.aggregate(vector, F.lit(0.0), lambda acc, x: acc + x * x))
    return F.when(norm > 1e-12, F.transform(vector, lambda x: (x / norm).cast("float")))


def sum_vectors(df: DataFrame, key: str, vector: str, name: str) -> DataFrame:
    """Element-wise sum of ``df``'s ``vector`` per ``key``, as column ``name`` (MLlib Summarizer, on executors)."""
    summed = (
        df.select(key, array_to_vector(F.col(vector)).alias("_v"))
        .groupBy(key)
        .agg(Summarizer.sum(F.col("_v")).alias("_sum"))
    )
    return summed.select(key, vector_to_array(F.col("_sum"), dtype="float32").alias(name))
