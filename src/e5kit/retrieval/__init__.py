"""Search shared by evaluation, hard-negative mining, the consistency filter and the index.

- ``dense``: embedding a corpus by the empty-passage rule (``encode_corpus``), FAISS index construction
  from ``faiss.index_factory`` strings, exact inner-product search in query chunks, shard merging
  (``merge_top_k``).
- ``bm25``: BM25 search with the settings of bm25s' published BEIR figures.
- ``store``: embeddings of large collections streamed in bounded blocks to disk (resumable block by
  block), searched and ranked block by block (``search_store``, ``rank_of_own_in_store``).
- ``engines``: filling a store data-parallel on existing engines (one process, torchrun, Ray Data).

Layer: above ``e5kit.io`` and the encoder, below data, training, evaluation and serving.
"""
