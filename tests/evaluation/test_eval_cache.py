"""The embedding cache: a re-run serves stored vectors instead of re-encoding."""

from __future__ import annotations

import numpy as np
import pytest

from e5kit.evaluation.cache import CachedEncoder, EmbeddingCache, default_cache_dir, weights_hash
from e5kit.evaluation.retrieval import evaluate_beir


class CountingEncoder:
    """Wraps the tiny encoder and counts the texts it really embeds."""

    def __init__(self, encoder):
        self.encoder, self.embedded = encoder, 0

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode(self, texts, role=None, **kwargs):
        self.embedded += len(texts)
        return self.encoder.encode(texts, role=role, **kwargs)


def test_second_run_reads_the_cache_and_gives_identical_scores(tmp_path, beir_dir, tiny_encoder):
    # Given a cached encoder over an empty cache folder
    counting = CountingEncoder(tiny_encoder)
    first = evaluate_beir(CachedEncoder(counting, EmbeddingCache(tmp_path / "cache")), beir_dir)
    embedded_first = counting.embedded
    # When the same evaluation runs again with a fresh cache object on the same folder
    second_model = CachedEncoder(counting, EmbeddingCache(tmp_path / "cache"))
    second = evaluate_beir(second_model, beir_dir)
    # Then nothing is re-encoded and the scores are identical
    assert embedded_first == 36 and counting.embedded == embedded_first
    assert second_model.hits == 36 and second_model.misses == 0
    assert second == first


def test_cached_vectors_equal_fresh_ones_and_keys_separate_role_and_length(tmp_path, tiny_bert_dir):
    from e5kit.encoder import Encoder

    # Given the same weights at two max lengths
    long_encoder, short_encoder = Encoder.load(tiny_bert_dir, device="cpu"), Encoder.load(tiny_bert_dir, device="cpu", max_length=8)
    cache = EmbeddingCache(tmp_path)
    texts = ["the cell divides and the gene is read again and again", "a cat sat", "a cat sat"]
    # When texts are embedded through the cache in several roles and lengths
    long_query = CachedEncoder(long_encoder, cache).encode(texts, role="query")
    short_query = CachedEncoder(short_encoder, cache).encode(texts, role="query")
    passage = CachedEncoder(long_encoder, cache).encode(texts, role="passage")
    again = CachedEncoder(long_encoder, cache)
    # Then each equals a fresh encode (nothing mixed up across keys), and a repeat is all hits
    np.testing.assert_allclose(long_query, long_encoder.encode(texts, role="query"), atol=1e-6)
    np.testing.assert_allclose(short_query, short_encoder.encode(texts, role="query"), atol=1e-6)
    np.testing.assert_allclose(passage, long_encoder.encode(texts, role="passage"), atol=1e-6)
    assert not np.allclose(long_query[0], short_query[0])
    np.testing.assert_array_equal(again.encode(texts, role="query"), long_query)
    assert (again.hits, again.misses) == (3, 0)


def test_weights_hash_changes_with_the_weights(tiny_bert_dir):
    import torch

    from e5kit.encoder import Encoder

    # Given two loads of the same model, one with a nudged weight
    a, b = Encoder.load(tiny_bert_dir, device="cpu"), Encoder.load(tiny_bert_dir, device="cpu")
    assert weights_hash(a) == weights_hash(b)
    with torch.no_grad():
        next(b.model.parameters()).view(-1)[0] += 1e-3
    # Then the hash differs
    assert weights_hash(a) != weights_hash(b)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("E5KIT_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("E5KIT_CACHE_DIR")
    assert default_cache_dir().parts[-3:] == (".cache", "e5kit", "embeddings")


@pytest.mark.parametrize("role", ["query", "passage"])
def test_texts_already_prefixed_share_the_entry(tmp_path, tiny_encoder, role):
    # Given a text, and the same text already carrying its prefix
    cached = CachedEncoder(tiny_encoder, EmbeddingCache(tmp_path))
    cached.encode(["a cat sat"], role=role)
    cached.encode([f"{role}: a cat sat"], role=role)
    # Then the second is served from the cache (the prefix is added once, then hashed)
    assert (cached.hits, cached.misses) == (1, 1)
