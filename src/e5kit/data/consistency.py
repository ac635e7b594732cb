"""Consistency-based filtering (E5 section 1): keep a pair only if a preliminary model finds it again.

For every pair i, its query ranks its own passage among a random pool of P passages (plus its own),
and its passage ranks its own query among the same pool's queries (plus its own). The pair is kept
iff both ranks are <= k (E5: k = 2, pool ~1M). Where we differ on purpose: a pool passage whose pair
has the same query text (``normalized_text_key``), e.g. another paragraph of the same Wikipedia
section or another reply to the same comment, answers the query too and is not counted against it
(likewise a pool query whose pair has the same passage); E5's pairs mostly have one passage per query,
and without this rule such sources lose nearly all their pairs. Both sides are embedded in bounded
blocks into on-disk stores (``e5kit.retrieval.store``; resumable block by block, data-parallel with
``engine: torchrun | ray``) and ranked block by block against a pool read in bounded shards, so memory
follows ``block_rows`` and ``pool_block_rows``, not the number of pairs. Ranks are exact float32
inner-product ranks, stored per pair, capped at ``max_rank``, in ``scores.parquet``. The output is a
keep-mask over the input shards (``mask.json``: shards, their row counts, k; ``e5kit.io.pairs``), which
training reads through, so the pairs are never copied and a new k <= max_rank rewrites only the mask
(``reapply_k``); ``write_pairs`` also copies the kept rows out, row group by row group, into ``pairs/``. ``iterations > 1`` alternates
filtering and re-training on the kept pairs (the paper's suggested future work); every iteration
re-filters the full input with the newest model.

Every file, and the ``pairs/`` folder as one, is written whole or not at all (``e5kit.io.files.AtomicFile``,
``AtomicFolder``), and ``report.json`` is written last, so it marks a finished run: after kill -9 at any
point, running the same filter again gives the uninterrupted run's output (a re-training round resumes
from its last checkpoint).

Example:
    >>> report = consistency_filter(ConsistencyConfig(pairs=["out/pairs"], model="all-MiniLM-L6-v2", output_dir="out/consistent"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from e5kit.data.shards import iter_rows
from e5kit.encoder.backend import resolve_device
from e5kit.io.columns import ParquetColumnBlocks
from e5kit.io.files import AtomicFile, AtomicFolder, remove_stale_temporaries, write_text_atomic
from e5kit.io.hashing import text_key_hash
from e5kit.io.pairs import PAIRS_FOLDER, is_parquet, keep_mask, output_shard_names, resolve_shard_paths, write_mask
from e5kit.io.text import has_visible_text
from e5kit.retrieval.engines import EncoderSpec, Engine, embed_store, torchrun_rank
from e5kit.retrieval.store import (
    DEFAULT_BLOCK_ROWS,
    RANK_TILE_PROBES,
    EmbeddingStore,
    StoreLayout,
    open_or_replace_store,
    own_scores,
    rank_of_own_in_store,
    store_fingerprint,
)
from e5kit.stage import Stage, file_identity, local_model

#: (init model, pairs folder, output folder, extra settings) -> trained model directory.
TrainFn = Callable[[str, Path, Path, dict[str, Any]], Path]
SCORES_FILE = "scores.parquet"
#: Both sides' embedding stores while a run is under way (kept with ``keep_embeddings``).
EMBEDDINGS_DIR = "embeddings"
#: Under EMBEDDINGS_DIR: the ranking's finished (pool shard, probe block) counts, kept until the filter finishes.
RANK_COUNTS_DIR = "rank-counts"
#: JSONL input shards converted to Parquet for block reads, removed when the run finishes.
INPUTS_DIR = ".inputs"


class ConsistencyConfig(BaseModel):
    """The consistency filter stage.

    Attributes:
        pairs: Pair shards (Parquet, or JSONL plain or compressed): files, folders holding them (a stage's
            output folder means its pairs/) or globs, found by ``e5kit.io.pairs.resolve_shard_paths``.
        model: Preliminary model (directory, bundled name or Hub id) that embeds both sides.
        output_dir: Receives scores.parquet (both ranks of every row), mask.json (the keep-mask over the
            input shards: the filtered dataset, for ``data.paths`` of pre-training), report.json, and with
            ``write_pairs`` pairs/ (kept pairs, one ``<stem>.parquet`` per input shard).
        pool_size: Random pool P of other pairs to rank against (capped at the data size).
        k: Keep a pair when both of its ranks are <= k.
        max_rank: Ranks above are stored as max_rank + 1; bounds the k a re-apply can use.
        seed: Seed of the pool draw.
        batch_size: Texts per forward pass when embedding.
        search_chunk: Probes per score tile of the ranking (memory ~ search_chunk x 8,192 float32);
            ranks do not depend on it, nor on ``pool_block_rows``.
        max_length: Token limit when embedding (default: the model's own).
        device: Torch device for embedding and ranking (default: CUDA when present, else CPU).
        similarity_fn_name: The ranking score: "cosine" (E5; L2-normalised embeddings whatever the
            model ships) or "dot" (raw dot products; only when asked for).
        iterations: Filter -> re-train rounds; the last round's filter is the output.
        train: Extra pre-training settings for re-training rounds (e.g. max_steps, batch_size, chunk_size).
        engine: Who embeds the pairs: "local" (this process), "torchrun" (every rank of a torchrun
            launch embeds its share of the blocks; rank 0 ranks and writes) or "ray" (a Ray Data
            actor pool of ``workers``, one model each). The output is the same with each.
        workers: Ray actors (default 2).
        block_rows: Pairs per embedding block; memory follows this and ``pool_block_rows``, never
            the number of pairs.
        pool_block_rows: Pool candidates held in memory at once while ranking.
        embedding_dtype: How the embeddings are stored on disk while ranking ("float16" halves the
            disk; ranks may then differ from float32 on near ties).
        keep_embeddings: Keep the embedding stores in ``output_dir/embeddings`` after the run.
        write_pairs: Also copy the kept pairs into ``output_dir/pairs`` (for commands that read plain
            shards); training reads the keep-mask without it.
    """

    model_config = ConfigDict(extra="forbid")

    pairs: list[str] = Field(min_length=1)
    model: str
    output_dir: Path
    pool_size: int = Field(default=1_000_000, ge=1)
    k: int = Field(default=2, ge=1)
    max_rank: int = Field(default=100, ge=1)
    seed: int = 0
    batch_size: int = Field(default=64, ge=1)
    search_chunk: int = Field(default=RANK_TILE_PROBES, ge=1)
    max_length: int | None = None
    device: str | None = None
    similarity_fn_name: Literal["cosine", "dot"] = "cosine"
    iterations: int = Field(default=1, ge=1)
    train: dict[str, Any] = {}
    engine: Engine = "local"
    workers: int | None = Field(default=None, ge=1)
    block_rows: int = Field(default=DEFAULT_BLOCK_ROWS, ge=1)
    pool_block_rows: int = Field(default=262_144, ge=1)
    embedding_dtype: Literal["float32", "float16"] = "float32"
    keep_embeddings: bool = False
    write_pairs: bool = False

    @model_validator(mode="after")
    def _k_within_stored_ranks(self) -> ConsistencyConfig:
        if self.k > self.max_rank:
            raise ValueError(f"k ({self.k}) must be <= max_rank ({self.max_rank}), the deepest rank stored")
        return self


# ------------------------------------------------------------------------------------------------ math
def consistency_ranks(
    queries: EmbeddingStore,
    passages: EmbeddingStore,
    pool: np.ndarray,
    max_rank: int,
    chunk: int,
    query_groups: np.ndarray | None = None,
    passage_groups: np.ndarray | None = None,
    pool_block_rows: int = 262_144,
    device: str = "cpu",
    counts_folder: Path | None = None,
) -> dict[str, np.ndarray]:
    """Both directions: the passage's rank for its query, and the query's rank for its passage.

    Args:
        queries: Store of the (N, d) query embeddings; passages: of the passage embeddings (row i = pair i).
        pool: (P,) sorted pair indices forming the random pool.
        query_groups: (N,) int64 id of each pair's query text (``text_key_hash``): a pool passage whose
            pair has the same query is another answer to it, not a competitor (Wikipedia sections with
            several paragraphs, a comment with several replies). None: only the pair's own passage.
        passage_groups: (N,) int64 id of each pair's passage text, the same rule the other way.
        pool_block_rows: Pool candidates in memory at once.
        device: Torch device the ranking's score tiles are computed on.
        counts_folder: Where finished counts are kept (``query_rank/``, ``passage_rank/``), so a killed
            ranking resumes by (pool shard, probe block); None: not kept.

    Returns:
        ``query_rank`` and ``passage_rank`` (N,) int32 and ``score`` (N,) float32 (own pair's similarity).
    """
    rows = queries.layout.rows
    query_groups = np.arange(rows) if query_groups is None else query_groups
    passage_groups = np.arange(rows) if passage_groups is None else passage_groups
    own = own_scores(queries, passages)
    common = {"max_rank": max_rank, "pool_block_rows": pool_block_rows, "chunk": chunk, "device": device}
    kept = {name: None if counts_folder is None else counts_folder / name for name in ("query_rank", "passage_rank")}
    return {
        "query_rank": rank_of_own_in_store(queries, own, passages, pool, query_groups, desc="ranking passages", counts_folder=kept["query_rank"], **common),
        "passage_rank": rank_of_own_in_store(passages, own, queries, pool, passage_groups, desc="ranking queries", counts_folder=kept["passage_rank"],
                                             **common),
        "score": own,
    }


# ------------------------------------------------------------------------------------------------- I/O
class _PairShards:
    """The input shards as Parquet (a JSONL shard converted once, streaming), with every row's output
    shard name; rows are numbered across the shards in order, as the embedding stores number them."""

    def __init__(self, files: list[Path], staging: Path, block_rows: int) -> None:
        import pyarrow.parquet as pq

        self.files = files
        self.names = output_shard_names(files)
        self.parquet = [path if is_parquet(path) else _jsonl_as_parquet(path, staging / name, block_rows) for path, name in zip(files, self.names)]
        for source, path in zip(files, self.parquet):
            missing = {"query", "passage"} - set(pq.ParquetFile(path).schema_arrow.names)
            if missing:
                raise ValueError(f"{source}: not a pair shard (missing column(s) {sorted(missing)})")
        self.columns = {side: ParquetColumnBlocks(self.parquet, side, block_rows) for side in ("query", "passage")}
        self.rows_per_file = [pq.ParquetFile(path).metadata.num_rows for path in self.parquet]
        self.rows = sum(self.rows_per_file)

    def file_and_row(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows,) index of each row's shard and (rows,) its row number in that shard."""
        files = np.repeat(np.arange(len(self.parquet)), self.rows_per_file)
        return files, np.concatenate([np.arange(n) for n in self.rows_per_file]) if self.rows else np.empty(0, np.int64)


def _jsonl_as_parquet(path: Path, target: Path, block_rows: int) -> Path:
    """A JSONL shard's query, passage and source as Parquet, written block by block (a value that is not a
    string becomes null, which the filter counts as a pair without visible text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.string()) for name in ("query", "passage", "source")])
    target.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(target) as staged, pq.ParquetWriter(staged.temporary, schema) as writer:
        rows: list[tuple] = []
        for _, *values in iter_rows(path):
            rows.append(tuple(value if isinstance(value, str) else None for value in values))
            if len(rows) == block_rows:
                writer.write_table(pa.Table.from_pylist([dict(zip(schema.names, row)) for row in rows], schema=schema))
                rows = []
        writer.write_table(pa.Table.from_pylist([dict(zip(schema.names, row)) for row in rows], schema=schema))
    return target


@dataclass(frozen=True)
class _VisibleTexts:
    """A ``ReadBlock`` giving each row's text, or "" (an all-zero row, never embedded) where either side
    of the pair has no visible text: such pairs are never kept, only counted."""

    column: ParquetColumnBlocks
    visible: np.ndarray

    def __call__(self, block: int) -> list[str]:
        start = block * self.column.block_rows
        return [text if keep else "" for text, keep in zip(self.column(block), self.visible[start : start + self.column.block_rows])]


def _scan_pairs(shards: _PairShards) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(rows,) bool: both sides have visible text; and each side's (rows,) int64 text-key groups, block by block."""
    visible = np.empty(shards.rows, dtype=bool)
    groups = {side: np.zeros(shards.rows, dtype=np.int64) for side in shards.columns}
    for block in range(shards.columns["query"].blocks):
        start = block * shards.columns["query"].block_rows
        texts = {side: column(block) for side, column in shards.columns.items()}
        stop = start + len(texts["query"])
        visible[start:stop] = [
            isinstance(query, str) and isinstance(passage, str) and has_visible_text(query) and has_visible_text(passage)
            for query, passage in zip(texts["query"], texts["passage"])
        ]
        for side, column in texts.items():
            groups[side][start:stop] = [text_key_hash(text) if isinstance(text, str) else 0 for text in column]
    return visible, groups


def _write_outputs(shards: _PairShards, ranks: dict[str, np.ndarray], k: int, output_dir: Path, write_pairs: bool) -> None:
    """The keep-mask at ``k`` over the input shards (``mask.json``, ranks in ``scores.parquet``), and with
    ``write_pairs`` the kept rows copied into ``pairs/`` (else an earlier run's copy is removed, so no
    stale copy disagrees with the mask)."""
    if write_pairs:
        _write_kept(shards, keep_mask(ranks["query_rank"], ranks["passage_rank"], k), output_dir / PAIRS_FOLDER)
    else:
        shutil.rmtree(output_dir / PAIRS_FOLDER, ignore_errors=True)
    write_mask(output_dir, shards.files, shards.rows_per_file, SCORES_FILE, k)


def _write_kept(shards: _PairShards, kept: np.ndarray, pairs_dir: Path) -> None:
    """Each shard's kept rows, every column of a Parquet input, row group by row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # One folder, replaced whole: a later stage never reads a mix of old and new shards.
    with AtomicFolder(pairs_dir) as staged:
        offset = 0
        for path, name in zip(shards.parquet, shards.names):
            parquet = pq.ParquetFile(path)
            with pq.ParquetWriter(staged.temporary / name, parquet.schema_arrow) as writer:
                for group in range(parquet.metadata.num_row_groups):
                    table = parquet.read_row_group(group)
                    writer.write_table(table.filter(pa.array(kept[offset : offset + len(table)])))
                    offset += len(table)


def _report(ranks: dict[str, np.ndarray], k: int, extra: dict[str, Any]) -> dict[str, Any]:
    query_ok, passage_ok = ranks["query_rank"] <= k, ranks["passage_rank"] <= k
    kept = int((query_ok & passage_ok).sum())
    dropped = {
        f"query->passage rank > {k}": int((~query_ok).sum()),
        f"passage->query rank > {k} only": int((query_ok & ~passage_ok).sum()),
    }
    return {"read": len(query_ok), "kept": kept, "dropped": dropped, "k": k, **extra}


# --------------------------------------------------------------------------------------------- the stage
def _embed_sides(config: ConsistencyConfig, model: str, shards: _PairShards, visible: np.ndarray, folder: Path) -> dict[str, EmbeddingStore]:
    """Both sides embedded into stores under ``folder`` (resumed block by block after a kill), with ``config.engine``."""
    spec = EncoderSpec(model, max_length=config.max_length, similarity_fn_name=config.similarity_fn_name, device=config.device)
    # Loaded here under every engine: its weights' fingerprint names the stores (Ray actors load their own).
    encoder = spec.load()
    identity = {
        "encoder": encoder.fingerprint(),
        "max_length": config.max_length,
        "similarity": config.similarity_fn_name,
        "inputs": file_identity(shards.files),
    }
    stores = {}
    for side, column in shards.columns.items():
        layout = StoreLayout(rows=shards.rows, dimension=encoder.dimension, block_rows=config.block_rows, dtype=config.embedding_dtype,
                             fingerprint=store_fingerprint({**identity, "role": side}))
        store = open_or_replace_store(folder / side, layout)  # a store left by other inputs or another model is replaced
        embed_store(spec, _VisibleTexts(column, visible), store, role=side, engine=config.engine, workers=config.workers, batch_size=config.batch_size, encoder=encoder)
        stores[side] = store
    return stores


def _filter_once(config: ConsistencyConfig, model: str, shards: _PairShards, output_dir: Path) -> dict[str, Any] | None:
    """One filter round into ``output_dir`` (scores and kept pairs); returns its report, which the caller
    writes (None on a torchrun rank other than 0, which only embeds its share)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output_dir)
    visible, groups = _scan_pairs(shards)
    stores = _embed_sides(config, model, shards, visible, output_dir / EMBEDDINGS_DIR)
    if config.engine == "torchrun" and torchrun_rank()[0] != 0:
        return None
    embedded = time.perf_counter()
    candidates = np.flatnonzero(visible)
    pool_size = min(config.pool_size, len(candidates))
    pool = np.sort(np.random.default_rng(config.seed).choice(candidates, size=pool_size, replace=False)).astype(np.int64)
    ranks = consistency_ranks(stores["query"], stores["passage"], pool, config.max_rank, config.search_chunk, groups["query"], groups["passage"], config.pool_block_rows,
                               device=str(resolve_device(config.device)), counts_folder=output_dir / EMBEDDINGS_DIR / RANK_COUNTS_DIR)
    for name in ("query_rank", "passage_rank"):
        ranks[name][~visible] = config.max_rank + 1  # never kept; counted apart in the report
    searched = time.perf_counter()

    in_pool = np.zeros(shards.rows, dtype=bool)
    in_pool[pool] = True
    file_index, row = shards.file_and_row()
    scores = pa.table({
        "file": pa.DictionaryArray.from_arrays(pa.array(file_index, pa.int32()), pa.array(shards.names)),
        "row": pa.array(row, pa.int64()),
        "query_rank": ranks["query_rank"],
        "passage_rank": ranks["passage_rank"],
        "score": ranks["score"],
        "in_pool": in_pool,
        "visible": visible,
    })
    with AtomicFile(output_dir / SCORES_FILE) as staged:
        pq.write_table(scores, staged.temporary)
    _write_outputs(shards, ranks, config.k, output_dir, config.write_pairs)
    if not config.keep_embeddings:
        shutil.rmtree(output_dir / EMBEDDINGS_DIR, ignore_errors=True)
    report = _report({name: ranks[name][visible] for name in ranks}, config.k, {
        "model": model,
        "pool_size": pool_size,
        "max_rank": config.max_rank,
        "seed": config.seed,
        "input_paths": [str(path) for path in shards.files],
        "embed_s": round(embedded - started, 3),
        "search_s": round(searched - embedded, 3),
        "search_pairs_per_s": round(len(candidates) / max(searched - embedded, 1e-9), 1),
        "skipped_without_visible_text": int((~visible).sum()),
    })
    return report


def consistency_filter(config: ConsistencyConfig, train_fn: TrainFn | None = None) -> dict[str, Any]:
    """Run the filter (and, with ``iterations > 1``, filter/re-train rounds); returns the final report.

    Args:
        config: The stage settings.
        train_fn: Re-training step between iterations (``iterations > 1``): the caller hands it in
            (``e5kit filter consistency`` and the pipeline pass ``e5kit.training.trainer.pretrain_on``),
            so this data stage never imports the trainer.

    Raises:
        ValueError: ``iterations > 1`` without a ``train_fn``, or a Parquet shard without a query or passage column.
        e5kit.io.pairs.ShardError: a pairs path that names no pair shard, an unreadable shard, or two shards
            with one file name (naming them).
    """
    if config.iterations > 1 and train_fn is None:
        raise ValueError("iterations: re-training between iterations needs a train_fn (e.g. e5kit.training.trainer.pretrain_on)")
    files = resolve_shard_paths(config.pairs)
    (config.output_dir / "report.json").unlink(missing_ok=True)  # written again last: it marks a finished run
    shards = _PairShards(files, config.output_dir / INPUTS_DIR, config.block_rows)
    # Re-training scores as the filter ranks, unless its own settings say otherwise.
    retrain_settings = {"similarity_fn_name": config.similarity_fn_name, **config.train}
    model = config.model
    history = []
    for iteration in range(config.iterations):
        last = iteration == config.iterations - 1
        round_dir = config.output_dir if last else config.output_dir / f"iter-{iteration}"
        report = _filter_once(config, model, shards, round_dir)
        if report is None:  # a torchrun rank other than 0: its share is embedded, rank 0 ranks and writes
            return {}
        history.append({"iteration": iteration, "model": model, "kept": report["kept"], "read": report["read"]})
        if not last:
            write_text_atomic(round_dir / "report.json", json.dumps(report, indent=2))
            model = str(train_fn(model, round_dir, config.output_dir / f"iter-{iteration}" / "model", retrain_settings))
    report["iterations"] = history
    shutil.rmtree(config.output_dir / INPUTS_DIR, ignore_errors=True)
    write_text_atomic(config.output_dir / "report.json", json.dumps(report, indent=2))
    return report


def reapply_k(output_dir: str | Path, k: int) -> dict[str, Any]:
    """Apply a new k to the ranks stored by an earlier run, rewriting ``pairs/`` without re-embedding.

    Raises:
        ValueError: when there is no earlier run or k exceeds the stored depth.
    """
    import pyarrow.parquet as pq

    output_dir = Path(output_dir)
    report_path, scores_path = output_dir / "report.json", output_dir / SCORES_FILE
    if not scores_path.is_file() or not report_path.is_file():
        raise ValueError(f"{output_dir}: no {SCORES_FILE}/report.json from an earlier consistency run")
    previous = json.loads(report_path.read_text(encoding="utf-8"))
    if k > previous["max_rank"]:
        raise ValueError(f"k ({k}) must be <= max_rank ({previous['max_rank']}) of the stored ranks; re-run with a larger max_rank")
    if "visible" not in pq.ParquetFile(scores_path).schema_arrow.names:
        raise ValueError(f"{scores_path}: ranks written by an older e5kit (rows numbered without the pairs lacking visible text); run the filter again")
    scores = pq.read_table(scores_path, columns=["query_rank", "passage_rank", "score", "visible"])
    shards = _PairShards([Path(path) for path in previous["input_paths"]], output_dir / INPUTS_DIR, DEFAULT_BLOCK_ROWS)
    if shards.rows != len(scores):
        raise ValueError(f"{output_dir}: the input pairs changed since the ranks were computed ({shards.rows} rows now, {len(scores)} scored)")
    ranks = {name: scores.column(name).to_numpy() for name in ("query_rank", "passage_rank", "score")}
    _write_outputs(shards, ranks, k, output_dir, (output_dir / PAIRS_FOLDER).is_dir())
    shutil.rmtree(output_dir / INPUTS_DIR, ignore_errors=True)
    visible = scores.column("visible").to_numpy()
    carried = {key: value for key, value in previous.items() if key not in ("read", "kept", "dropped", "k")}
    report = _report({name: ranks[name][visible] for name in ranks}, k, carried)
    write_text_atomic(report_path, json.dumps(report, indent=2))
    return report


class ConsistencyStage(Stage[ConsistencyConfig]):
    """The consistency filter as a stage (``e5kit.stage``): reads pair shards (and its judge), writes
    ``scores.parquet`` and the keep-mask (``mask.json``; with ``write_pairs`` the kept ``pairs/`` too);
    resumes its embedding blocks after a kill.

    Args:
        config: The filter's settings.
        train_fn: Re-training between rounds (``iterations > 1``), as for :func:`consistency_filter`.
    """

    name = "consistency"
    config_class = ConsistencyConfig
    # How the blocks are embedded and ranked, never what: the stores are byte-identical across engines and
    # the ranks exact whatever the tile and shard sizes (tested).
    runtime_fields: ClassVar[frozenset[str]] = frozenset(
        {"engine", "workers", "batch_size", "device", "keep_embeddings", "search_chunk", "pool_block_rows"}
    )
    resumable = True

    def __init__(self, config: ConsistencyConfig, train_fn: TrainFn | None = None) -> None:
        super().__init__(config)
        self.train_fn = train_fn

    def inputs(self) -> list[Path]:
        return [*resolve_shard_paths(self.config.pairs), *local_model(self.config.model)]

    def outputs(self) -> dict[str, Path]:
        # The filtered dataset is the keep-mask folder itself (training reads through it).
        return {"pairs": self.output_dir, "scores": self.output_dir / SCORES_FILE}

    def execute(self, log: Callable[[str], None]) -> dict[str, Any]:
        report = consistency_filter(self.config, train_fn=self.train_fn)
        if report:  # empty on a torchrun rank other than 0
            log(f"  consistency filter (k={report['k']}) kept {report['kept']} of {report['read']} pairs")
        return report
