"""BEIR retrieval evaluation: dense exact search or BM25, scored with pytrec_eval.

BEIR's rules: documents are embedded as "title text" in the passage role and queries in the query
role; a retrieved document whose id equals the query id is ignored; qrels scores > 0 are relevant;
queries without qrels for the split are skipped (and counted).

Example:
    >>> evaluate_beir(Encoder.load("all-MiniLM-L6-v2"), "data/beir/scifact")   # doctest: +SKIP
    {'ndcg_at_10': 0.645, 'map_at_100': ..., 'mrr_at_10': ..., 'recall_at_100': ...}
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from e5kit.evaluation.beir import document_text, load_beir
from e5kit.evaluation.bm25 import bm25_search
from e5kit.evaluation.prefix_policy import PrefixPolicy, policy_for
from e5kit.evaluation.results import TaskOutcome

logger = logging.getLogger(__name__)

#: The model name that selects BM25 instead of an encoder.
BM25 = "bm25"
#: pytrec_eval measure -> our metric name. MRR@10 is computed on runs cut at 10 (see ``retrieval_metrics``).
TREC_MEASURES = {"ndcg_cut_10": "ndcg_at_10", "map_cut_100": "map_at_100", "recall_100": "recall_at_100"}
MRR_CUTOFF = 10
#: Queries searched per FAISS call; bounds the (chunk, top_k) result buffers, never queries x corpus.
SEARCH_CHUNK = 4096

Run = dict[str, dict[str, float]]


def dense_search(query_embeddings: np.ndarray, document_embeddings: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k with a FAISS flat index, queries in chunks.

    FAISS scans the corpus in blocks, so no queries x corpus score matrix is ever held.

    Args:
        query_embeddings: (num_queries, dim) float32.
        document_embeddings: (num_documents, dim) float32.
        top_k: Results per query (capped at the number of documents).

    Returns:
        (indices, scores), both (num_queries, k), best first.
    """
    import faiss

    index = faiss.IndexFlatIP(document_embeddings.shape[1])
    index.add(np.ascontiguousarray(document_embeddings, dtype=np.float32))
    k = min(top_k, len(document_embeddings))
    indices = np.empty((len(query_embeddings), k), dtype=np.int64)
    scores = np.empty((len(query_embeddings), k), dtype=np.float32)
    for start in range(0, len(query_embeddings), SEARCH_CHUNK):
        chunk = np.ascontiguousarray(query_embeddings[start : start + SEARCH_CHUNK], dtype=np.float32)
        scores[start : start + len(chunk)], indices[start : start + len(chunk)] = index.search(chunk, k)
    return indices, scores


def build_run(
    query_ids: list[str], doc_ids: list[str], indices: np.ndarray, scores: np.ndarray, top_k: int
) -> tuple[Run, int]:
    """Turn search results into a pytrec_eval run, dropping documents whose id equals the query id.

    Returns:
        (run, number of self-matches dropped).
    """
    run: Run = {}
    dropped = 0
    for query_id, row_indices, row_scores in zip(query_ids, indices, scores, strict=True):
        hits: dict[str, float] = {}
        for position, score in zip(row_indices, row_scores, strict=True):
            if position < 0:  # FAISS pads with -1 when fewer documents than k exist
                continue
            doc_id = doc_ids[position]
            if doc_id == query_id:
                dropped += 1
                continue
            if len(hits) < top_k:
                hits[doc_id] = float(score)
        run[query_id] = hits
    return run, dropped


def top_of_run(run: Run, k: int) -> Run:
    """Each query's k best documents, ordered as trec_eval orders them (score, then doc id, descending)."""
    return {
        query_id: dict(sorted(hits.items(), key=lambda item: (item[1], item[0]), reverse=True)[:k])
        for query_id, hits in run.items()
    }


