"""Texts to vectors on executors: the embedding pandas UDF and the key a text's vector is stored by."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.sql import functions as F

from segrec.udfs.embedding import embed_batches
from segrec.udfs.encoder import EncoderSettings


def embedding_udf(settings: EncoderSettings):
    """A pandas UDF text -> array<float> with the encoder ``settings``; the model is loaded once per
    Python worker."""

    @F.pandas_udf("array<float>")  # type: ignore[call-overload]  # pyspark stubs: DDL strings
    def embed(texts: Iterator[pd.Series]) -> Iterator[pd.Series]:
        yield from embed_batches(settings, texts)

    return embed


def text_hash(model_id: str, text: str = "text") -> F.Column:
    """sha256 of the encoder's ``model_id`` and the column ``text``: a vector's key, so a changed model
    or text is embedded again."""
    return F.sha2(F.concat_ws("\u001f", F.lit(model_id), F.col(text)), 256)
