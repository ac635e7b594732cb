"""Hard-negative mining: BM25 (bm25s, ``e5kit.retrieval.bm25``, as the evaluation harness) or a dense model (FAISS), sharded.

For each query with relevant documents (qrels score > 0), candidates are retrieved, and negatives are
picked from a rank window (skip the ``skip_top`` best, look no deeper than ``depth``). Never a negative,
each rejection counted by reason in the report: a positive; the document with the query's own id; an
empty passage (no visible text, ``e5kit.io.text.has_visible_text``: kept in the corpus with an all-zero
embedding / BM25 score 0 as in evaluation, never sent to the encoder); a copy of a positive (its
``e5kit.io.text.normalized_text_key`` of "title text" equals a positive's); a candidate scoring too close
to the best positive (``margin`` / ``relative_margin``, a likely false negative). When fewer than
``negatives`` survive, random documents that are none of these fill the rest (counted).

Dense search can run shard by shard (``shard_size``): the corpus file is streamed, each shard embedded
and searched, and the running top-``depth`` merged, so only one shard's embeddings are ever in memory.
BM25 needs corpus-wide term statistics, so it indexes the whole corpus at once.

Output: FlagEmbedding JSONL ``{query, pos, neg, query_id, pos_ids, neg_ids}`` plus a ``.stats.json``,
each written whole or not at all (``e5kit.io.files.AtomicFile``); the stats are removed before the JSONL
is replaced and written after it, so stats beside a JSONL always describe it. Mining is seeded, so
after kill -9 at any point a rerun writes the uninterrupted run's files.

Example:
    >>> report = mine_hard_negatives(MiningConfig(model="bm25", negatives=7, skip_top=3, margin=0.5),
    ...                              "queries.jsonl", "corpus.jsonl", "qrels/train.tsv", "mined.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from e5kit.data.finetune_formats import FinetuneExample, RecordIssues, beir_positives
from e5kit.io.beir import CorpusStream, load_qrels, load_queries
from e5kit.io.files import AtomicFile, InputFormatError, remove_stale_temporaries, write_text_atomic
from e5kit.progress import progress_bar, progress_shown
from e5kit.retrieval.bm25 import bm25_search
from e5kit.retrieval.dense import dense_search, encode_corpus, merge_top_k

logger = logging.getLogger(__name__)

BM25 = "bm25"
#: Rejection reasons of ``select_negatives`` (the keys of the report's ``candidates_rejected``).
POSITIVE = "positive"
OWN_ID = "query's own id"
EMPTY = "empty"
DUPLICATE = "duplicate of a positive"
MARGIN = "within the margin of the positive"


class MiningConfig(BaseModel):
    """How negatives are mined.

    Attributes:
        model: "bm25", or a dense model (directory, bundled name or Hub id) for FAISS search.
        negatives: Negatives per query.
        depth: Candidates retrieved per query (ranks 0 .. depth - 1).
        skip_top: Rank window start: the best ``skip_top`` results are never negatives (they are
            the likeliest unlabelled positives).
        margin: A candidate must score at most (best positive's score - margin); None disables.
        relative_margin: A candidate must score at most best positive's score * (1 - relative_margin);
            None disables.
        sampling: "top" takes the best surviving candidates, "random" samples among them.
        backfill: Fill up with random non-positive documents when too few candidates survive.
        shard_size: Dense only: documents embedded and searched at a time; None embeds the whole corpus.
        batch_size: Texts per forward pass (dense).
        max_length: Token limit of the dense model (None: the model's own).
        device: Torch device for the dense model (None: CUDA when present).
        similarity_fn_name: Dense score: "cosine" (E5; L2-normalised embeddings whatever the model
            ships) or "dot" (raw dot products; only when asked for).
        seed: Seed of random sampling and back-fill.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = BM25
    negatives: int = Field(default=7, ge=1)
    depth: int = Field(default=100, ge=1)
    skip_top: int = Field(default=0, ge=0)
    margin: float | None = Field(default=None, ge=0)
    relative_margin: float | None = Field(default=None, ge=0, lt=1)
    sampling: Literal["top", "random"] = "top"
    backfill: bool = True
    shard_size: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=64, ge=1)
    max_length: int | None = Field(default=None, ge=4)
    device: str | None = None
    similarity_fn_name: Literal["cosine", "dot"] = "cosine"
    seed: int = 42

    @model_validator(mode="after")
    def _consistent(self) -> MiningConfig:
        if self.skip_top >= self.depth:
            raise ValueError(f"skip_top ({self.skip_top}) must be below depth ({self.depth}): the rank window would be empty")
        if self.shard_size is not None and self.model == BM25:
            raise ValueError("shard_size: BM25 scores need corpus-wide statistics, so BM25 cannot search shard by shard")
        return self


# ---------------------------------------------------------------------------- search
@dataclass
class SearchResult:
    """Candidates per query and the score of each positive.

    Attributes:
        indices: (queries, depth) corpus positions, best first; -1 pads short lists.
        scores: (queries, depth) their scores; -inf pads.
        positive_scores: Per query, the best score among its positives; -inf when no positive was
            scored (BM25: none in the retrieved depth, so every candidate outscores them).
    """

    indices: np.ndarray
    scores: np.ndarray
    positive_scores: np.ndarray


def bm25_candidates(corpus: CorpusStream, queries: Sequence[str], positives: Sequence[list[int]], depth: int) -> SearchResult:
    """BM25 top-``depth`` with the harness's settings; a positive's score is known when it is retrieved."""
    _, documents = next(corpus.shards(None))
    indices, scores = bm25_search(documents, queries, depth, show_progress=progress_shown())
    positive_scores = np.full(len(queries), -np.inf, dtype=np.float32)
    for row, (ranked, ranked_scores, relevant) in enumerate(zip(indices, scores, positives)):
        hits = ranked_scores[np.isin(ranked, relevant)]
        if hits.size:
            positive_scores[row] = hits.max()
    return SearchResult(indices.astype(np.int64), scores.astype(np.float32), positive_scores)


def dense_candidates(
    encoder, corpus: CorpusStream, queries: Sequence[str], positives: Sequence[list[int]], config: MiningConfig
) -> SearchResult:
    """Exact inner-product top-``depth`` with FAISS, one corpus shard at a time, and exact positive scores.

    Passages are embedded by ``encode_corpus``: an empty passage gets an all-zero row (score 0).
    """
    query_embeddings = encoder.encode(queries, role="query", batch_size=config.batch_size, show_progress=True)
    owners: dict[int, list[int]] = {}  # corpus position -> query rows it is a positive of
    for row, relevant in enumerate(positives):
        for position in relevant:
            owners.setdefault(position, []).append(row)
    scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    indices = np.full((len(queries), 0), -1, dtype=np.int64)
    positive_scores = np.full(len(queries), -np.inf, dtype=np.float32)
    shard_count = 1 if config.shard_size is None else -(-len(corpus.ids) // config.shard_size)
    for start, texts in progress_bar(corpus.shards(config.shard_size), total=shard_count, desc="searching shards", unit="shard", show=shard_count > 1):
        embeddings = encode_corpus(encoder, texts, role="passage", batch_size=config.batch_size, show_progress=True).embeddings
        shard_indices, shard_scores = dense_search(query_embeddings, embeddings, config.depth)
        shard_scores = np.where(shard_indices < 0, -np.inf, shard_scores).astype(np.float32)
        shard_indices = np.where(shard_indices < 0, -1, shard_indices + start)
        scores, indices = merge_top_k(scores, indices, shard_scores, shard_indices, config.depth)
        for position in range(start, start + len(texts)):
            for row in owners.get(position, ()):
                score = float(query_embeddings[row] @ embeddings[position - start])
                positive_scores[row] = max(positive_scores[row], score)
    return SearchResult(indices, scores, positive_scores)


# ---------------------------------------------------------------------------- selection
@dataclass
class Selection:
    """Negatives picked for one query, and why candidates were passed over."""

    negatives: list[int] = field(default_factory=list)
    backfilled: int = 0
    rejected: Counter = field(default_factory=Counter)


def select_negatives(
    ranked: np.ndarray,
    ranked_scores: np.ndarray,
    positives: set[int],
    positive_score: float,
    config: MiningConfig,
    rng: np.random.Generator,
    corpus_size: int,
    exclude: set[int] = frozenset(),
    *,
    empty: set[int] = frozenset(),
    duplicates: set[int] = frozenset(),
) -> Selection:
    """Pick ``config.negatives`` negatives for one query from its ranked candidates.

    Args:
        ranked: Corpus positions, best first (-1 = padding).
        ranked_scores: Their scores.
        positives: Corpus positions of the query's positives: never picked, not even by back-fill.
        positive_score: The best positive's score (for the margin); -inf when unknown and below
            every candidate.
        config: Window, margin, sampling and back-fill settings.
        rng: Random source for sampling and back-fill.
        corpus_size: Number of documents (back-fill draws positions below it).
        exclude: Other positions never to pick (e.g. the document whose id equals the query id).
        empty: Positions of empty passages (no visible text): never picked, rejected as "empty".
        duplicates: Positions whose text is a copy of one of this query's positives (same
            ``normalized_text_key``): never picked, rejected as "duplicate of a positive".
    """
    selection = Selection()
    limits = []
    if config.margin is not None:
        limits.append(positive_score - config.margin)
    if config.relative_margin is not None:
        limits.append(positive_score * (1 - config.relative_margin) if np.isfinite(positive_score) else -np.inf)
    ceiling = min(limits, default=np.inf)
    candidates = []
    for position, score in zip(ranked[config.skip_top : config.depth], ranked_scores[config.skip_top : config.depth]):
        position = int(position)
        if position < 0:
            continue
        if position in positives:
            selection.rejected[POSITIVE] += 1
        elif position in exclude:
            selection.rejected[OWN_ID] += 1
        elif position in empty:
            selection.rejected[EMPTY] += 1
        elif position in duplicates:
            selection.rejected[DUPLICATE] += 1
        elif score > ceiling:
            selection.rejected[MARGIN] += 1
        else:
            candidates.append(position)
    if config.sampling == "random" and len(candidates) > config.negatives:
        candidates = [candidates[i] for i in sorted(rng.choice(len(candidates), config.negatives, replace=False))]
    selection.negatives = candidates[: config.negatives]
    if config.backfill and len(selection.negatives) < config.negatives:
        forbidden = positives | exclude | empty | duplicates | set(selection.negatives)
        fill = random_positions(rng, corpus_size, config.negatives - len(selection.negatives), forbidden)
        selection.negatives += fill
        selection.backfilled = len(fill)
    return selection


def random_positions(rng: np.random.Generator, size: int, count: int, forbidden: set[int]) -> list[int]:
    """Up to ``count`` distinct random positions in [0, size) outside ``forbidden``."""
    picked: list[int] = []
    taken = set(forbidden)
    for position in rng.integers(0, size, size=50 * count):  # rejection sampling: cheap on real corpora
        if len(picked) == count:
            return picked
        if int(position) not in taken:
            taken.add(int(position))
            picked.append(int(position))
    allowed = [position for position in range(size) if position not in taken]  # tiny corpus: enumerate
    extra = rng.choice(len(allowed), min(count - len(picked), len(allowed)), replace=False) if allowed else []
    return picked + [allowed[i] for i in extra]


# ---------------------------------------------------------------------------- driver
def mine_hard_negatives(
    config: MiningConfig,
    queries_path: str | Path,
    corpus_path: str | Path,
    qrels_path: str | Path,
    out_path: str | Path,
    encoder=None,
) -> dict[str, Any]:
    """Mine negatives for every judged query and write FlagEmbedding JSONL to ``out_path``.

    Args:
        config: Mining settings.
        queries_path: BEIR queries.jsonl[.gz] (``_id``, ``text``).
        corpus_path: BEIR corpus.jsonl[.gz] (``_id``, ``title``, ``text``).
        qrels_path: Qrels TSV (query id, document id, score); scores > 0 are positives.
        out_path: Output JSONL; ``{out_path}.stats.json`` gets the report.
        encoder: A loaded ``Encoder`` for dense mining (default: load ``config.model``).

    Returns:
        The report: counts of queries, documents and empty documents, negatives retrieved and
        back-filled, rejected candidates by reason (positive, query's own id, empty, duplicate of a
        positive, within the margin), skipped records by reason, seconds. A positive without visible
        text is left out of its record (counted); a query left without positives is skipped (counted).
    """
    started = time.perf_counter()
    issues = RecordIssues()
    queries = load_queries(Path(queries_path))
    corpus = CorpusStream(corpus_path)
    positive_ids = beir_positives(load_qrels(Path(qrels_path)), queries, corpus.position, issues, origin=str(qrels_path))
    for query_id, doc_ids in list(positive_ids.items()):
        visible = [doc_id for doc_id in doc_ids if corpus.position[doc_id] not in corpus.empty]
        for doc_id in doc_ids:
            if doc_id not in visible:
                issues.add("positive without visible text (left out)", f"{qrels_path} query {query_id!r} document {doc_id!r}")
        if visible:
            positive_ids[query_id] = visible
        else:
            del positive_ids[query_id]
            issues.add("every positive is an empty passage", f"{qrels_path} query {query_id!r}")
    query_ids = list(positive_ids)
    if not query_ids:
        raise InputFormatError(f"{qrels_path}: no query has a relevant document in the corpus ({issues.describe()})")
    positives = [[corpus.position[doc_id] for doc_id in positive_ids[query_id]] for query_id in query_ids]
    query_texts = [queries[query_id] for query_id in query_ids]
    if config.model == BM25:
        result = bm25_candidates(corpus, query_texts, positives, config.depth)
    else:
        if encoder is None:
            from e5kit.encoder import Encoder

            encoder = Encoder.load(config.model, max_length=config.max_length, similarity_fn_name=config.similarity_fn_name, device=config.device)
        result = dense_candidates(encoder, corpus, query_texts, positives, config)
    search_seconds = time.perf_counter() - started

    copies = corpus.copies_of({p for row in positives for p in row})
    selections = []
    rejected: Counter = Counter()
    for row, query_id in enumerate(query_ids):
        own = corpus.position.get(query_id)
        duplicates = set().union(*(copies[p] for p in positives[row])) - set(positives[row])
        selection = select_negatives(
            result.indices[row],
            result.scores[row],
            set(positives[row]),
            float(result.positive_scores[row]),
            config,
            np.random.default_rng([config.seed, row]),
            len(corpus.ids),
            exclude={own} if own is not None else set(),
            empty=corpus.empty,
            duplicates=duplicates,
        )
        rejected.update(selection.rejected)
        if len(selection.negatives) < config.negatives:
            issues.add(f"fewer than {config.negatives} negatives found", f"query {query_id!r}")
        selections.append(selection)

    texts = corpus.texts({p for row in positives for p in row} | {p for s in selections for p in s.negatives})
    out_path, stats_path = Path(out_path), Path(f"{out_path}.stats.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stats_path.unlink(missing_ok=True)  # stale stats never sit beside a new JSONL
    remove_stale_temporaries(out_path.parent, out_path.name)  # what a killed run left half written
    with AtomicFile(out_path) as staged, staged.temporary.open("w", encoding="utf-8") as handle:
        for row, query_id in enumerate(query_ids):
            example = FinetuneExample(
                query=query_texts[row],
                positives=[texts[p] for p in positives[row]],
                negatives=[texts[p] for p in selections[row].negatives],
                query_id=query_id,
                positive_ids=[corpus.ids[p] for p in positives[row]],
                negative_ids=[corpus.ids[p] for p in selections[row].negatives],
            )
            handle.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")
    report = {
        "config": config.model_dump(),
        "queries": len(query_ids),
        "documents": len(corpus.ids),
        "empty_documents": len(corpus.empty),
        "negatives_retrieved": sum(len(s.negatives) - s.backfilled for s in selections),
        "negatives_backfilled": sum(s.backfilled for s in selections),
        "candidates_rejected": dict(rejected),
        "positives_unscored": int(np.isinf(result.positive_scores).sum()),
        "skipped": issues.summary(),
        "seconds": {"search": round(search_seconds, 3), "total": round(time.perf_counter() - started, 3)},
        "queries_per_s": round(len(query_ids) / max(time.perf_counter() - started, 1e-9), 2),
    }
    write_text_atomic(stats_path, json.dumps(report, indent=2) + "\n")
    return report