def retrieval_metrics(qrels: dict[str, dict[str, int]], run: Run) -> dict[str, float]:
    """nDCG@10, MAP@100, MRR@10 and Recall@100 with pytrec_eval, averaged over every query in ``qrels``.

    A query of ``qrels`` missing from ``run`` scores 0 (pytrec_eval would leave it out of the mean).
    """
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map_cut.100", "recall.100"})
    per_query = evaluator.evaluate(run)
    reciprocal = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top_of_run(run, MRR_CUTOFF))
    count = len(qrels)
    metrics = {
        name: sum(per_query.get(query_id, {}).get(measure, 0.0) for query_id in qrels) / count
        for measure, name in TREC_MEASURES.items()
    }
    metrics["mrr_at_10"] = sum(reciprocal.get(query_id, {}).get("recip_rank", 0.0) for query_id in qrels) / count
    return {name: metrics[name] for name in ("ndcg_at_10", "map_at_100", "mrr_at_10", "recall_at_100")}


def run_beir(
    model,
    data_dir: str | Path,
    split: str = "test",
    batch_size: int = 32,
    top_k: int = 100,
    *,
    policy: PrefixPolicy | None = None,
    show_progress: bool | None = None,
) -> TaskOutcome:
    """Evaluate ``model`` (an ``Encoder``, a ``CachedEncoder`` or "bm25") on a BEIR folder.

    Returns:
        Metrics (ndcg_at_10, map_at_100, mrr_at_10, recall_at_100, fractions) and details: queries
        evaluated, documents, skipped records by reason, seconds per phase.

    Raises:
        FileNotFoundError / e5kit.textio.InputFormatError: missing or malformed input, or qrels
            without any judgement (named).
    """
    data = load_beir(data_dir, split)
    policy = policy or policy_for("retrieval")
    # load_beir guarantees every judged query exists, so at least one query is evaluated.
    query_ids = [query_id for query_id in data.queries if query_id in data.qrels]
    skipped = {"queries without qrels": len(data.queries) - len(query_ids)}
    if skipped["queries without qrels"]:
        logger.info("%d queries have no qrels for split %s and are skipped", skipped["queries without qrels"], split)
    doc_ids = list(data.corpus)
    documents = [document_text(data.corpus[doc_id]) for doc_id in doc_ids]
    queries = [data.queries[query_id] for query_id in query_ids]
    seconds: dict[str, float] = {}
    # One extra hit per query so that dropping the query's own id still leaves top_k.
    if isinstance(model, str):
        if model != BM25:
            raise ValueError(f"unknown retrieval model {model!r}: pass an Encoder or {BM25!r}")
        started = time.perf_counter()
        indices, scores = bm25_search(documents, queries, top_k + 1, show_progress=bool(show_progress))
        seconds["search"] = time.perf_counter() - started
    else:
        started = time.perf_counter()
        query_embeddings = model.encode(queries, role=policy.query_role, batch_size=batch_size, show_progress=show_progress)
        document_embeddings = model.encode(
            documents, role=policy.passage_role, batch_size=batch_size, show_progress=show_progress
        )
        seconds["encode"] = time.perf_counter() - started
        started = time.perf_counter()
        indices, scores = dense_search(query_embeddings, document_embeddings, top_k + 1)
        seconds["search"] = time.perf_counter() - started
    run, dropped = build_run(query_ids, doc_ids, indices, scores, top_k)
    if dropped:
        skipped["retrieved documents equal to their query id"] = dropped
    started = time.perf_counter()
    metrics = retrieval_metrics(data.qrels, run)
    seconds["metrics"] = time.perf_counter() - started
    details = {"queries_evaluated": len(query_ids), "documents": len(doc_ids), "top_k": top_k, "skipped": skipped, "seconds": seconds}
    return TaskOutcome(metrics, details)


def evaluate_beir(model, data_dir: str | Path, split: str = "test", batch_size: int = 32, top_k: int = 100, **options) -> dict[str, float]:
    """nDCG@10, MAP@100, MRR@10 and Recall@100 (fractions) of ``model`` on a BEIR folder.

    Args:
        model: An ``e5kit.encoder.Encoder`` (or ``CachedEncoder``), or the string "bm25".
        data_dir: Folder with corpus.jsonl[.gz], queries.jsonl[.gz], qrels/<split>.tsv.
        split: Qrels split to score.
        batch_size: Texts per forward pass.
        top_k: Documents retrieved per query (MAP@100 and Recall@100 need >= 100).
        **options: ``policy`` (a ``PrefixPolicy``) and ``show_progress``, passed to ``run_beir``.
    """
    return run_beir(model, data_dir, split, batch_size, top_k, **options).metrics
