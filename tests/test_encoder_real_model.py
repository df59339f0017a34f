"""Integration tests with the real packaged all-MiniLM-L6-v2."""

import numpy as np
import pytest
from conftest import encoder_settings

from segrec.udfs.encoder import Encoder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm(real_model_dir):
    return Encoder(encoder_settings(model_path=real_model_dir))


def test_semantics_hiking_boots_nearer_running_shoes_than_skillet(minilm):
    boots, shoes, skillet = minilm.encode(["waterproof hiking boots", "trail running shoes", "cast iron skillet"])
    assert boots @ shoes > boots @ skillet + 0.3


def test_matches_sentence_transformers_reference(minilm, real_model_dir):
    st = pytest.importorskip("sentence_transformers")
    texts = ["waterproof hiking boots", "A 24-year-old man who works as a technician.", "Toy Story. 1995. Comedy"]
    reference = st.SentenceTransformer(real_model_dir, device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.encode(texts), reference, atol=1e-5)


def test_batch_companions_do_not_change_a_vector(minilm):
    alone = minilm.encode(["trail running shoes"])[0]
    long_review = "The boots held up on a three day trek through mud and snow. " * 30
    crowded = minilm.encode([long_review, "x", "trail running shoes", "a b c d e f g"])[2]
    np.testing.assert_allclose(alone, crowded, atol=1e-5)


def test_five_thousand_words_are_chunked_not_truncated(minilm):
    words = [f"mountain trail camping gear review {i}" for i in range(1000)]  # 5,000 words
    text = " ".join(words)
    ids = minilm.tokenizer(text, add_special_tokens=False)["input_ids"]
    windows = minilm.windows(ids)
    assert len(windows) > 10 and windows[-1][-1] == ids[-1]  # the last token is covered
    whole = minilm.encode([text])[0]
    first = minilm._forward([minilm.prefix + windows[0] + minilm.suffix])[0]
    first /= np.linalg.norm(first)
    assert np.abs(whole - first).max() > 1e-3
    truncated = Encoder(encoder_settings(model_path=minilm.settings.model_path, long_text="truncate")).encode([text])[0]
    np.testing.assert_allclose(truncated, first, atol=1e-5)
