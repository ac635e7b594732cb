"""Retrieval: exact search, BEIR's rules and pytrec_eval metrics against naive implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from e5kit.evaluation.prefix_policy import policy_for
from e5kit.evaluation.retrieval import build_run, evaluate_beir, retrieval_metrics, run_beir
from e5kit.io.beir import document_text, load_beir
from e5kit.retrieval.bm25 import bm25_search
from e5kit.retrieval.dense import dense_search


def naive_metrics(qrels, run):
    """nDCG@10, MAP@100, MRR@10, Recall@100 written out by hand (trec_eval definitions: linear gain)."""
    totals = dict.fromkeys(("ndcg_at_10", "map_at_100", "mrr_at_10", "recall_at_100"), 0.0)
    for query_id, judged in qrels.items():
        ranked = [d for d, _ in sorted(run.get(query_id, {}).items(), key=lambda x: (x[1], x[0]), reverse=True)]
        relevant = {d for d, s in judged.items() if s > 0}
        dcg = sum(max(judged.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
        ideal = sorted((s for s in judged.values() if s > 0), reverse=True)[:10]
        idcg = sum(s / math.log2(i + 2) for i, s in enumerate(ideal))
        totals["ndcg_at_10"] += dcg / idcg if idcg else 0.0
        hits, precision_sum = 0, 0.0
        for i, d in enumerate(ranked[:100]):
            if d in relevant:
                hits += 1
                precision_sum += hits / (i + 1)
        totals["map_at_100"] += precision_sum / len(relevant) if relevant else 0.0
        first = next((i for i, d in enumerate(ranked[:10]) if d in relevant), None)
        totals["mrr_at_10"] += 1 / (first + 1) if first is not None else 0.0
        totals["recall_at_100"] += len(relevant & set(ranked[:100])) / len(relevant) if relevant else 0.0
    return {name: value / len(qrels) for name, value in totals.items()}


def test_metrics_match_a_naive_implementation():
    # Given graded qrels and a run with ties, a missing query and >10 hits
    rng = np.random.default_rng(0)
    qrels = {f"q{i}": {f"d{j}": int(rng.integers(0, 3)) for j in rng.choice(40, 6, replace=False)} for i in range(8)}
    qrels["q0"]["d0"] = 2
    run = {f"q{i}": {f"d{j}": float(rng.integers(0, 5)) for j in range(40)} for i in range(7)}  # q7 unretrieved
    # When scored with pytrec_eval, Then it equals the hand-written definitions (q7 counted as 0)
    measured = retrieval_metrics(qrels, run)
    assert measured == pytest.approx(naive_metrics(qrels, run), abs=1e-4)


def test_dense_search_equals_brute_force_top_k():
    # Given random embeddings
    rng = np.random.default_rng(1)
    queries, documents = rng.normal(size=(7, 16)).astype("f4"), rng.normal(size=(50, 16)).astype("f4")
    # When searched exactly
    indices, scores = dense_search(queries, documents, top_k=5)
    # Then the top 5 equal a full argsort of the score matrix
    full = queries @ documents.T
    assert np.array_equal(indices, np.argsort(-full, axis=1)[:, :5])
    assert np.allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :5], atol=1e-5)
    assert dense_search(queries, documents[:3], top_k=5)[0].shape == (7, 3)


def test_build_run_drops_the_query_itself_and_keeps_top_k():
    # Given a hit list whose best document has the query's own id
    indices, scores = np.array([[0, 1, 2]]), np.array([[0.9, 0.8, 0.7]])
    # When turned into a run with top_k=2
    run, dropped = build_run(["a"], ["a", "b", "c"], indices, scores, top_k=2)
    # Then the self-match is gone, counted, and two documents remain
    assert run == {"a": {"b": pytest.approx(0.8), "c": pytest.approx(0.7)}} and dropped == 1


def test_dense_evaluation_equals_naive_full_matrix_pipeline(beir_dir, tiny_encoder):
    # Given a BEIR folder and the tiny encoder
    corpus, queries, qrels = load_beir(beir_dir)
    # When evaluated by the harness
    outcome = run_beir(tiny_encoder, beir_dir, top_k=100)
    # Then it equals scoring the full query x document matrix built naively with E5 prefixes
    judged = [q for q in queries if q in qrels]
    q = tiny_encoder.encode([queries[i] for i in judged], role="query")
    d = tiny_encoder.encode([document_text(corpus[i]) for i in corpus], role="passage")
    scores = q @ d.T
    run = {qid: {did: float(s) for did, s in zip(corpus, row, strict=True) if did != qid} for qid, row in zip(judged, scores, strict=True)}
    assert outcome.metrics == pytest.approx(naive_metrics(qrels, run), abs=1e-4)
    assert outcome.details["skipped"] == {"queries without qrels": 1}
    assert outcome.details["queries_evaluated"] == 6 and outcome.details["documents"] == 30
    assert evaluate_beir(tiny_encoder, beir_dir) == pytest.approx(outcome.metrics)


def test_queries_and_documents_get_their_e5_prefixes(beir_dir, tiny_encoder):
    # Given an encoder that records what it is asked to embed
    seen = []

    class Recorder:
        def encode(self, texts, role=None, **kwargs):
            seen.append((role, tiny_encoder.prepare(texts, role)[0]))
            return tiny_encoder.encode(texts, role=role, **kwargs)

    # When a BEIR folder is evaluated with the default, then an overridden policy
    run_beir(Recorder(), beir_dir)
    run_beir(Recorder(), beir_dir, policy=policy_for("retrieval", passage_role="query"))
    # Then queries carry "query: " and documents "passage: " unless overridden
    assert [role for role, _ in seen] == ["query", "passage", "query", "query"]
    assert seen[0][1].startswith("query: ") and seen[1][1].startswith("passage: ")


def test_bm25_ranks_topical_documents_first(beir_dir):
    # Given the generated corpus, When BM25 searches for a topic's words
    corpus, _, _ = load_beir(beir_dir)
    doc_ids = list(corpus)
    indices, scores = bm25_search([document_text(corpus[d]) for d in doc_ids], ["moon sky"], top_k=3)
    # Then the best hits are documents of that topic, best first
    assert all(doc_ids[i].startswith("sky-") for i in indices[0])
    assert list(scores[0]) == sorted(scores[0], reverse=True)


def test_bm25_evaluation_scores_the_generated_topics_well(beir_dir):
    # Given queries that share words with their topic's documents, Then BM25 finds them
    metrics = evaluate_beir("bm25", beir_dir)
    assert set(metrics) == {"ndcg_at_10", "map_at_100", "mrr_at_10", "recall_at_100"}
    assert metrics["recall_at_100"] == 1.0 and metrics["ndcg_at_10"] > 0.5


def test_unknown_string_model_is_refused(beir_dir):
    with pytest.raises(ValueError, match="unknown retrieval model 'bm24'"):
        evaluate_beir("bm24", beir_dir)
