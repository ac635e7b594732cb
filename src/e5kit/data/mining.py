"""Hard-negative mining: BM25 (bm25s, ``e5kit.retrieval.bm25``, as the evaluation harness) or a dense model (FAISS), sharded.

For each query with relevant documents (qrels score > 0), candidates are retrieved, and negatives are
picked from a rank window (skip the ``skip_top`` best, look no deeper than ``depth``). Never a negative,
each rejection counted by reason in the report: a positive; the document with the query's own id; an
empty passage (no visible text, ``e5kit.io.text.has_visible_text``: kept in the corpus with an all-zero
embedding / BM25 score 0 as in evaluation, never sent to the encoder); a copy of a positive (its
``e5kit.io.text.normalized_text_key`` of "title text" equals a positive's); a candidate scoring too close
to the best positive (``margin`` / ``relative_margin``, a likely false negative). When fewer than
``negatives`` survive, random documents that are none of these fill the rest (counted).

Dense mining embeds the corpus and the queries into on-disk stores (``e5kit.retrieval.store``) in
blocks of ``block_rows`` texts under ``OUT.work/`` (the corpus texts are staged there as Parquet
so any worker reads any block), resumed block by block after a kill and data-parallel with ``engine:
torchrun | ray`` (``e5kit.retrieval.engines``; the stores, and so the output, are the same bytes with
each). The search is exact FAISS inner product per corpus block, the blocks' top-``depth`` merged, one
query block at a time, so memory follows ``block_rows`` and the (queries, depth) result, never the
corpus. The folder is removed once the output is written (kept with ``keep_embeddings``). BM25 needs
corpus-wide term statistics, so it indexes the whole corpus at once, in one process.

Output: FlagEmbedding JSONL ``{query, pos, neg, query_id, pos_ids, neg_ids}`` plus ``OUT.stats.json``,
each written whole or not at all (``e5kit.io.files.AtomicFile``). Mining is a stage (:class:`MiningStage`,
``e5kit.stage``): the stats are its marker, removed before the JSONL is replaced and written after it, so
stats beside a JSONL always describe it, and a rerun whose settings and input files are those the stats
record (their fingerprint) is skipped. Mining is seeded, so after kill -9 at any point a rerun writes the
uninterrupted run's files (resuming the embedding blocks already written).

Example:
    >>> report = mine_hard_negatives(MiningConfig(model="bm25", negatives=7, skip_top=3, margin=0.5),
    ...                              "queries.jsonl", "corpus.jsonl", "qrels/train.tsv", "mined.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from e5kit.data.finetune_formats import FinetuneExample, RecordIssues, beir_positives
from e5kit.io.beir import CorpusStream, load_qrels, load_queries
from e5kit.io.columns import ParquetColumnBlocks
from e5kit.io.files import AtomicFile, InputFormatError, remove_stale_temporaries
from e5kit.io.hashing import stable_hash
from e5kit.progress import progress_bar, progress_shown
from e5kit.retrieval.bm25 import bm25_search
from e5kit.retrieval.engines import EncoderSpec, StoreEmbedding, embed_store, list_blocks, torchrun_rank
from e5kit.retrieval.store import EmbeddingStore, StoreLayout, open_or_replace_store, search_store, store_fingerprint
from e5kit.stage import OneFileStage, local_model, run_stage

logger = logging.getLogger(__name__)

BM25 = "bm25"
#: Rejection reasons of ``select_negatives`` (the keys of the report's ``candidates_rejected``).
POSITIVE = "positive"
OWN_ID = "query's own id"
EMPTY = "empty"
DUPLICATE = "duplicate of a positive"
MARGIN = "within the margin of the positive"


class MiningConfig(StoreEmbedding):
    """How negatives are mined (with ``StoreEmbedding``'s engine, workers and block_rows for dense mining).

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
        batch_size: Texts per forward pass (dense).
        max_length: Token limit of the dense model (None: the model's own).
        device: Torch device for the dense model (None: CUDA when present).
        similarity_fn_name: Dense score: "cosine" (E5; L2-normalised embeddings whatever the model
            ships) or "dot" (raw dot products; only when asked for).
        seed: Seed of random sampling and back-fill.
        engine: Dense only: who embeds the corpus and queries: "local" (this process), "torchrun" (every
            rank of a torchrun launch embeds its share of the blocks; rank 0 searches and writes) or
            "ray" (a Ray Data actor pool of ``workers``, one model each). The output is the same with each.
        block_rows: Dense only: texts per embedding block, and corpus rows searched at a time; memory
            follows this, never the corpus size.
        embedding_dtype: How the embeddings are stored on disk ("float16" halves the disk; candidates
            may then differ from float32 on near ties).
        keep_embeddings: Keep ``OUT.work/`` (the stores) after the run.
        queries: BEIR queries.jsonl[.gz] (_id, text).
        corpus: BEIR corpus.jsonl[.gz] (_id, title, text).
        positives: Qrels TSV (query-id, corpus-id, score); score > 0 marks a positive; several per query allowed.
        out: Output FlagEmbedding JSONL {query, pos, neg, query_id, pos_ids, neg_ids}; a report goes to OUT.stats.json.
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
    batch_size: int = Field(default=64, ge=1)
    max_length: int | None = Field(default=None, ge=4)
    device: str | None = None
    similarity_fn_name: Literal["cosine", "dot"] = "cosine"
    seed: int = 42
    embedding_dtype: Literal["float32", "float16"] = "float32"
    keep_embeddings: bool = False
    # The files a run reads and writes (MiningStage needs them; select_negatives and the other helpers do not).
    queries: Path | None = None
    corpus: Path | None = None
    positives: Path | None = None
    out: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> MiningConfig:
        if self.skip_top >= self.depth:
            raise ValueError(f"skip_top ({self.skip_top}) must be below depth ({self.depth}): the rank window would be empty")
        if self.engine != "local" and self.model == BM25:
            raise ValueError(f"engine: BM25 scores need corpus-wide statistics, so BM25 runs in one process (engine local), not {self.engine}")
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


def work_folder(out_path: str | Path) -> Path:
    """Where dense mining keeps the staged corpus and the embedding stores of ``out_path``: ``OUT.work/``."""
    return Path(f"{out_path}.work")


def embed_for_mining(encoder, corpus: CorpusStream, queries: Sequence[str], config: MiningConfig, folder: Path) -> dict[str, EmbeddingStore]:
    """The corpus ("passage") and the queries ("query") embedded into stores under ``folder`` with
    ``config``'s engine, resumed block by block (stores of other inputs or another model are replaced).

    Args:
        encoder: The loaded dense model, or None to load ``config.model`` (Ray actors always load their own).
        corpus: The corpus; its texts are staged as ``folder/corpus.parquet`` (one streaming pass).
        queries: Query texts, in row order.
        config: Model, engine, workers, block_rows, embedding_dtype, batch_size.
        folder: The work folder (``work_folder``); on a Ray cluster, on storage every node sees.

    Returns:
        {"passage": store of (documents, dim), "query": store of (queries, dim)}, both finished (under
        torchrun, on every rank).
    """
    spec = EncoderSpec(config.model, max_length=config.max_length, similarity_fn_name=config.similarity_fn_name, device=config.device)
    # Loaded here under every engine: its weights' fingerprint names the stores.
    encoder = encoder or spec.load()
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    identity = {"encoder": encoder.fingerprint(), "max_length": config.max_length, "similarity": config.similarity_fn_name}
    sides = {
        "passage": (len(corpus.ids), {"corpus": [str(corpus.path), corpus.path.stat().st_size, corpus.path.stat().st_mtime_ns]}),
        "query": (len(queries), {"queries": stable_hash(json.dumps(list(queries)))}),
    }
    stores = {}
    for role, (rows, inputs) in sides.items():
        fingerprint = store_fingerprint({**identity, **inputs, "role": role})
        layout = StoreLayout(rows=rows, dimension=encoder.dimension, block_rows=config.block_rows, dtype=config.embedding_dtype, fingerprint=fingerprint)
        store = open_or_replace_store(folder / role, layout)
        # Called even when no block is missing: under torchrun every rank must reach embed_store's barrier,
        # and a rank that looked after its peers finished would otherwise skip it and leave them waiting.
        texts = _staged_corpus(corpus, folder / "corpus.parquet", config.block_rows) if role == "passage" else list_blocks(list(queries), config.block_rows)
        embed_store(spec, texts, store, role=role, engine=config.engine, workers=config.workers, batch_size=config.batch_size, encoder=encoder)
        stores[role] = store
    return stores


def _staged_corpus(corpus: CorpusStream, target: Path, block_rows: int) -> ParquetColumnBlocks:
    """The corpus texts ("title text") as one Parquet column, a row group per block: a worker reads its
    blocks without streaming the corpus file from the start (a .jsonl.gz cannot seek)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("text", pa.string())])
    with AtomicFile(target) as staged, pq.ParquetWriter(staged.temporary, schema) as writer:
        for _, texts in corpus.shards(block_rows):
            writer.write_table(pa.table({"text": texts}, schema=schema))
    return ParquetColumnBlocks([target], "text", block_rows)


def dense_candidates(queries: EmbeddingStore, corpus: EmbeddingStore, positives: Sequence[list[int]], depth: int) -> SearchResult:
    """Exact inner-product top-``depth`` of every query over the corpus store (``search_store``: per-block
    FAISS, merged), one query block at a time, and the exact score of each query's best positive.

    Args:
        queries: Store of the (Q, dim) query embeddings; corpus: of the (N, dim) passage embeddings
            (an empty passage is an all-zero row, so it scores 0).
        positives: Per query row, the corpus rows of its positives.
        depth: Candidates per query (capped at N).
    """
    k = min(depth, corpus.layout.rows)
    indices = np.empty((queries.layout.rows, k), dtype=np.int64)
    scores = np.empty((queries.layout.rows, k), dtype=np.float32)
    positive_scores = np.full(queries.layout.rows, -np.inf, dtype=np.float32)
    blocks = queries.layout.blocks
    for ids, vectors in progress_bar(queries.blocks(), total=blocks, desc="searching", unit="query block", show=blocks > 1):
        indices[ids], scores[ids] = search_store(vectors, corpus, depth)
        wanted = np.unique(np.array([position for row in ids for position in positives[row]], dtype=np.int64))
        passages = dict(zip(wanted.tolist(), corpus.rows(wanted)))
        for offset, row in enumerate(ids):
            positive_scores[row] = max(float(vectors[offset] @ passages[position]) for position in positives[row])
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
#: MiningConfig's fields that name the run's files (not mining settings: left out of the report's "config").
FILES = ("queries", "corpus", "positives", "out")


class MiningStage(OneFileStage[MiningConfig]):
    """Mining as a stage (``e5kit.stage``): reads the queries, corpus, qrels (and a dense model), writes
    ``out`` with ``OUT.stats.json`` as its marker; a dense run resumes its embedding blocks after a kill
    (the stores under ``OUT.work/`` are named by the model and inputs, so they are never taken up under others).

    Args:
        config: The settings, with ``queries``, ``corpus``, ``positives`` and ``out``.
        encoder: A loaded ``Encoder`` of ``config.model`` for dense mining (default: loaded when the stage runs).

    Raises:
        ValueError: a file field is missing, naming it.
    """

    name = "mine-negatives"
    config_class = MiningConfig
    # How the blocks are embedded, never what: the stores are byte-identical across engines (tested).
    runtime_fields: ClassVar[frozenset[str]] = frozenset({"engine", "workers", "batch_size", "device", "keep_embeddings"})
    resumable = True

    def __init__(self, config: MiningConfig, encoder=None) -> None:
        missing = [name for name in FILES if getattr(config, name) is None]
        if missing:
            raise ValueError(f"mining needs {', '.join(missing)} (the files it reads and writes)")
        super().__init__(config)
        self.encoder = encoder

    @property
    def output_file(self) -> Path:
        return Path(self.config.out)

    def inputs(self) -> list[Path]:
        model = local_model(self.config.model) if self.config.model != BM25 else []
        return [self.config.queries, self.config.corpus, self.config.positives, *model]

    def outputs(self) -> dict[str, Path]:
        return {"negatives": self.output_file}

    def execute(self, log: Callable[[str], None]) -> dict[str, Any]:
        return _mine(self.config, self.encoder)


def mine_hard_negatives(
    config: MiningConfig,
    queries_path: str | Path,
    corpus_path: str | Path,
    qrels_path: str | Path,
    out_path: str | Path,
    encoder=None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Mine negatives for every judged query and write FlagEmbedding JSONL to ``out_path`` (:class:`MiningStage`:
    skipped when ``{out_path}.stats.json`` says it was mined with the same settings and inputs).

    Args:
        config: Mining settings.
        queries_path: BEIR queries.jsonl[.gz] (``_id``, ``text``).
        corpus_path: BEIR corpus.jsonl[.gz] (``_id``, ``title``, ``text``).
        qrels_path: Qrels TSV (query id, document id, score); scores > 0 are positives.
        out_path: Output JSONL; ``{out_path}.stats.json`` gets the report.
        encoder: A loaded ``Encoder`` for dense mining (default: load ``config.model``); it must be
            ``config.model`` as configured, since Ray actors load that.
        force: Mine again even when the stats say it was done.

    Returns:
        {} on a torchrun rank other than 0 (it only embeds its share). Else the report (the stats'
        content): the stage's envelope (``e5kit.stage``), counts of queries, documents and empty
        documents, negatives retrieved and back-filled, rejected candidates by reason (positive,
        query's own id, empty, duplicate of a positive, within the margin), skipped records by reason,
        search seconds. A positive without visible text is left out of its record (counted); a query
        left without positives is skipped (counted).
    """
    files = dict(zip(FILES, map(Path, (queries_path, corpus_path, qrels_path, out_path))))
    return run_stage(MiningStage(config.model_copy(update=files), encoder), force=force, log=logger.info)


def _mine(config: MiningConfig, encoder=None) -> dict[str, Any]:
    """The mining itself (:class:`MiningStage`): writes ``config.out``; returns the report."""
    queries_path, corpus_path, qrels_path, out_path = (Path(getattr(config, name)) for name in FILES)
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
        stores = embed_for_mining(encoder, corpus, query_texts, config, work_folder(out_path))
        if config.engine == "torchrun" and torchrun_rank()[0] != 0:
            return {}  # this rank embedded its share; rank 0 searches and writes
        result = dense_candidates(stores["query"], stores["passage"], positives, config.depth)
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
    out_path.parent.mkdir(parents=True, exist_ok=True)
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
        "config": config.model_dump(exclude=set(FILES)),
        "queries": len(query_ids),
        "documents": len(corpus.ids),
        "empty_documents": len(corpus.empty),
        "negatives_retrieved": sum(len(s.negatives) - s.backfilled for s in selections),
        "negatives_backfilled": sum(s.backfilled for s in selections),
        "candidates_rejected": dict(rejected),
        "positives_unscored": int(np.isinf(result.positive_scores).sum()),
        "skipped": issues.summary(),
        "search_seconds": round(search_seconds, 3),
        "queries_per_s": round(len(query_ids) / max(time.perf_counter() - started, 1e-9), 2),
    }
    if not config.keep_embeddings:
        shutil.rmtree(work_folder(out_path), ignore_errors=True)
    return report
