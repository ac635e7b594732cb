"""BM25 retrieval with bm25s: Lucene variant, k1=1.5, b=0.75, English stopwords, Snowball English stemmer.

These are the settings of bm25s' published BEIR figures (SciFact nDCG@10 68.7).
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
    """
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(method=METHOD, k1=K1, b=B)
    retriever.index(
        bm25s.tokenize(list(documents), stopwords="en", stemmer=stemmer, show_progress=show_progress),
        show_progress=show_progress,
    )
    query_tokens = bm25s.tokenize(list(queries), stopwords="en", stemmer=stemmer, show_progress=show_progress)
    k = min(top_k, len(documents))
    indices, scores = retriever.retrieve(query_tokens, k=k, show_progress=show_progress, n_threads=0)
    return np.asarray(indices), np.asarray(scores, dtype=np.float32)
