"""Streaming (query, passage) pair shards with weighted multi-source sampling and an exact resumable position.

Shards are Parquet files (string columns ``query``, ``passage``, ``source``, ``meta``) or JSONL lines
(plain, or compressed as .gz, .bz2, .xz, .lzma or .zst: the decompression layer's list, ``e5kit.io.files``)
with ``query``, ``passage`` and optional ``source``; a missing source is the file's stem. Files
are read in record batches (never whole), one open reader per source. A keep-mask folder (the
consistency filter's output, ``e5kit.io.pairs.read_mask``) is read through: the rows it drops are
passed over as they are read, so training on it equals training on the kept rows copied out.

Sampling is ``e5kit.data.mixture.MixtureSampler`` (the one weighted, resumable mixture, which fine-tuning
uses too) over one ``SourceStream`` per source: a pure function of ``(seed, batch number)`` plus each
source's read position, so the sampler's state is a few integers per source: ``state_dict()`` after
batch n, loaded into a fresh sampler, continues with exactly batch n + 1.
"""

from __future__ import annotations

import itertools
import logging
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from e5kit.data.mixture import MixtureSampler
from e5kit.io.pairs import Pair, PairShard, ShardError, is_parquet, resolve_pair_shards, shard_stem
from e5kit.io.tables import iter_jsonl
from e5kit.io.text import has_visible_text

logger = logging.getLogger(__name__)

#: Rows converted to Python at a time when reading Parquet.
READ_BATCH_ROWS = 1024


def _parquet_file(path: Path):
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    missing = [column for column in ("query", "passage") if column not in names]
    if missing:
        raise ShardError(f"{path}: missing column(s) {', '.join(missing)} (columns: {', '.join(names)})")
    return parquet


def count_sources(path: Path, keep: np.ndarray | None = None) -> Counter:
    """Rows per source in one shard, reading only the ``source`` column (or just the footer statistics);
    with ``keep`` ((rows,) bool, a keep-mask's), only the kept rows (a source none of whose rows is kept
    is absent, as from a copy of the kept rows)."""
    if is_parquet(path):
        parquet = _parquet_file(path)
        names = parquet.schema_arrow.names
        single = shard_stem(path) if "source" not in names else _single_value_from_statistics(parquet.metadata, names.index("source"))
        if single is not None:
            rows = parquet.metadata.num_rows if keep is None else int(keep.sum())
            return Counter({single: rows} if rows else {})
    sources = _row_sources(path)
    return Counter(sources if keep is None else itertools.compress(sources, keep))


def _row_sources(path: Path) -> Iterator[str]:
    """Each row's source, the file's stem where it has none (as ``iter_rows``), reading only the
    ``source`` column of a Parquet shard."""
    if is_parquet(path):
        for batch in _parquet_file(path).iter_batches(batch_size=65536, columns=["source"]):
            yield from (source or shard_stem(path) for source in batch.column(0).to_pylist())
        return
    yield from (record.get("source") or shard_stem(path) for _, record in iter_jsonl(path))


def _single_value_from_statistics(metadata, column: int) -> str | None:
    """The one value of a column when every row group's statistics say min == max == it (no nulls)."""
    values = set()
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(column).statistics
        if statistics is None or not statistics.has_min_max or statistics.null_count:
            return None
        if statistics.min != statistics.max:
            return None
        values.add(statistics.min)
    return values.pop() if len(values) == 1 and values != {""} else None


def iter_rows(path: Path, start: int = 0) -> Iterator[tuple[int, Any, Any, str]]:
    """Yield (row index, query, passage, source) from row ``start`` on; values are not validated here."""
    if is_parquet(path):
        parquet = _parquet_file(path)
        columns = [c for c in ("query", "passage", "source") if c in parquet.schema_arrow.names]
        group_start, first_group = 0, 0
        while first_group < parquet.metadata.num_row_groups:
            rows_in_group = parquet.metadata.row_group(first_group).num_rows
            if group_start + rows_in_group > start:
                break
            group_start += rows_in_group
            first_group += 1
        groups = list(range(first_group, parquet.metadata.num_row_groups))
        if not groups:
            return
        row = group_start
        for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns, row_groups=groups):
            values = {name: batch.column(i).to_pylist() for i, name in enumerate(columns)}
            sources = values.get("source") or [None] * batch.num_rows
            for query, passage, source in zip(values["query"], values["passage"], sources):
                if row >= start:
                    yield row, query, passage, source or shard_stem(path)
                row += 1
        return
    for row, (_, record) in enumerate(iter_jsonl(path)):
        if row >= start:
            yield row, record.get("query"), record.get("passage"), record.get("source") or shard_stem(path)


def invalid_reason(query: Any, passage: Any) -> str | None:
    """Why a row cannot be a training pair, or None when it can."""
    for name, value in (("query", query), ("passage", passage)):
        if not isinstance(value, str):
            return f"{name} missing or not a string"
        if not has_visible_text(value):
            return f"{name} has no visible text"
    return None


@dataclass
class SourcePosition:
    """Where a source's reader stands: pass ``epoch`` over its files, ``file_index`` in that pass's order, next ``row``."""

    epoch: int = 0
    file_index: int = 0
    row: int = 0


