"""Dense retrieval shared by every stage: corpus embedding by the empty-passage rule, FAISS indexes
built from ``faiss.index_factory`` strings, exact inner-product search in query chunks and shard
merging (the rank of a probe's own target is ``e5kit.retrieval.store.rank_of_own_in_store``).

Empty passages (``e5kit.io.beir``): a passage without visible text is never sent to an encoder and
gets an all-zero row, which scores 0 against any query by dot product or cosine; ``encode_corpus`` is
that rule for evaluation, dense mining, the bi-encoder teacher, the consistency filter and the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from e5kit.io.beir import empty_mask

#: Queries searched per FAISS call; bounds the (chunk, top_k) result buffers, never queries x corpus.
SEARCH_CHUNK = 4096


class EncodedCorpus(NamedTuple):
    """Passage embeddings with the empty passages marked.

    Attributes:
        embeddings: (len(texts), dim) float32; all-zero rows for empty passages.
        empty: (len(texts),) bool, True where the passage had no visible text.
    """

    embeddings: np.ndarray
    empty: np.ndarray

    @property
    def empty_count(self) -> int:
        return int(self.empty.sum())


def encode_corpus(encoder, texts: Sequence[str], role: str | None = "passage", **options) -> EncodedCorpus:
    """Embed corpus passages; empty passages are not sent to ``encoder`` and get all-zero rows.

    The one rule every stage that embeds a corpus follows (evaluation, dense mining, the bi-encoder
    teacher, the index): an all-zero row scores 0 against any query by dot product or cosine, so an
    empty passage stays searchable by id at score 0 without a crash, and callers count ``empty``.

    Args:
        encoder: An ``Encoder`` (or anything with its ``encode``; ``dimension`` is read only when every
            passage is empty).
        texts: The passages.
        role: The role the passages are embedded in.
        **options: Passed to ``encoder.encode`` (batch_size, show_progress, normalize).

    Returns:
        ``EncodedCorpus(embeddings, empty)``. When a passage was embedded, ``encoder.last_stats`` (if
        the encoder keeps it) describes the call over the non-empty passages.
    """
    empty = empty_mask(texts)
    keep = np.flatnonzero(~empty)
    if not len(keep):
        return EncodedCorpus(np.zeros((len(texts), encoder.dimension), dtype=np.float32), empty)
    vectors = encoder.encode([texts[i] for i in keep], role=role, **options)
    if len(keep) == len(texts):
        return EncodedCorpus(np.asarray(vectors, dtype=np.float32), empty)
    embeddings = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
    embeddings[keep] = vectors
    return EncodedCorpus(embeddings, empty)


def inner_product_index(factory: str, dimension: int):
    """A new, empty FAISS index scoring by inner product, from a ``faiss.index_factory`` string
    ("Flat": exact; "IDMap2,Flat", "IDMap2,HNSW32", "IVF1024,PQ64x8": the serving index's kinds)."""
    import faiss

    return faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)


def exact_index(vectors: np.ndarray):
    """An exact inner-product index (``"Flat"``) holding ``vectors`` (rows, dim)."""
    index = inner_product_index("Flat", vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def dense_search(query_embeddings: np.ndarray, document_embeddings: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k with a FAISS flat index, queries in chunks of ``SEARCH_CHUNK``.

    FAISS scans the corpus in blocks, so no queries x corpus score matrix is ever held.

    Args:
        query_embeddings: (num_queries, dim) float32.
        document_embeddings: (num_documents, dim) float32.
        top_k: Results per query (capped at the number of documents).

    Returns:
        (indices, scores), both (num_queries, k), best first.
    """
    index = exact_index(document_embeddings)
    k = min(top_k, len(document_embeddings))
    indices = np.empty((len(query_embeddings), k), dtype=np.int64)
    scores = np.empty((len(query_embeddings), k), dtype=np.float32)
    for start in range(0, len(query_embeddings), SEARCH_CHUNK):
        chunk = np.ascontiguousarray(query_embeddings[start : start + SEARCH_CHUNK], dtype=np.float32)
        scores[start : start + len(chunk)], indices[start : start + len(chunk)] = index.search(chunk, k)
    return indices, scores


def merge_top_k(
    scores: np.ndarray, indices: np.ndarray, new_scores: np.ndarray, new_indices: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two (queries, *) best-first result lists (e.g. of two corpus shards) into the k best per row, best first."""
    all_scores = np.concatenate([scores, new_scores], axis=1)  # (queries, k1 + k2)
    all_indices = np.concatenate([indices, new_indices], axis=1)
    order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(all_scores, order, axis=1), np.take_along_axis(all_indices, order, axis=1)
