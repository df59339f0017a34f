"""Words for people to read: the terms of a text, for segment label terms and user interest tags.

Texts with spaces split into words (letters and digits, at least 3 characters, no stop word, not a
number). Texts without spaces (Chinese, Japanese) go through a word segmenter: ``jieba`` where it is
installed (``pip install segrec[cjk]``), else overlapping character bigrams, which is what search
engines index CJK text by when no dictionary is at hand. Runs inside Spark tasks: strings in, lists out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from functools import lru_cache

from segrec.udfs.pii import ANY_PLACEHOLDER

# Han ideographs (with extensions and compatibility forms), kana and the CJK punctuation block's
# letters: scripts written without spaces between words. Hangul is written with spaces: it is a word.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+(?:'[^\W_{_CJK}]+)*")
_IS_CJK = re.compile(rf"[{_CJK}]")
_NUMBER = re.compile(r"^[\d']+$")
_PLACEHOLDERS = re.compile(ANY_PLACEHOLDER)

# Function words of Chinese that a segmenter returns as words of two or more characters; single
# characters (的, 我, 和) are dropped by length already.
CHINESE_STOP_WORDS = frozenset(
    """
    我们 你们 他们 她们 它们 自己 一个 一些 这个 那个 这些 那些 这样 那样 什么 怎么 没有
    不是 就是 还是 但是 因为 所以 如果 然后 或者 以及 而且 已经 可以 非常 比较 很多 还有
    的话 时候 一起 之后 之前 其他 这里 那里
    """.split()
)


@lru_cache(maxsize=1)
def cjk_segmenter() -> Callable[[str], list[str]] | None:
    """jieba's ``lcut`` where jieba is installed (its dictionary is loaded once per worker), else None."""
    try:
        import jieba
    except ImportError:
        return None
    jieba.setLogLevel(logging.WARNING)
    return jieba.lcut


def bigrams(run: str) -> list[str]:
    """Overlapping character pairs of a CJK run (a run of one character gives nothing)."""
    return [run[i : i + 2] for i in range(len(run) - 1)]


def terms(text: str | None, stop_words: frozenset[str], min_length: int = 3) -> list[str]:
    """The terms of one text, lower-cased, in order, repeats kept.

    ``stop_words`` are lower-case words never returned; ``min_length`` applies to words of spaced
    scripts (a CJK word needs two characters). Placeholders of redacted personal data (``<email>``)
    are not words of anyone's.
    """
    if not text:
        return []
    segmenter = cjk_segmenter()
    found: list[str] = []
    for token in _TOKEN.findall(_PLACEHOLDERS.sub(" ", text).lower()):
        if _IS_CJK.match(token):
            words = segmenter(token) if segmenter is not None else bigrams(token)
            found += [w for w in words if len(w) >= 2 and w not in CHINESE_STOP_WORDS and _IS_CJK.match(w)]
        elif len(token) >= min_length and token not in stop_words and not _NUMBER.match(token):
            found.append(token)
    return found


def terms_of_texts(texts: Iterable[str | None], stop_words: Iterable[str]) -> list[list[str]]:
    """:func:`terms` of each of ``texts`` (None gives []), words in ``stop_words`` (any case) left out:
    the pandas UDF's body."""
    stop = frozenset(w.lower() for w in stop_words)
    return [terms(text, stop) for text in texts]
