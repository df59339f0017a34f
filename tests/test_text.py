import math

import pandas as pd

from segrec.udfs.text import normalize_series, normalize_text, render_frame, render_text


def test_html_tags_and_entities_are_removed():
    assert normalize_text("<p>Fish &amp; <b>chips</b></p>&nbsp;today") == "Fish & chips today"


def test_nfkc_folds_compatibility_forms():
    assert normalize_text("ＡＢＣ １２３ ﬁne") == "ABC 123 fine"


def test_control_and_zero_width_characters_are_dropped_whitespace_collapsed():
    assert normalize_text("a\x00b\u200bc\t\n  d\r\ne\x7f") == "abc d e"


def test_emoji_and_cjk_survive():
    assert normalize_text("  東京 ラーメン 🍜  ") == "東京 ラーメン 🍜"


def test_empty_after_normalisation_is_none():
    for value in [None, float("nan"), "", "   ", "<br/>", "\u200b\u200c", "&nbsp;\t"]:
        assert normalize_text(value) is None, repr(value)


def test_non_strings_are_rendered():
    assert normalize_text(1995) == "1995"


def test_one_megabyte_text_is_kept_whole():
    text = "word " * 200_000
    out = normalize_text(text)
    assert len(out) == len(text) - 1  # only the trailing space goes


def test_render_joins_non_empty_parts_in_order():
    assert render_text([("title", " Toy Story "), ("year", None), ("genres", "Comedy")], ". ") == "Toy Story. Comedy"
    assert render_text([("a", ""), ("b", None)], ". ") is None
    assert render_text([("a", "x"), ("b", "y")], separator=" | ") == "x | y"


def test_frame_and_series_helpers_keep_index_and_nulls():
    frame = pd.DataFrame({"t": ["<i>a</i>", None, "b"], "g": ["x", "  ", None]}, index=[5, 6, 7])
    out = render_frame(frame, ". ")
    assert out.tolist() == ["a. x", None, "b"]
    assert list(out.index) == [5, 6, 7]
    series = normalize_series(pd.Series(["  x ", None, math.nan]))
    assert series.tolist() == ["x", None, None]
