"""Terms for label terms and interest tags: words, stop words, numbers, placeholders, Chinese."""

import pytest

from segrec.udfs import terms as terms_module
from segrec.udfs.terms import bigrams, terms, terms_of_texts


def test_words_of_spaced_text():
    found = terms("Hiking TRAILS, the 1977 boots; <email> O'Brien's tent and 42", frozenset({"the", "and"}))
    assert found == ["hiking", "trails", "boots", "o'brien's", "tent"]
    assert terms(None, frozenset()) == [] and terms("", frozenset()) == []


def test_chinese_is_segmented_into_words_with_jieba():
    pytest.importorskip("jieba")
    found = terms("我喜欢在山里徒步和露营，我们一起做饭。Star Wars", frozenset())
    assert found == ["喜欢", "山里", "徒步", "露营", "做饭", "star", "wars"]  # 我们 is a stop word, 我 too short


def test_chinese_falls_back_to_bigrams_without_a_segmenter(monkeypatch):
    monkeypatch.setattr(terms_module, "cjk_segmenter", lambda: None)
    assert terms("徒步露营", frozenset()) == ["徒步", "步露", "露营"]
    assert bigrams("山") == []


def test_terms_of_texts_lowercases_the_stop_words():
    assert terms_of_texts(["The Trail", None], ["THE"]) == [["trail"], []]
