"""Evaluation harness: BEIR retrieval (dense and BM25) and MTEB-style tasks from local files.

One module per task family (``retrieval``, ``sts``, ``classification``, ``clustering``,
``pair_classification``, ``reranking``), plus the pieces they share: data loaders (``beir``,
``tsv``), the E5 prefix policy, an embedding cache, result files and the comparison report.
Metric functions return fractions in [0, 1]; reports print them x100.
"""
