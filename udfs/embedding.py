"""The body of the embedding pandas UDF: Arrow batches of texts in, batches of vectors out."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from segrec.udfs.encoder import EncoderSettings, get_encoder
from segrec.udfs.faults import maybe_fail


def embed_batches(settings: EncoderSettings, batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
    """For each pandas Series of texts in ``batches`` (an Arrow batch each), a Series of vectors (float32
    arrays of the model's dimension) with the same index, in order; a null text gives a null vector.
    The encoder for ``settings`` is loaded once per worker."""
    maybe_fail("embed")  # test hook, off unless SEGREC_FAULT_DIR is set
    encoder = get_encoder(settings)  # once per worker: cached across tasks and batches
    for texts in batches:
        present = texts.notna().to_numpy()
        vectors = iter(encoder.encode(texts[present].astype(str).tolist()))
        yield pd.Series([next(vectors) if p else None for p in present], index=texts.index, dtype=object)