@dataclass
class SourceStream:
    """An endless stream of one source's pairs over its files (re-read in a new seeded order each pass)."""

    name: str
    files: list[Path]
    seed: int
    keep: dict[Path, np.ndarray] = field(default_factory=dict)  # a keep-mask's rows per file; absent: every row
    position: SourcePosition = field(default_factory=SourcePosition)
    skipped: Counter = field(default_factory=Counter)
    _rows: Iterator | None = None

    def file_order(self, epoch: int) -> list[Path]:
        if epoch == 0:
            return list(self.files)
        generator = np.random.default_rng([self.seed, zlib.crc32(self.name.encode("utf-8")), epoch])
        return [self.files[i] for i in generator.permutation(len(self.files))]

    def take(self, count: int, generator: np.random.Generator | None = None) -> list[Pair]:
        """The next ``count`` valid pairs; invalid rows are skipped and counted (first pass only).
        ``generator`` (the mixture's) is not used: a source's pairs come in file order."""
        pairs: list[Pair] = []
        empty_passes = 0
        while len(pairs) < count:
            path = self.file_order(self.position.epoch)[self.position.file_index]
            if self._rows is None:
                self._rows = iter_rows(path, self.position.row)
            keep = self.keep.get(path)
            valid_before = len(pairs)
            for row, query, passage, source in self._rows:
                self.position.row = row + 1
                if keep is not None:
                    if row >= len(keep):
                        raise ShardError(f"{path}: more rows than its keep-mask was written for ({len(keep)}); the shard changed since it was filtered")
                    if not keep[row]:
                        continue
                if source != self.name:  # a shard holding several sources: those rows feed other streams
                    continue
                reason = invalid_reason(query, passage)
                if reason is not None:
                    if self.position.epoch == 0:
                        self.skipped[reason] += 1
                    continue
                pairs.append(Pair(query, passage, source=self.name))
                if len(pairs) == count:
                    return pairs
            self._next_file()
            empty_passes = 0 if len(pairs) > valid_before else empty_passes + 1
            if empty_passes > len(self.files):
                raise ShardError(f"source {self.name!r}: no valid pair in {', '.join(map(str, self.files))} (skipped: {dict(self.skipped)})")
        return pairs

    def _next_file(self) -> None:
        self._rows = None
        self.position.row = 0
        self.position.file_index += 1
        if self.position.file_index == len(self.files):
            self.position = SourcePosition(epoch=self.position.epoch + 1)

    def seek(self, position: SourcePosition) -> None:
        self.position = SourcePosition(**vars(position))
        self._rows = None

    def state_dict(self) -> dict[str, Any]:
        """The read position: ``{"epoch", "file_index", "row"}``."""
        return vars(self.position).copy()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seek(SourcePosition(**state))


class PairSampler(MixtureSampler):
    """Global batches of pairs drawn across sources by weight, optionally one source per batch
    (``MixtureSampler`` over one ``SourceStream`` per source).

    Args:
        paths: Shard files, folders, globs or keep-mask folders (``e5kit.io.pairs.resolve_pair_shards``).
        batch_size: Pairs per batch.
        source_weights: Source -> weight; None weighs sources by their number of rows.
        seed: Seed of the sampling (and of the file order after the first pass).
        source_homogeneous: Draw each batch from one source (chosen by weight).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        batch_size: int,
        source_weights: dict[str, float] | None = None,
        seed: int = 0,
        source_homogeneous: bool = False,
    ) -> None:
        shards: list[PairShard] = resolve_pair_shards(paths)
        self.files = [shard.path for shard in shards]
        keep = {shard.path: shard.keep for shard in shards if shard.keep is not None}
        files_by_source: dict[str, list[Path]] = {}
        self.rows_by_source: Counter = Counter()
        for shard in shards:
            counts = count_sources(shard.path, shard.keep)
            for source, rows in counts.items():
                files_by_source.setdefault(source, []).append(shard.path)
                self.rows_by_source[source] += rows
        if not self.rows_by_source:
            raise ShardError(f"no rows in {', '.join(map(str, self.files))}")
        self.weights = self._resolve_weights(source_weights)
        streams = {name: SourceStream(name, files_by_source[name], seed, keep) for name in self.weights}
        super().__init__(streams, self.weights, batch_size=batch_size, seed=seed, source_homogeneous=source_homogeneous)
        self.streams: dict[str, SourceStream] = self.sources

    def _resolve_weights(self, source_weights: dict[str, float] | None) -> dict[str, float]:
        if source_weights is None:
            return {name: float(rows) for name, rows in self.rows_by_source.items() if rows}
        unknown = sorted(set(source_weights) - set(self.rows_by_source))
        if unknown:
            raise ShardError(
                f"data.source_weights names source(s) not in the data: {', '.join(unknown)} "
                f"(found: {', '.join(sorted(self.rows_by_source))})"
            )
        unweighted = sorted(set(self.rows_by_source) - set(source_weights))
        if unweighted:
            logger.warning("sources without a weight in data.source_weights are not sampled: %s", ", ".join(unweighted))
        return {name: weight for name, weight in source_weights.items() if weight > 0}

    @property
    def skipped(self) -> dict[str, int]:
        """Invalid rows skipped so far, by "source: reason"."""
        return {f"{name}: {reason}": n for name, stream in self.streams.items() for reason, n in stream.skipped.items()}

    def missing_state_error(self, names: list[str]) -> Exception:
        return ShardError(f"the saved data position has no entry for source(s) {', '.join(names)}; the data changed since the checkpoint")

    def state_dict(self) -> dict[str, Any]:
        """The exact read position (JSON-serialisable): the mixture's, plus the skipped-row counts."""
        return {**super().state_dict(), "skipped": {name: dict(stream.skipped) for name, stream in self.streams.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict()``; the shards must hold the same sources."""
        super().load_state_dict(state)
        for name, stream in self.streams.items():
            stream.skipped = Counter(state.get("skipped", {}).get(name, {}))
