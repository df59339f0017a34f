"""Each request's target vector, in the space the user vectors live in: the mean of its items' vectors,
or its brief embedded by the same encoder and, in a learned space, the item tower's text path."""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from segrec.jobs.segments.portraits import term_tokenizer
from segrec.jobs.vectors.encoding import embedding_udf
from segrec.udfs.encoder import EncoderSettings
from segrec.udfs.segments import normalise_rows
from segrec.udfs.towers import TowerWeights

# Items whose texts give a request's terms (for matching interest tags): its first ones by id.
TERM_ITEMS = 200


def item_targets(pairs: DataFrame, item_vectors: DataFrame) -> dict[str, np.ndarray]:
    """request_id -> the unit mean of the vectors (``item_vectors``) of the items ``pairs`` gives it. One
    row per request reaches the driver (requests x dimensions)."""
    rows = (
        pairs.join(item_vectors.select("item_id", "vector"), on="item_id", how="inner")
        .groupBy("request_id")
        .agg(F.collect_list("vector").alias("vectors"))
        .collect()
    )
    found = {}
    for row in rows:
        unit = normalise_rows(np.array(row["vectors"], dtype=np.float32))
        found[row["request_id"]] = normalise_rows(unit.mean(axis=0, keepdims=True))[0]
    return found


def brief_targets(briefs: DataFrame, settings: EncoderSettings, weights: TowerWeights | None) -> dict[str, np.ndarray]:
    """request_id -> the unit vector of its brief (``briefs``: request_id, brief), embedded on executors
    with the encoder ``settings``; with the towers' ``weights``, mapped through the item tower's text path
    (a brief is placed as a new item with that text would be)."""
    rows = briefs.select("request_id", embedding_udf(settings)(F.col("brief")).alias("vector")).collect()
    if not rows:
        return {}
    ids = [row["request_id"] for row in rows]
    vectors = np.array([row["vector"] for row in rows], dtype=np.float32)
    if weights is not None:
        vectors = weights.item_vectors(vectors, np.array([f"\u0000brief:{i}" for i in ids], dtype=object))
    return dict(zip(ids, normalise_rows(vectors), strict=True))


def request_terms(requests: DataFrame, pairs: DataFrame, items: DataFrame) -> DataFrame:
    """(request_id, terms): the terms of each of ``requests``' brief, or of the texts of its first
    ``TERM_ITEMS`` target items (``pairs`` over ``items``), as segment portraits split them."""
    first = Window.partitionBy("request_id").orderBy("item_id")
    item_text = (
        pairs.withColumn("_n", F.row_number().over(first))
        .where(F.col("_n") <= TERM_ITEMS)
        .join(items.select("item_id", "text"), on="item_id", how="inner")
        .groupBy("request_id")
        .agg(F.concat_ws(" ", F.collect_list("text")).alias("text"))
    )
    brief_text = requests.where(F.col("brief").isNotNull()).select("request_id", F.col("brief").alias("text"))
    texts = item_text.unionByName(brief_text)
    return texts.select("request_id", F.array_distinct(term_tokenizer()(F.col("text"))).alias("terms"))
