"""FAISS indexes from index_factory strings: the same index kinds the serving index built by hand before."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from e5kit.retrieval.dense import dense_search, exact_index
from e5kit.retrieval.store import own_scores, rank_of_own_in_store, store_from_vectors
from e5kit.serving.index import IndexSettings, _new_faiss_index


def test_the_serving_index_kinds_are_built_from_factory_strings_with_their_settings():
    flat = _new_faiss_index(IndexSettings(kind="flat"), 16)
    assert isinstance(flat, faiss.IndexIDMap2) and flat.metric_type == faiss.METRIC_INNER_PRODUCT
    hnsw = _new_faiss_index(IndexSettings(kind="hnsw", hnsw_m=8, hnsw_ef_search=77), 16)
    graph = faiss.downcast_index(hnsw.index)
    assert isinstance(graph, faiss.IndexHNSWFlat) and graph.hnsw.efSearch == 77 and graph.metric_type == faiss.METRIC_INNER_PRODUCT
    ivf = _new_faiss_index(IndexSettings(kind="ivfpq", ivf_lists=4, pq_subquantizers=4, pq_bits=4), 16)
    assert isinstance(ivf, faiss.IndexIVFPQ) and (ivf.nlist, ivf.pq.M, ivf.pq.nbits) == (4, 4, 4)
    assert ivf.metric_type == faiss.METRIC_INNER_PRODUCT and faiss.downcast_index(ivf.quantizer).metric_type == faiss.METRIC_INNER_PRODUCT


def test_exact_search_and_rank_of_own_agree_with_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    queries, documents = rng.normal(size=(9, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    indices, scores = dense_search(queries, documents, top_k=4)
    brute = queries @ documents.T
    assert (indices == np.argsort(-brute, axis=1)[:, :4]).all() and np.allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :4], atol=1e-5)
    assert exact_index(documents).ntotal == 30
    # (probe i's own target is document i; the pool is documents 9-29, each a group of its own)
    targets, pool = documents[:9], np.arange(9, 30)
    probes, candidates = store_from_vectors(tmp_path / "q", queries, 4), store_from_vectors(tmp_path / "d", documents, 4)
    own = own_scores(probes, store_from_vectors(tmp_path / "t", targets, 4))
    ranks = rank_of_own_in_store(probes, own, candidates, pool, np.arange(30), max_rank=5, chunk=4)
    own = np.einsum("nd,nd->n", queries, targets)
    expected = np.minimum((queries @ documents[pool].T > own[:, None]).sum(axis=1) + 1, 6)
    assert (ranks == expected).all()


def test_an_ivfpq_index_needs_subquantizers_dividing_the_dimension():
    from e5kit.serving.index import IndexStoreError

    with pytest.raises(IndexStoreError, match="must divide"):
        _new_faiss_index(IndexSettings(kind="ivfpq", pq_subquantizers=5), 16)
