"""BM25 retrieval with bm25s: Lucene variant, k1=1.5, b=0.75, English stopwords, Snowball English stemmer.

These are the settings of bm25s' published BEIR figures (SciFact nDCG@10 68.7).

Empty passages (no visible text, ``e5kit.io.beir``) are left out of the index, as Lucene leaves
a document without terms out of a field's statistics (document count, average length), and score 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

K1 = 1.5
B = 0.75
METHOD = "lucene"


def bm25_settings() -> dict[str, object]:
    """The BM25 parameters, for result files."""
    return {"method": METHOD, "k1": K1, "b": B, "stopwords": "en", "stemmer": "english (PyStemmer)"}


def bm25_search(
    documents: Sequence[str], queries: Sequence[str], top_k: int, *, show_progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Index ``documents`` and return the ``top_k`` best for each query.

    Args:
        documents: Document texts (BEIR: "title text").
        queries: Query texts.
        top_k: Results per query (capped at the number of documents).

    Returns:
        (indices, scores), both (len(queries), k): document positions and BM25 scores, best first.
        Empty passages are never indexed; they score 0 and fill the end of a list only when k exceeds
        the number of non-empty documents.
    """
    import bm25s
    import Stemmer

    from e5kit.io.beir import empty_mask

    empty = empty_mask(documents)
    kept = np.flatnonzero(~empty)  # index row -> document position
    k = min(top_k, len(documents))
    k_indexed = min(k, len(kept))
    indices = np.empty((len(queries), 0), dtype=np.int64)
    scores = np.empty((len(queries), 0), dtype=np.float32)
    if k_indexed:
        stemmer = Stemmer.Stemmer("english")
        retriever = bm25s.BM25(method=METHOD, k1=K1, b=B)
        retriever.index(
            bm25s.tokenize([documents[i] for i in kept], stopwords="en", stemmer=stemmer, show_progress=show_progress),
            show_progress=show_progress,
        )
        query_tokens = bm25s.tokenize(list(queries), stopwords="en", stemmer=stemmer, show_progress=show_progress)
        rows, scores = retriever.retrieve(query_tokens, k=k_indexed, show_progress=show_progress, n_threads=0)
        indices, scores = kept[np.asarray(rows)], np.asarray(scores, dtype=np.float32)
    if k > k_indexed:  # pad with empty passages at score 0
        padding = np.flatnonzero(empty)[: k - k_indexed]
        indices = np.concatenate([indices, np.tile(padding, (len(queries), 1))], axis=1)
        scores = np.concatenate([scores, np.zeros((len(queries), len(padding)), dtype=np.float32)], axis=1)
    return indices, scores
