"""The global pass: dedup across all shards in one fixed order (sources in config order, shards in
order), then the final ``pairs/<source>-<NNNNN>.parquet`` shards.

Each work shard is read in batches of Arrow columns: the global filters of ``registry.FILTERS`` (exact,
then near dedup) each turn their key column into a keep mask over the rows still kept, and the kept
rows go to the source's writer as Arrow slices; only a dropped pair's provenance is decoded (for the
report's file and line). pairs/ is written whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from e5kit.data.curation.config import CurateConfig
from e5kit.data.curation.parquet import WORD_COLUMNS, WRITE_BATCH, ParquetWriter, pair_schema
from e5kit.data.curation.planner import ShardTask
from e5kit.data.curation.registry import FILTERS, Resources, is_active, settings_of
from e5kit.data.curation.report import SourceTotals
from e5kit.data.curation.shard import location
from e5kit.data.skips import SkipCounter
from e5kit.io.files import AtomicFolder
from e5kit.progress import progress_bar


def merge(config: CurateConfig, tasks: list[ShardTask], results: list[dict[str, Any]]) -> dict[str, SourceTotals]:
    """Global dedup in config order and the final shards; returns per-source totals."""
    pairs_dir = config.output_dir / "pairs"
    # pairs/ is written whole or not at all, so a kill while the final shards are written leaves the previous
    # complete set (or none), never a mix that training would take as complete; a rerun rewrites this run's
    # sources from scratch and keeps the shards of other sources gathered in the same folder.
    staged = AtomicFolder(pairs_dir)
    curated = {source.name for source in config.sources}
    for shard in sorted(pairs_dir.glob("*.parquet")) if pairs_dir.is_dir() else []:
        if shard.name.rsplit("-", 1)[0] not in curated:
            try:
                os.link(shard, staged.temporary / shard.name)
            except OSError:  # a file system without hard links
                shutil.copy2(shard, staged.temporary / shard.name)
    try:
        totals = write_final_shards(config, tasks, results, staged.temporary)
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    return totals


class _SourceShards:
    """The final shards of one source: files of ``shard_size`` pairs, numbered from 0, opened on the first pair."""

    def __init__(self, pairs_dir: Path, source: str, shard_size: int) -> None:
        self.pairs_dir, self.source, self.shard_size = pairs_dir, source, shard_size
        self.writer: ParquetWriter | None = None
        self.files = 0

    def add(self, table) -> None:
        start = 0
        while start < table.num_rows:
            if self.writer is None or self.writer.count >= self.shard_size:
                self.close()
                self.writer = ParquetWriter(self.pairs_dir / f"{self.source}-{self.files:05d}.parquet", pair_schema(with_dedup=False))
                self.files += 1
            take = min(self.shard_size - self.writer.count, table.num_rows - start)
            self.writer.add_table(table.slice(start, take))
            start += take

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def write_final_shards(config: CurateConfig, tasks: list[ShardTask], results: list[dict[str, Any]], pairs_dir: Path) -> dict[str, SourceTotals]:
    shared: dict[tuple, Any] = {}  # (filter name, shared_by key) -> the global filter instance sources share
    totals = {source.name: SourceTotals() for source in config.sources}
    outputs = {source.name: _SourceShards(pairs_dir, source.name, config.shard_size) for source in config.sources}
    for task, result in progress_bar(list(zip(tasks, results)), desc="dedup + write", unit="shard", show=len(tasks) > 1):
        total = totals[task.source_name]
        total.read += result["read"]
        total.dropped.merge(SkipCounter.from_json(result["dropped"], result["drop_where"]))
        total.shards += 1
        total.resumed += bool(result.get("resumed"))
        steps = []
        for entry in FILTERS:
            if entry.stage == "global" and is_active(task.filters, entry):
                settings = settings_of(task.filters, entry)
                key = (entry.name, entry.shared_by(settings))
                if key not in shared:
                    shared[key] = entry.build(settings, Resources())
                steps.append((entry.column, shared[key]))
        for batch in pq.ParquetFile(Path(task.work_dir) / f"{task.stem}.parquet").iter_batches(batch_size=WRITE_BATCH):
            keep = np.ones(batch.num_rows, dtype=bool)
            for column, step in steps:
                kept = step.keep_keys(batch.column(column), keep)
                for row in np.flatnonzero(keep & ~kept).tolist():
                    total.dropped.add(f"{step.name}: {step.reason}", *location(json.loads(batch.column("meta")[row].as_py())))
                keep &= kept
            if not keep.all():
                batch = batch.filter(keep)
            if batch.num_rows:
                outputs[task.source_name].add(pa.Table.from_batches([batch]))
                total.kept += batch.num_rows
                for name in WORD_COLUMNS:
                    getattr(total, name).append(batch.column(name).to_numpy())
    for output in outputs.values():
        output.close()
    return totals
