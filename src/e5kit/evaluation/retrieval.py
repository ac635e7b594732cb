"""BEIR retrieval evaluation: dense exact search or BM25, scored with pytrec_eval.

BEIR's rules: documents are embedded as "title text" in the passage role and queries in the query
role; qrels scores > 0 are relevant; queries without qrels for the split are skipped (and counted).
Three rules are settings, each reported in the result's details:

- Identical ids (``ignore_identical_ids``). When query and document ids share a namespace (ArguAna,
  Quora, SciDocs, CQADupStack), a query's own document is retrieved first and is not an answer. BEIR's
  ``EvaluateRetrieval.evaluate(..., ignore_identical_ids=True)`` (its default) drops every retrieved
  document whose id equals the query id; mteb's ``RetrievalEvaluator.evaluate`` has the same flag,
  default False, set True per task (``AbsTaskRetrieval.ignore_identical_ids``, e.g. ArguAna). Both drop
  the document even when the qrels judge it relevant to that query, which silently turns a correct
  hit into a miss (case beir_selfid: nDCG@10 50 instead of 100). Our default, "unjudged", differs on
  purpose: a self-match is dropped only when the qrels do not judge that document for that query, so
  a dataset whose ids merely collide is scored on its judgements, while the ArguAna/Quora case (the
  query's own text, never judged) is dropped as in BEIR. "always" is BEIR's rule (and mteb's with the
  flag set), "never" mteb's default. Dropped self-matches are counted.
- Queries judged only non-relevant (every qrels score <= 0). pytrec_eval returns them with every
  measure 0, and BEIR averages over every query pytrec_eval returns, so they count as 0: our default.
  mteb (v2, ``AbsTaskRetrieval._evaluate_subset``) calls ``_filter_queries_without_positives`` before
  searching, but that filter drops only queries whose qrels mapping is empty; a query judged only with
  score 0 keeps a non-empty mapping, so mteb averages it as 0 too. ``exclude_queries_without_relevant``
  leaves them out of the mean (what that filter's name promises). Either way they are counted.
- Empty passages (no visible text) stay in the corpus with an all-zero embedding / BM25 score 0 and are
  counted (``e5kit.retrieval.dense.encode_corpus``). BEIR's SentenceBERT model embeds
  ``(title + " " + text).strip()``, i.e. the empty string, which our Encoder refuses as text without
  content. We differ on purpose: a zero vector scores exactly 0 against every query, so an empty passage
  ranks below every document with a positive score and above any with a negative one (a dot model's
  raw scores, or an unusual cosine); BEIR's embedding of "" would score whatever that vector scores.

A corpus too large for memory is embedded into an on-disk store instead (``corpus_store``, implied by
the ``torchrun`` and ``ray`` engines; ``e5kit.retrieval.engines.embed_texts``): in bounded blocks, on
any engine, and searched block by block with the blocks' top-k merged (``search_store``). The store
lives in the embedding cache's folder (``stores/``), named by the model, role and corpus, so it is the
corpus's cache: a rerun reuses it, a killed run resumes it block by block. It is the in-memory path's
search over the same vectors (bit for bit when both embed the corpus in one call; a text batched with
other texts may differ in the last float bits), so the metrics are the same.

Example:
    >>> evaluate_beir(Encoder.load("all-MiniLM-L6-v2"), "data/beir/scifact")   # doctest: +SKIP
    {'ndcg_at_10': 0.645, 'map_at_100': ..., 'mrr_at_10': ..., 'recall_at_100': ...}
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from e5kit.evaluation.prefix_policy import PrefixPolicy, policy_for
from e5kit.evaluation.results import TaskOutcome
from e5kit.io.beir import document_text, empty_mask, load_beir
from e5kit.io.files import unique_names
from e5kit.progress import progress_shown
from e5kit.retrieval.bm25 import bm25_search
from e5kit.retrieval.dense import dense_search, encode_corpus
from e5kit.retrieval.engines import EncoderSpec, Engine, StoreEmbedding, embed_texts
from e5kit.retrieval.store import DEFAULT_BLOCK_ROWS, search_store

logger = logging.getLogger(__name__)

#: The model name that selects BM25 instead of an encoder.
BM25 = "bm25"
#: pytrec_eval measure -> our metric name. MRR@10 is computed on runs cut at 10 (see ``retrieval_metrics``).
TREC_MEASURES = {"ndcg_cut_10": "ndcg_at_10", "map_cut_100": "map_at_100", "recall_100": "recall_at_100"}
MRR_CUTOFF = 10

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]
IdenticalIds = Literal["unjudged", "always", "never"]
#: The values of ``ignore_identical_ids`` (see the module docstring).
IDENTICAL_ID_RULES: tuple[str, ...] = ("unjudged", "always", "never")


def drops_identical_id(query_id: str, doc_id: str, qrels: Qrels | None, rule: IdenticalIds = "unjudged") -> bool:
    """Whether a retrieved ``doc_id`` is removed from ``query_id``'s results under ``rule``.

    "unjudged": only when the ids are equal and the qrels do not judge that document for that query;
    "always": whenever the ids are equal (BEIR); "never": never (mteb's default).
    """
    if rule not in IDENTICAL_ID_RULES:
        raise ValueError(f"ignore_identical_ids must be one of {', '.join(IDENTICAL_ID_RULES)}, got {rule!r}")
    if doc_id != query_id or rule == "never":
        return False
    return rule == "always" or doc_id not in (qrels or {}).get(query_id, {})


def queries_without_relevant(qrels: Qrels) -> list[str]:
    """Judged queries whose every qrels score is <= 0 (no relevant document)."""
    return [query_id for query_id, judged in qrels.items() if not any(score > 0 for score in judged.values())]


def build_run(
    query_ids: list[str],
    doc_ids: list[str],
    indices: np.ndarray,
    scores: np.ndarray,
    top_k: int,
    qrels: Qrels | None = None,
    ignore_identical_ids: IdenticalIds = "unjudged",
) -> tuple[Run, int]:
    """Turn search results into a pytrec_eval run, removing self-matches by ``drops_identical_id``.

    Args:
        query_ids / doc_ids: Ids of the search rows and of the corpus positions.
        indices / scores: (queries, k) search results, best first; -1 pads.
        top_k: Hits kept per query after the removal.
        qrels: The judgements ("unjudged" keeps a self-match judged for its query); None = none.
        ignore_identical_ids: "unjudged", "always" or "never".

    Returns:
        (run, number of self-matches removed).
    """
    run: Run = {}
    dropped = 0
    for query_id, row_indices, row_scores in zip(query_ids, indices, scores, strict=True):
        hits: dict[str, float] = {}
        for position, score in zip(row_indices, row_scores, strict=True):
            if position < 0:  # FAISS pads with -1 when fewer documents than k exist
                continue
            doc_id = doc_ids[position]
            if drops_identical_id(query_id, doc_id, qrels, ignore_identical_ids):
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
    ignore_identical_ids: IdenticalIds = "unjudged",
    exclude_queries_without_relevant: bool = False,
    corpus_store: bool = False,
    engine: Engine = "local",
    workers: int | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    spec: EncoderSpec | None = None,
) -> TaskOutcome:
    """Evaluate ``model`` (an ``Encoder``, a ``CachedEncoder`` or "bm25") on a BEIR folder.

    Args:
        ignore_identical_ids: Self-match rule, "unjudged" (default), "always" (BEIR) or "never" (mteb's
            default); see the module docstring.
        exclude_queries_without_relevant: Leave queries judged only with scores <= 0 out of the mean
            (default: averaged as 0, as BEIR and mteb do).
        corpus_store: Embed the corpus into an on-disk store of ``block_rows``-row blocks and search it
            block by block (see the module docstring); implied by ``engine`` torchrun or ray. The store
            goes under a ``CachedEncoder``'s cache folder, else into a temporary folder.
        engine, workers, block_rows: How the store is embedded (``e5kit.retrieval.engines``).
        spec: How Ray actors load the model (``engine`` ray).

    Returns:
        Metrics (ndcg_at_10, map_at_100, mrr_at_10, recall_at_100, fractions) and details: queries
        averaged, queries judged only non-relevant, self-matches removed, documents and empty
        documents, skipped records by reason, seconds per phase.

    Raises:
        FileNotFoundError / e5kit.io.files.InputFormatError: missing or malformed input, or qrels
            without any judgement (named).
        ValueError: an unknown rule, no query left to average, or ``engine`` torchrun or ray without a
            ``CachedEncoder`` (whose folder the workers share) or ray without ``spec``.
    """
    if ignore_identical_ids not in IDENTICAL_ID_RULES:
        raise ValueError(f"ignore_identical_ids must be one of {', '.join(IDENTICAL_ID_RULES)}, got {ignore_identical_ids!r}")
    data = load_beir(data_dir, split)
    policy = policy or policy_for("retrieval")
    unanswerable = queries_without_relevant(data.qrels)
    qrels = data.qrels
    if exclude_queries_without_relevant:
        excluded = set(unanswerable)
        qrels = {query_id: judged for query_id, judged in data.qrels.items() if query_id not in excluded}
        if not qrels:
            raise ValueError(f"{data_dir}: every judged query of split {split} has only scores <= 0; nothing left to average")
    # load_beir guarantees every judged query exists, so at least one query is evaluated.
    query_ids = [query_id for query_id in data.queries if query_id in qrels]
    skipped = {"queries without qrels": len(data.queries) - len(data.qrels)}
    if skipped["queries without qrels"]:
        logger.info("%d queries have no qrels for split %s and are skipped", skipped["queries without qrels"], split)
    if unanswerable:
        how = "left out of the mean" if exclude_queries_without_relevant else "averaged as 0 (BEIR)"
        logger.info("%d queries are judged only with scores <= 0: %s", len(unanswerable), how)
        if exclude_queries_without_relevant:
            skipped["queries judged only non-relevant (score <= 0)"] = len(unanswerable)
    doc_ids = list(data.corpus)
    documents = [document_text(data.corpus[doc_id]) for doc_id in doc_ids]
    queries = [data.queries[query_id] for query_id in query_ids]
    seconds: dict[str, float] = {}
    # One extra hit per query so that dropping the query's own id still leaves top_k.
    if isinstance(model, str):
        if model != BM25:
            raise ValueError(f"unknown retrieval model {model!r}: pass an Encoder or {BM25!r}")
        empty_documents = int(empty_mask(documents).sum())
        started = time.perf_counter()
        indices, scores = bm25_search(documents, queries, top_k + 1, show_progress=progress_shown(show_progress))
        seconds["search"] = time.perf_counter() - started
    else:
        started = time.perf_counter()
        query_embeddings = model.encode(queries, role=policy.query_role, batch_size=batch_size, show_progress=show_progress)
        if corpus_store or engine != "local":
            with _corpus_store_place(model, engine) as (root, encoder):
                store = embed_texts(documents, root, encoder, role=policy.passage_role,
                                    settings=StoreEmbedding(engine=engine, workers=workers, block_rows=block_rows), spec=spec, batch_size=batch_size)
                empty_documents = int(empty_mask(documents).sum())
                seconds["encode"] = time.perf_counter() - started
                started = time.perf_counter()
                indices, scores = search_store(query_embeddings, store, top_k + 1)
        else:
            corpus = encode_corpus(model, documents, role=policy.passage_role, batch_size=batch_size, show_progress=show_progress)
            empty_documents = corpus.empty_count
            seconds["encode"] = time.perf_counter() - started
            started = time.perf_counter()
            indices, scores = dense_search(query_embeddings, corpus.embeddings, top_k + 1)
        seconds["search"] = time.perf_counter() - started
    if empty_documents:
        logger.info("%d documents have no visible text: kept as empty passages scoring 0", empty_documents)
    run, removed = build_run(query_ids, doc_ids, indices, scores, top_k, qrels, ignore_identical_ids)
    started = time.perf_counter()
    metrics = retrieval_metrics(qrels, run)
    seconds["metrics"] = time.perf_counter() - started
    details = {
        "queries_evaluated": len(query_ids),
        "queries_without_relevant": len(unanswerable),
        "queries_without_relevant_rule": "excluded" if exclude_queries_without_relevant else "averaged as 0",
        "identical_ids_removed": removed,
        "ignore_identical_ids": ignore_identical_ids,
        "documents": len(doc_ids),
        "empty_documents": empty_documents,
        "top_k": top_k,
        "skipped": skipped,
        "seconds": seconds,
    }
    return TaskOutcome(metrics, details)


@contextmanager
def _corpus_store_place(model, engine: str) -> Iterator[tuple[Path, Any]]:
    """(folder the corpus store goes under, the encoder that embeds it).

    A ``CachedEncoder``'s store goes to ``stores/`` of its cache folder (kept: it is the corpus's cache,
    while the SQLite cache keeps the queries) and its wrapped encoder embeds; any other model's store
    goes to a temporary folder removed after the search (one process and its own Ray actors only).
    """
    from e5kit.evaluation.cache import CachedEncoder

    if isinstance(model, CachedEncoder):
        yield model.cache.folder / "stores", model.encoder
        return
    if engine != "local":
        raise ValueError(f"engine {engine}: the corpus store must be in a folder every worker sees; evaluate with the embedding cache on")
    with tempfile.TemporaryDirectory(prefix="e5kit-corpus-") as folder:
        yield Path(folder), model


def evaluate_beir(model, data_dir: str | Path, split: str = "test", batch_size: int = 32, top_k: int = 100, **options) -> dict[str, float]:
    """nDCG@10, MAP@100, MRR@10 and Recall@100 (fractions) of ``model`` on a BEIR folder.

    Args:
        model: An ``e5kit.encoder.Encoder`` (or ``CachedEncoder``), or the string "bm25".
        data_dir: Folder with corpus.jsonl[.gz], queries.jsonl[.gz], qrels/<split>.tsv.
        split: Qrels split to score.
        batch_size: Texts per forward pass.
        top_k: Documents retrieved per query (MAP@100 and Recall@100 need >= 100).
        **options: ``policy`` (a ``PrefixPolicy``), ``show_progress``, ``ignore_identical_ids`` and
            ``exclude_queries_without_relevant``, passed to ``run_beir``.
    """
    return run_beir(model, data_dir, split, batch_size, top_k, **options).metrics


def retrieval_evaluator(data_dirs: list[str | Path], split: str = "test") -> Callable[[Any], dict[str, float]]:
    """An evaluator for a trainer's ``eval_data``: encoder -> {"<data set>/ndcg_at_10": ..., "<data set>/recall_at_100": ...}
    (fractions, BEIR's rules as in ``e5kit eval retrieval``, the model's own prefix policy); a data set is named
    by its folder's name, with parent folders added where two would share one (``e5kit.io.files.unique_names``)."""
    names = unique_names(data_dirs)

    def evaluate(encoder) -> dict[str, float]:
        scores = {}
        for name, data_dir in zip(names, data_dirs):
            metrics = evaluate_beir(encoder, data_dir, split, show_progress=False)
            scores.update({f"{name}/ndcg_at_10": metrics["ndcg_at_10"], f"{name}/recall_at_100": metrics["recall_at_100"]})
        return scores

    return evaluate
