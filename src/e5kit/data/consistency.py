"""Consistency-based filtering (E5 section 1): keep a pair only if a preliminary model finds it again.

For every pair i, its query ranks its own passage among a random pool of P passages (plus its own),
and its passage ranks its own query among the same pool's queries (plus its own). The pair is kept
iff both ranks are <= k (E5: k = 2, pool ~1M). Where we differ on purpose: a pool passage whose pair
has the same query text (``normalized_text_key``), e.g. another paragraph of the same Wikipedia
section or another reply to the same comment, answers the query too and is not counted against it
(likewise a pool query whose pair has the same passage); E5's pairs mostly have one passage per query,
and without this rule such sources lose nearly all their pairs. Ranks are computed with exact FAISS inner-product
search in chunks and stored per pair, capped at ``max_rank``, in ``scores.parquet``, so any new
k <= max_rank is applied later without re-embedding (``reapply_k``). ``iterations > 1`` alternates
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from e5kit.data.shards import iter_rows
from e5kit.io.files import AtomicFile, AtomicFolder, remove_stale_temporaries, write_text_atomic
from e5kit.io.hashing import text_key_hash
from e5kit.io.pairs import is_parquet, output_shard_names, resolve_shard_paths
from e5kit.io.text import has_visible_text
from e5kit.retrieval.dense import rank_of_own

#: (init model, pairs folder, output folder, extra settings) -> trained model directory.
TrainFn = Callable[[str, Path, Path, dict[str, Any]], Path]
SCORES_FILE = "scores.parquet"


class ConsistencyConfig(BaseModel):
    """The consistency filter stage.

    Attributes:
        pairs: Pair shards (Parquet, or JSONL plain or compressed): files, folders holding them (a stage's
            output folder means its pairs/) or globs, found by ``e5kit.io.pairs.resolve_shard_paths``.
        model: Preliminary model (directory, bundled name or Hub id) that embeds both sides.
        output_dir: Receives pairs/ (kept pairs, one ``<stem>.parquet`` per input shard), scores.parquet, report.json.
        pool_size: Random pool P of other pairs to rank against (capped at the data size).
        k: Keep a pair when both of its ranks are <= k.
        max_rank: Ranks above are stored as max_rank + 1; bounds the k a re-apply can use.
        seed: Seed of the pool draw.
        batch_size: Texts per forward pass when embedding.
        search_chunk: Probe vectors per FAISS search call (memory ~ search_chunk x (max_rank + 1)).
        max_length: Token limit when embedding (default: the model's own).
        device: Torch device for embedding.
        similarity_fn_name: The ranking score: "cosine" (E5; L2-normalised embeddings whatever the
            model ships) or "dot" (raw dot products; only when asked for).
        iterations: Filter -> re-train rounds; the last round's filter is the output.
        train: Extra pre-training settings for re-training rounds (e.g. max_steps, batch_size, chunk_size).
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
    search_chunk: int = Field(default=4096, ge=1)
    max_length: int | None = None
    device: str | None = None
    similarity_fn_name: Literal["cosine", "dot"] = "cosine"
    iterations: int = Field(default=1, ge=1)
    train: dict[str, Any] = {}

    @model_validator(mode="after")
    def _k_within_stored_ranks(self) -> ConsistencyConfig:
        if self.k > self.max_rank:
            raise ValueError(f"k ({self.k}) must be <= max_rank ({self.max_rank}), the deepest rank stored")
        return self


# ------------------------------------------------------------------------------------------------ math
def consistency_ranks(
    queries: np.ndarray,
    passages: np.ndarray,
    pool: np.ndarray,
    max_rank: int,
    chunk: int,
    query_groups: np.ndarray | None = None,
    passage_groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Both directions: the passage's rank for its query, and the query's rank for its passage.

    Args:
        queries: (N, d) query embeddings; passages: (N, d) passage embeddings (row i = pair i).
        pool: (P,) pair indices forming the random pool.
        query_groups: (N,) int64 id of each pair's query text (``text_key_hash``): a pool passage whose
            pair has the same query is another answer to it, not a competitor (Wikipedia sections with
            several paragraphs, a comment with several replies). None: only the pair's own passage.
        passage_groups: (N,) int64 id of each pair's passage text, the same rule the other way.

    Returns:
        ``query_rank`` and ``passage_rank`` (N,) int32 and ``score`` (N,) float32 (own pair's similarity).
    """
    query_groups = np.arange(len(queries)) if query_groups is None else query_groups
    passage_groups = np.arange(len(passages)) if passage_groups is None else passage_groups
    return {
        "query_rank": rank_of_own(queries, passages, passages[pool], query_groups[pool], max_rank, chunk, query_groups),
        "passage_rank": rank_of_own(passages, queries, queries[pool], passage_groups[pool], max_rank, chunk, passage_groups),
        "score": np.einsum("nd,nd->n", queries, passages).astype(np.float32),
    }


def keep_mask(query_rank: np.ndarray, passage_rank: np.ndarray, k: int) -> np.ndarray:
    """Keep iff both ranks are within k."""
    return (query_rank <= k) & (passage_rank <= k)


# ------------------------------------------------------------------------------------------------- I/O
def _shard_table(path: Path):
    """A pair shard as an Arrow table: a Parquet shard whole (its other columns are kept in the output), a
    JSONL shard as its query, passage and source (``e5kit.data.shards.iter_rows``; a value that is not a
    string becomes null, which ``_read_pairs`` leaves out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if is_parquet(path):
        return pq.read_table(path)
    rows = [(query, passage, source) for _, query, passage, source in iter_rows(path)]
    return pa.table({
        name: pa.array([row[i] if isinstance(row[i], str) else None for row in rows], type=pa.string())
        for i, name in enumerate(("query", "passage", "source"))
    })


def _read_pairs(files: list[Path]):
    """(all pairs with their output shard name in ``_file``, number of pairs left out for a side without visible text).

    Curation never writes such pairs; shards from elsewhere may hold them, and the encoder refuses them.

    Raises:
        e5kit.io.pairs.ShardError: two shards share a file name (``output_shard_names``).
        ValueError: a Parquet shard without a query or passage column, naming it.
    """
    import pyarrow as pa

    tables, invisible = [], 0
    for path, name in zip(files, output_shard_names(files), strict=True):
        table = _shard_table(path)
        missing = {"query", "passage"} - set(table.column_names)
        if missing:
            raise ValueError(f"{path}: not a pair shard (missing column(s) {sorted(missing)})")
        visible = [
            isinstance(query, str) and isinstance(passage, str) and has_visible_text(query) and has_visible_text(passage)
            for query, passage in zip(table.column("query").to_pylist(), table.column("passage").to_pylist())
        ]
        invisible += len(visible) - sum(visible)
        table = table.filter(pa.array(visible, type=pa.bool_()))
        tables.append(table.append_column("_file", pa.array([name] * len(table))))
    return pa.concat_tables(tables, promote_options="default"), invisible


def _write_kept(table, kept: np.ndarray, pairs_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    kept_table = table.filter(pa.array(kept))
    # One folder, replaced whole: a later stage never reads a mix of old and new shards.
    with AtomicFolder(pairs_dir) as staged:
        for name in sorted(set(table.column("_file").to_pylist())):
            part = kept_table.filter(pc.equal(kept_table.column("_file"), name)).drop_columns(["_file"])
            pq.write_table(part, staged.temporary / name)


def _report(ranks: dict[str, np.ndarray], k: int, extra: dict[str, Any]) -> dict[str, Any]:
    query_ok, passage_ok = ranks["query_rank"] <= k, ranks["passage_rank"] <= k
    kept = int((query_ok & passage_ok).sum())
    dropped = {
        f"query->passage rank > {k}": int((~query_ok).sum()),
        f"passage->query rank > {k} only": int((query_ok & ~passage_ok).sum()),
    }
    return {"read": len(query_ok), "kept": kept, "dropped": dropped, "k": k, **extra}


# --------------------------------------------------------------------------------------------- the stage
def _filter_once(config: ConsistencyConfig, model: str, table, files: list[Path], output_dir: Path) -> dict[str, Any]:
    """One filter round into ``output_dir`` (scores and kept pairs); returns its report, which the caller writes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from e5kit.encoder import Encoder

    started = time.perf_counter()
    encoder = Encoder.load(model, max_length=config.max_length, similarity_fn_name=config.similarity_fn_name, device=config.device)
    texts = {side: table.column(side).to_pylist() for side in ("query", "passage")}
    queries = encoder.encode(texts["query"], role="query", batch_size=config.batch_size, show_progress=True)
    passages = encoder.encode(texts["passage"], role="passage", batch_size=config.batch_size, show_progress=True)
    embedded = time.perf_counter()
    count = len(queries)
    pool_size = min(config.pool_size, count)
    pool = np.sort(np.random.default_rng(config.seed).choice(count, size=pool_size, replace=False)).astype(np.int64)
    groups = {side: np.array([text_key_hash(text) for text in column], dtype=np.int64) for side, column in texts.items()}
    ranks = consistency_ranks(queries, passages, pool, config.max_rank, config.search_chunk, groups["query"], groups["passage"])
    searched = time.perf_counter()

    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output_dir)
    in_pool = np.zeros(count, dtype=bool)
    in_pool[pool] = True
    scores = pa.table({
        "file": table.column("_file"),
        "row": pa.array(np.concatenate([np.arange(n) for n in _rows_per_file(table)]) if count else np.empty(0, np.int64)),
        "query_rank": ranks["query_rank"],
        "passage_rank": ranks["passage_rank"],
        "score": ranks["score"],
        "in_pool": in_pool,
    })
    with AtomicFile(output_dir / SCORES_FILE) as staged:
        pq.write_table(scores, staged.temporary)
    _write_kept(table, keep_mask(ranks["query_rank"], ranks["passage_rank"], config.k), output_dir / "pairs")
    report = _report(ranks, config.k, {
        "model": model,
        "pool_size": pool_size,
        "max_rank": config.max_rank,
        "seed": config.seed,
        "input_paths": [str(path) for path in files],
        "embed_s": round(embedded - started, 3),
        "search_s": round(searched - embedded, 3),
        "search_pairs_per_s": round(count / max(searched - embedded, 1e-9), 1),
    })
    return report


def _rows_per_file(table) -> list[int]:
    names = table.column("_file").to_pylist()
    counts: list[int] = []
    previous = None
    for name in names:
        if name != previous:
            counts.append(0)
            previous = name
        counts[-1] += 1
    return counts


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
    table, invisible = _read_pairs(files)
    # Re-training scores as the filter ranks, unless its own settings say otherwise.
    retrain_settings = {"similarity_fn_name": config.similarity_fn_name, **config.train}
    model = config.model
    history = []
    for iteration in range(config.iterations):
        last = iteration == config.iterations - 1
        round_dir = config.output_dir if last else config.output_dir / f"iter-{iteration}"
        report = _filter_once(config, model, table, files, round_dir)
        history.append({"iteration": iteration, "model": model, "kept": report["kept"], "read": report["read"]})
        if not last:
            write_text_atomic(round_dir / "report.json", json.dumps(report, indent=2))
            model = str(train_fn(model, round_dir / "pairs", config.output_dir / f"iter-{iteration}" / "model", retrain_settings))
    report["iterations"] = history
    report["skipped_without_visible_text"] = invisible
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
    scores = pq.read_table(scores_path)
    table, _ = _read_pairs([Path(path) for path in previous["input_paths"]])
    if len(table) != len(scores):
        raise ValueError(f"{output_dir}: the input pairs changed since the ranks were computed ({len(table)} rows now, {len(scores)} scored)")
    ranks = {name: scores.column(name).to_numpy() for name in ("query_rank", "passage_rank", "score")}
    _write_kept(table, keep_mask(ranks["query_rank"], ranks["passage_rank"], k), output_dir / "pairs")
    carried = {key: value for key, value in previous.items() if key not in ("read", "kept", "dropped", "k")}
    report = _report(ranks, k, carried)
    write_text_atomic(report_path, json.dumps(report, indent=2))
    return report
