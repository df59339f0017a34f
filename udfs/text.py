"""Text normalisation applied to every text column before it is validated, hashed or embedded."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable

import pandas as pd

_TAG = re.compile(r"<[^>]{0,2000}>")
_WHITESPACE = re.compile(r"\s+")


def _is_control(ch: str) -> bool:
    # Cc (controls), Cf (format: zero-width, bidi marks), Cs (lone surrogates), Co (private use),
    # Cn (unassigned). Whitespace controls are turned into spaces before this runs.
    return unicodedata.category(ch)[0] == "C"


def normalize_text(value: object) -> str | None:
    """``value`` (any type; None and NaN give None) as cleaned text, or None when nothing readable is left.

    HTML tags are removed and entities decoded, Unicode is NFKC-normalised, control and format
    characters are dropped, and runs of whitespace collapse to one space.
    """
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = value if isinstance(value, str) else str(value)
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = unicodedata.normalize("NFKC", text)
    text = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or not _is_control(ch))
    text = _WHITESPACE.sub(" ", text).strip()
    return text or None


def render_text(parts: Iterable[tuple[str, object]], separator: str) -> str | None:
    """Join the normalised, non-empty values of several columns into one text.

    ``parts`` holds (column name, value) pairs in the configured order; the names are unused by the
    default rendering but keep the call sites explicit. Values are joined with ``separator``; None when
    no value has text.
    """
    cleaned = [normalize_text(value) for _, value in parts]
    kept = [c for c in cleaned if c]
    return separator.join(kept) if kept else None


def normalize_series(values: pd.Series) -> pd.Series:
    """:func:`normalize_text` over the Series ``values`` (same index, object dtype): the pandas UDFs' body."""
    return values.map(normalize_text).astype(object)


def render_frame(frame: pd.DataFrame, separator: str) -> pd.Series:
    """Render each row of ``frame`` (one column per configured text column) into one text joined with
    ``separator`` (:func:`render_text`); a Series with ``frame``'s index."""
    columns = list(frame.columns)
    rendered = [
        render_text(zip(columns, row, strict=True), separator) for row in frame.itertuples(index=False, name=None)
    ]
    return pd.Series(rendered, index=frame.index, dtype=object)
