"""CCPairs-style curation: raw dumps -> filtered (query, passage) pair shards plus a report.

The stage as steps, one module each:

- ``config``: the settings, validated without side effects (``CurateConfig``, ``SourceConfig``, ``FiltersConfig``).
- ``registry``: readers and filters by name, filters in the order they run; a new one is one entry there.
- ``planner``: input files (globs, checks before any work), decontamination indexes, one ``ShardTask`` per shard.
- ``shard``: the per-shard pass (reader, query-role coin, the shard filters, dedup keys) into ``work/``,
  with a done marker, so a rerun skips finished shards (resumable).
- ``executors``: where shards run, ``local`` (worker processes that end with this process, even after
  kill -9) or ``ray`` (Ray Data); both give identical outputs.
- ``dedup``: one global pass in a fixed order, exact then near duplicates across all shards, on Arrow key
  columns, into the final ``pairs/<source>-<NNNNN>.parquet`` (string columns query, passage, source, meta).
- ``report``: ``report.json``, ``report.md`` and length histograms; per source ``read == kept + sum(dropped)``.

Every filter, the dedup ones included, follows one protocol (``e5kit.data.filters.base.Filter``:
``keep(pair)`` -> True or a drop reason). Every file is written whole or not at all
(``e5kit.io.files.AtomicFile``, under a temporary name unique to the process), so after kill -9 at any
point a rerun gives the uninterrupted run's output; the temporary files of ended processes are removed.

Example:
    >>> report = curate(CurateConfig(output_dir="out", sources=[{"type": "news", "paths": ["news.jsonl"]}]))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from e5kit.data.curation import dedup, executors, planner
from e5kit.data.curation.config import CurateConfig, FiltersConfig, SourceConfig
from e5kit.data.curation.report import build_report, histogram, report_markdown, source_entry
from e5kit.data.curation.shard import write_json_atomic
from e5kit.io.files import remove_stale_temporaries, write_text_atomic
from e5kit.stage import Stage

__all__ = ["CurateConfig", "CurateStage", "FiltersConfig", "SourceConfig", "curate"]


def curate(config: CurateConfig) -> dict[str, Any]:
    """Run the whole curation stage; returns the report (also written to ``output_dir``).

    Raises:
        ConfigError: an input file or model the config names cannot be read (before any work).
        RuntimeError: the counts do not reconcile.
    """
    started = time.perf_counter()
    planner.check_inputs(config)
    output_dir = Path(config.output_dir)
    work_dir = output_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    for folder in (output_dir, work_dir, output_dir / "pairs"):
        remove_stale_temporaries(folder)
    eval_indexes, eval_info = planner.build_eval_indexes(config, work_dir)
    tasks = planner.plan_tasks(config, work_dir, eval_indexes)
    results = executors.EXECUTORS[config.engine](tasks, config.workers)
    for name in ("report.json", "report.md"):  # the report marks a finished run: gone while the final shards are rewritten
        (output_dir / name).unlink(missing_ok=True)
    totals = dedup.merge(config, tasks, results)

    histogram_dir = output_dir / "histograms"
    histogram_dir.mkdir(exist_ok=True)
    sources: dict[str, Any] = {}
    for source in config.sources:
        histogram(histogram_dir / f"{source.name}.png", source.name, totals[source.name], config.histogram_bins)
        sources[source.name] = source_entry(source.type, source.name, totals[source.name])
    report = build_report(
        sources,
        engine=config.engine,
        workers=config.workers,
        shards=len(tasks),
        resumed_shards=sum(bool(r.get("resumed")) for r in results),
        elapsed_s=round(time.perf_counter() - started, 3),
        pair_files=sorted(str(p.relative_to(output_dir)) for p in (output_dir / "pairs").glob("*.parquet")),
        eval_indexes=eval_info,
        config=config.model_dump(mode="json"),
    )
    write_json_atomic(output_dir / "report.json", report)
    write_text_atomic(output_dir / "report.md", report_markdown(report))
    if not report["reconciled"]:
        raise RuntimeError(f"curation counts do not reconcile (read != kept + dropped); see {output_dir / 'report.json'}")
    return report


class CurateStage(Stage[CurateConfig]):
    """Curation as a stage (``e5kit.stage``): reads every source file, writes ``pairs/``; resumes finished shards."""

    name = "curate"
    config_class = CurateConfig
    runtime_fields: ClassVar[frozenset[str]] = frozenset({"engine", "workers"})  # same shards either way (tested)
    resumable = True

    def inputs(self) -> list[Path]:
        return [path for source in self.config.sources for path in planner.source_files(source)]

    def outputs(self) -> dict[str, Path]:
        return {"pairs": self.output_dir / "pairs"}

    def execute(self, log: Callable[[str], None]) -> dict[str, Any]:
        report = curate(self.config)
        totals = report["totals"]
        log(f"  read {totals['read']}, kept {totals['kept']}; dropped by reason: {totals['dropped']}")
        return report
