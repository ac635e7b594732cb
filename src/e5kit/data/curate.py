"""CCPairs-style curation: raw dumps -> filtered (query, passage) pair shards plus a report.

Two passes, so the heavy work parallelises and the global work stays exact:

1. Per input shard (multiprocessing by default, Ray Data with ``engine: ray``): stream the reader,
   assign the query role of symmetric pairs by a seeded coin, run the per-pair filters (clean,
   visible text, length, language, perplexity, decontamination), compute each kept pair's exact-dedup key and
   MinHash signature, and write ``work/<source>-<NNNNN>.parquet`` plus an atomic done marker with
   its counts. A rerun skips shards whose marker matches the task (resumable). Workers end with the
   process that started them (``e5kit.processes.die_with_parent``), so a curate killed with kill -9
   leaves no orphans behind.
2. One global pass in a fixed order: exact and near-duplicate removal across all shards, then the
   final ``pairs/<source>-<NNNNN>.parquet`` (string columns query, passage, source, meta),
   ``report.json``, ``report.md`` and length histograms.

Every unit a reader produces (a candidate pair or a skipped record) ends in exactly one bucket, so
per source ``read == kept + sum(dropped)``; the report checks it. Every drop keeps where it came from:
per reason, the report lists the count per file and the first (file, line) examples (``drop_where``).

Every file is written whole or not at all (``e5kit.io.files.AtomicFile``, under a temporary name unique to
the process), so after kill -9 at any point a rerun gives the uninterrupted run's output, even while a
worker of the killed run is still writing; the temporary files of ended processes are removed.

Input paths are checked with the config, before any work: a folder, a FIFO, a dangling link, an
unreadable file or an unsupported compression is a config error naming the path.

Example:
    >>> report = curate(CurateConfig(output_dir="out", sources=[{"type": "news", "paths": ["news.jsonl"]}]))  # doctest: +SKIP
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from e5kit import config as config_io
from e5kit.config import describe_validation_error
from e5kit.data.filters import clean, decontaminate, exact_dedup, language, length, near_dedup, perplexity, visible
from e5kit.data.filters.base import PairFilter
from e5kit.io.pairs import PAIR_COLUMNS, Pair
from e5kit.data.readers import arxiv, base, generic, news, reddit, stackexchange, stdlib_docs, warc, wikipedia
from e5kit.data.skips import SkipCounter
from e5kit.processes import die_with_parent
from e5kit.progress import add as count_records, counting, progress_bar, set_count
from e5kit.io.files import AtomicFile, AtomicFolder, InputPathError, check_input_file, remove_stale_temporaries, write_text_atomic

#: Source type -> reader module (``Options`` model and ``read(paths, options, skips)``).
READERS: dict[str, ModuleType] = {
    "reddit": reddit,
    "stackexchange": stackexchange,
    "wikipedia": wikipedia,
    "arxiv": arxiv,
    "s2orc": arxiv,
    "commoncrawl": warc,
    "warc": warc,
    "news": news,
    "generic": generic,
    "pydoc": stdlib_docs,
}
#: Sources that need no input files.
PATHLESS = {"pydoc"}
#: Sources whose paths may be ``hf:NAME[:SPLIT]`` Hub datasets.
HUB_PATHS = {"generic"}
WRITE_BATCH = 8192
#: Changes when a done marker's content changes, so markers of an older e5kit are redone, not trusted.
MARKER_VERSION = 2
#: Records a shard reads between two additions to the records bar (each takes a lock shared by the workers).
COUNT_EVERY = 1000
# Aliases: the FiltersConfig fields share the filter modules' names.
CleanConfig, LengthConfig, LanguageConfig = clean.Config, length.Config, language.Config
PerplexityConfig, DecontaminateConfig = perplexity.Config, decontaminate.Config
ExactDedupConfig, NearDedupConfig = exact_dedup.Config, near_dedup.Config


class FiltersConfig(BaseModel):
    """Settings of every filter; per-source ``filters`` entries override these key by key."""

    model_config = ConfigDict(extra="forbid")

    clean: CleanConfig = CleanConfig()
    length: LengthConfig = LengthConfig()
    language: LanguageConfig = LanguageConfig()
    perplexity: PerplexityConfig = PerplexityConfig()
    decontaminate: DecontaminateConfig = DecontaminateConfig()
    exact_dedup: ExactDedupConfig = ExactDedupConfig()
    near_dedup: NearDedupConfig = NearDedupConfig()


class SourceConfig(BaseModel):
    """One raw source.

    Attributes:
        type: Reader: reddit, stackexchange, wikipedia, arxiv/s2orc, commoncrawl/warc, news, generic, pydoc.
        name: Name in shard files and the report (default: the type); unique per config.
        paths: Files or glob patterns (``**`` allowed); each file is a shard (Reddit pairs RS_/RC_ files). Plain or
            .gz/.bz2/.xz/.zst. A folder, FIFO, dangling link or unreadable file is a config error naming it (the
            generic source reads a folder saved by ``datasets``, pydoc one folder of Python sources).
        options: The reader's options (see its ``Options``).
        filters: Overrides of the global filter settings for this source, e.g. ``{length: {min_passage_words: 20}}``.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["reddit", "stackexchange", "wikipedia", "arxiv", "s2orc", "commoncrawl", "warc", "news", "generic", "pydoc"]
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.]+$")
    paths: list[str] = []
    options: dict[str, Any] = {}
    filters: dict[str, Any] = {}

    @model_validator(mode="after")
    def _default_name(self) -> SourceConfig:
        if self.name is None:
            self.name = self.type
        return self

    def reader_options(self):
        return READERS[self.type].Options.model_validate(self.options)

    def check_paths(self) -> None:
        """Refuse, before work starts, every input path the reader cannot read (see ``readers.base.check_paths``).

        Raises:
            ValueError: a pattern matching nothing, or a path that is a folder, a FIFO, a dangling link,
                unreadable or of an unsupported compression, naming it.
        """
        files = self.files()
        hub = [str(path) for path in files if str(path).startswith("hf:")]
        if hub and self.type not in HUB_PATHS:
            raise ValueError(f"{hub[0]}: hf: paths are read by the generic source only")
        check = getattr(READERS[self.type], "check_paths", base.check_paths)
        try:
            check(files, self.reader_options())
        except (OSError, InputPathError) as error:
            raise ValueError(str(error)) from None

    def files(self) -> list[Path]:
        """The input files, in a stable order; a pattern that matches nothing is an error."""
        files: list[Path] = []
        for pattern in self.paths:
            if pattern.startswith("hf:"):
                files.append(Path(pattern))
                continue
            matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
            if not matches:
                raise ValueError(f"{pattern}: no such file (or no match for the pattern)")
            files.extend(Path(match) for match in matches)
        return files

    def shards(self) -> list[list[Path]]:
        files = self.files()
        if self.type in PATHLESS:
            return [files]
        group = getattr(READERS[self.type], "group_shards", None)
        return group(files) if group else [[path] for path in files]


class CurateConfig(BaseModel):
    """The ``curate`` stage.

    Attributes:
        output_dir: Receives ``pairs/``, ``work/``, ``histograms/``, ``report.json`` and ``report.md``.
        sources: The raw sources.
        filters: Filter settings for all sources.
        engine: local (multiprocessing over shards) or ray (Ray Data; ``pip install 'e5kit[ray]'``).
        workers: Parallel shard workers.
        seed: Seed of the symmetric-pair query-role coin.
        shard_size: Pairs per output Parquet file.
        histogram_bins: Bins of the length histograms.
    """

    model_config = ConfigDict(extra="forbid")

    output_dir: Path
    sources: list[SourceConfig] = Field(min_length=1)
    filters: FiltersConfig = FiltersConfig()
    engine: Literal["local", "ray"] = "local"
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    seed: int = 0
    shard_size: int = Field(default=100_000, ge=1)
    histogram_bins: int = Field(default=40, ge=2)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        names = Counter(source.name for source in sources)
        repeated = [name for name, count in names.items() if count > 1]
        if repeated:
            raise ValueError(f"source names must be unique; repeated: {repeated} (set `name` on each)")
        return sources

    @model_validator(mode="after")
    def _check_sources(self) -> CurateConfig:
        for index, source in enumerate(self.sources):
            where = f"sources.{index}"
            try:
                source.reader_options()
            except ValidationError as error:
                raise ValueError(f"{where}.options: {describe_validation_error(error)}") from None
            try:
                filters = self.filters_for(source)
            except ValidationError as error:
                raise ValueError(f"{where}.filters: {describe_validation_error(error)}") from None
            if not source.paths and source.type not in PATHLESS:
                raise ValueError(f"{where}.paths: a {source.type} source needs at least one input path")
            try:
                source.check_paths()
            except ValueError as error:
                raise ValueError(f"{where}.paths: {error}") from None
            if filters.perplexity.model_path is not None:
                perplexity.load_kenlm(filters.perplexity.model_path)
            missing = [str(p) for p in filters.decontaminate.eval_paths if not p.exists()]
            if missing:
                raise ValueError(f"{where}: filters.decontaminate.eval_paths: no such file or folder: {missing}")
            try:
                for path in decontaminate.eval_files(list(filters.decontaminate.eval_paths)):
                    check_input_file(path)
            except (OSError, InputPathError) as error:
                raise ValueError(f"{where}: filters.decontaminate.eval_paths: {error}") from None
        return self

    def filters_for(self, source: SourceConfig) -> FiltersConfig:
        """The global filter settings with the source's overrides applied."""
        return FiltersConfig.model_validate(_deep_merge(self.filters.model_dump(), source.filters))


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


# ------------------------------------------------------------------------------------------ config I/O
def load_config(path: str | Path | None, overrides: list[str] | None = None) -> CurateConfig:
    """Load and validate a curation config; errors (``ConfigError``) name the field before any work starts."""
    return config_io.load_config(CurateConfig, path, overrides)


# ------------------------------------------------------------------------------------ per-shard pass
class ShardTask(BaseModel):
    """Everything a worker needs to process one shard; JSON-serialisable for Ray and process pools."""

    source_name: str
    source_type: str
    options: dict[str, Any]
    filters: FiltersConfig
    files: list[str]
    shard: int
    work_dir: str
    seed: int
    eval_index: str | None = None

    @property
    def stem(self) -> str:
        return f"{self.source_name}-{self.shard:05d}"

    def fingerprint(self) -> str:
        """Changes when the task or any input file (size, mtime) changes, invalidating a done marker."""
        stats = [(f, *(_file_stat(Path(f)))) for f in self.files]
        payload = json.dumps([MARKER_VERSION, self.model_dump(mode="json", exclude={"work_dir"}), stats], sort_keys=True)
        return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def _file_stat(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)


def build_filters(filters: FiltersConfig, eval_index: str | None) -> list[PairFilter]:
    """The per-pair filters in order: cheap rewrites and bounds first, model-based checks last.

    The visible-text rule always runs, right after cleaning (or first when cleaning is off): a side
    with no visible text is a counted drop, never a written pair.
    """
    chain: list[PairFilter] = []
    if filters.clean.enabled:
        chain.append(clean.CleanFilter(filters.clean))
    chain.append(visible.VisibleTextFilter())
    if filters.length.enabled:
        chain.append(length.LengthFilter(filters.length))
    if filters.language.enabled:
        chain.append(language.LanguageFilter(filters.language))
    if filters.perplexity.model_path is not None:
        chain.append(perplexity.PerplexityFilter(filters.perplexity))
    if filters.decontaminate.eval_paths and eval_index is not None:
        chain.append(decontaminate.DecontaminationFilter(filters.decontaminate, decontaminate.EvalIndex.load(Path(eval_index))))
    return chain


def swap_coin(seed: int, pair: Pair) -> bool:
    """A fair coin that depends only on the seed and the pair, so every engine and order agrees."""
    digest = hashlib.blake2b(f"{seed}\0{pair.query}\0{pair.passage}".encode(), digest_size=1).digest()
    return bool(digest[0] & 1)


class _ParquetWriter:
    """Writes rows in row groups to ``path`` through an ``AtomicFile``, committed on close."""

    def __init__(self, path: Path, schema) -> None:
        import pyarrow.parquet as pq

        self.path, self.schema = path, schema
        self.staged = AtomicFile(path)
        self.writer = pq.ParquetWriter(self.staged.temporary, schema)
        self.rows: dict[str, list] = {name: [] for name in schema.names}
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        for name in self.schema.names:
            self.rows[name].append(row[name])
        self.count += 1
        if len(self.rows[self.schema.names[0]]) >= WRITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.rows[self.schema.names[0]]:
            self.writer.write_table(pa.Table.from_pydict(self.rows, schema=self.schema))
            self.rows = {name: [] for name in self.schema.names}

    def close(self) -> None:
        self._flush()
        self.writer.close()
        self.staged.commit()


def _pair_schema(with_dedup: bool):
    import pyarrow as pa

    fields = [pa.field(name, pa.string()) for name in PAIR_COLUMNS]
    if with_dedup:
        fields += [pa.field("dedup_key", pa.int64()), pa.field("minhash", pa.binary())]
    return pa.schema(fields)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False))


def process_shard(task: ShardTask) -> dict[str, Any]:
    """Read, filter and sign one shard; returns its counts (from the done marker when already finished)."""
    work_dir = Path(task.work_dir)
    marker = work_dir / f"{task.stem}.done.json"
    fingerprint = task.fingerprint()
    if marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("fingerprint") == fingerprint:
            count_records(done["read"])
            return {**done, "resumed": True}
    reader = READERS[task.source_type]
    options = reader.Options.model_validate(task.options)
    chain = build_filters(task.filters, task.eval_index)
    dedup_config, near_config = task.filters.exact_dedup, task.filters.near_dedup
    skips = SkipCounter()
    dropped = SkipCounter()
    candidates = 0
    writer = _ParquetWriter(work_dir / f"{task.stem}.parquet", _pair_schema(with_dedup=True))
    for pair in reader.read([Path(f) for f in task.files], options, skips):
        candidates += 1
        if candidates % COUNT_EVERY == 0:
            count_records(COUNT_EVERY)
        if pair.symmetric and swap_coin(task.seed, pair):
            pair.query, pair.passage = pair.passage, pair.query
        result: Pair | str = pair
        for pair_filter in chain:
            result = pair_filter.apply(result)
            if isinstance(result, str):
                dropped.add(f"{pair_filter.name}: {result}", *_location(pair.meta))
                break
        else:
            writer.add({
                "query": result.query,
                "passage": result.passage,
                "source": task.source_name,
                "meta": result.meta_json(),
                "dedup_key": exact_dedup.dedup_key(result, dedup_config.key),
                "minhash": near_dedup.signature(result, near_config).tobytes() if near_config.enabled else b"",
            })
    writer.close()
    count_records(candidates % COUNT_EVERY + sum(skips.values()))
    dropped.merge(skips, prefix="reader: ")
    counts = {
        "fingerprint": fingerprint,
        "source": task.source_name,
        "shard": task.shard,
        "files": task.files,
        "read": candidates + sum(skips.values()),
        "passed": writer.count,
        "dropped": dict(sorted(dropped.items())),
        "drop_where": dropped.where(),
    }
    _write_json_atomic(marker, counts)
    return {**counts, "resumed": False}


def _location(meta: dict[str, Any]) -> tuple[str | None, int | None]:
    """(file, line) of a pair from its provenance (WARC pairs give their record offset as the line)."""
    return meta.get("file"), meta.get("line", meta.get("offset"))


def _start_worker(parent: int, records) -> None:
    """A curation worker: it ends with ``parent`` and adds to its records bar."""
    die_with_parent(parent)
    set_count(records)


def run_local(tasks: list[ShardTask], workers: int) -> list[dict[str, Any]]:
    """Process shards in worker processes (in this process when one worker or one shard); the workers
    end with this process, even when it is killed with kill -9. Bars count the records read and the shards done."""
    with counting(desc="records", unit="record") as records:
        return _run_shards(tasks, workers, records)


def _run_shards(tasks: list[ShardTask], workers: int, records) -> list[dict[str, Any]]:
    if workers == 1 or len(tasks) <= 1:
        return [process_shard(task) for task in progress_bar(tasks, desc="shards", unit="shard", show=len(tasks) > 1)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # fork: spawn would re-run the caller's script in every worker, so a script without an
    # ``if __name__ == "__main__"`` guard (a quickstart) would fail. Workers never call into torch.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=multiprocessing.get_context(method), initializer=_start_worker, initargs=(os.getpid(), records)
    ) as pool:
        futures = {pool.submit(process_shard, task): index for index, task in enumerate(tasks)}
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        for future in progress_bar(as_completed(futures), total=len(tasks), desc="shards", unit="shard"):
            results[futures[future]] = future.result()
    return results


# ------------------------------------------------------------------------------------------ global pass
class _SourceTotals:
    def __init__(self) -> None:
        self.read = 0
        self.kept = 0
        self.dropped = SkipCounter()
        self.shards = 0
        self.resumed = 0
        self.query_words: list[int] = []
        self.passage_words: list[int] = []


def _merge(config: CurateConfig, tasks: list[ShardTask], results: list[dict[str, Any]]) -> dict[str, _SourceTotals]:
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
        totals = _write_final_shards(config, tasks, results, staged.temporary)
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    return totals


def _write_final_shards(config: CurateConfig, tasks: list[ShardTask], results: list[dict[str, Any]], pairs_dir: Path) -> dict[str, _SourceTotals]:
    import pyarrow.parquet as pq

    seen = exact_dedup.ExactDedup()
    near_indexes: dict[tuple, near_dedup.NearDedup] = {}
    totals = {source.name: _SourceTotals() for source in config.sources}
    writers: dict[str, _ParquetWriter] = {}
    shard_numbers: Counter = Counter()
    schema = _pair_schema(with_dedup=False)
    for task, result in progress_bar(list(zip(tasks, results)), desc="dedup + write", unit="shard", show=len(tasks) > 1):
        total = totals[task.source_name]
        total.read += result["read"]
        total.dropped.merge(SkipCounter.from_json(result["dropped"], result["drop_where"]))
        total.shards += 1
        total.resumed += bool(result.get("resumed"))
        exact_on, near_config = task.filters.exact_dedup.enabled, task.filters.near_dedup
        near = None
        if near_config.enabled:
            near_key = (near_config.threshold, near_config.num_perm)
            near = near_indexes.setdefault(near_key, near_dedup.NearDedup(near_config))
        for batch in pq.ParquetFile(Path(task.work_dir) / f"{task.stem}.parquet").iter_batches(batch_size=WRITE_BATCH):
            for row in batch.to_pylist():
                if exact_on and seen.is_duplicate(row["dedup_key"]):
                    total.dropped.add(f"{seen.name}: {seen.reason}", *_location(json.loads(row["meta"])))
                    continue
                if near is not None and near.is_duplicate(np.frombuffer(row["minhash"], dtype=np.uint64)):
                    total.dropped.add(f"{near.name}: {near.reason}", *_location(json.loads(row["meta"])))
                    continue
                writer = writers.get(task.source_name)
                if writer is None or writer.count >= config.shard_size:
                    if writer is not None:
                        writer.close()
                    path = pairs_dir / f"{task.source_name}-{shard_numbers[task.source_name]:05d}.parquet"
                    shard_numbers[task.source_name] += 1
                    writer = writers[task.source_name] = _ParquetWriter(path, schema)
                writer.add(row)
                total.kept += 1
                total.query_words.append(len(row["query"].split()))
                total.passage_words.append(len(row["passage"].split()))
    for writer in writers.values():
        writer.close()
    return totals


# ------------------------------------------------------------------------------------------------ report
def _length_summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values)
    return {"mean": round(float(array.mean()), 1), "median": float(np.median(array)), "p95": round(float(np.percentile(array, 95)), 1), "max": int(array.max())}


def _histogram(path: Path, name: str, totals: _SourceTotals, bins: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for axis, side, values in ((axes[0], "query", totals.query_words), (axes[1], "passage", totals.passage_words)):
        if values:
            axis.hist(values, bins=bins, color="#4c72b0")
        axis.set_title(f"{name}: {side} length ({len(values):,} pairs)")
        axis.set_xlabel("words")
        axis.set_ylabel("pairs")
    figure.tight_layout()
    with AtomicFile(path) as staged:
        figure.savefig(staged.temporary, dpi=80, format="png")
    plt.close(figure)


#: Files and examples named per drop reason in report.md (report.json has every file and more examples).
MARKDOWN_LOCATIONS = 3


def _per_file(files: dict[str, int]) -> str:
    """``a.gz: 3, b.gz: 1, and N more files`` (files with most drops first)."""
    named = [f"{_cell(file)}: {count:,}" for file, count in list(files.items())[:MARKDOWN_LOCATIONS]]
    more = len(files) - MARKDOWN_LOCATIONS
    return ", ".join(named) + (f", and {more:,} more files" if more > 0 else "")


def _first_at(examples: list[dict[str, Any]]) -> str:
    """``a.gz:12, a.gz:40`` (a location without a line is the file alone)."""
    return ", ".join(
        _cell(example["file"]) + (f":{example['line']}" if example["line"] is not None else "") for example in examples[:MARKDOWN_LOCATIONS]
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _report_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Curation report",
        "",
        f"Engine {report['engine']} with {report['workers']} worker(s); {report['shards']} shard(s), "
        f"{report['resumed_shards']} resumed; {report['elapsed_s']:.1f} s. "
        f"Reconciled (read = kept + dropped, per source): **{report['reconciled']}**.",
        "",
        "| source | read | kept | dropped | kept % |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, entry in [*report["sources"].items(), ("**total**", report["totals"])]:
        dropped = sum(entry["dropped"].values())
        share = 100 * entry["kept"] / entry["read"] if entry["read"] else 0.0
        lines.append(f"| {name} | {entry['read']:,} | {entry['kept']:,} | {dropped:,} | {share:.1f} |")
    for name, entry in report["sources"].items():
        lines += ["", f"## {name}", "", "| drop reason | pairs | per file | first at (file:line) |", "|---|---:|---|---|"]
        for reason, count in sorted(entry["dropped"].items(), key=lambda item: -item[1]):
            where = entry["drop_where"][reason]
            lines.append(f"| {reason} | {count:,} | {_per_file(where['files'])} | {_first_at(where['examples'])} |")
        lines += ["", f"Query words {entry['query_words']}; passage words {entry['passage_words']}.", "", f"![{name} lengths]({entry['histogram']})"]
    return "\n".join(lines) + "\n"


def _eval_index(config: CurateConfig, work_dir: Path) -> tuple[dict[tuple, str], dict[str, Any]]:
    """Build (or reuse) one decontamination index file per distinct (eval paths, n) setting."""
    paths: dict[tuple, str] = {}
    info: dict[str, Any] = {}
    for source in config.sources:
        settings = config.filters_for(source).decontaminate
        if not settings.eval_paths:
            continue
        key = (tuple(str(p) for p in settings.eval_paths), settings.ngram)
        if key in paths:
            continue
        digest = hashlib.blake2b(json.dumps(key).encode(), digest_size=8).hexdigest()
        path = work_dir / f"eval-index-{digest}.npz"
        if not path.is_file():
            index, skips = decontaminate.EvalIndex.build(list(settings.eval_paths), settings.ngram)
            with AtomicFile(path) as staged:
                index.save(staged.temporary)
            info[digest] = {
                "eval_paths": list(key[0]), "ngram": settings.ngram, "ngrams": len(index.ngrams), "texts": len(index.texts),
                "skipped": dict(skips), "skipped_where": skips.where(),
            }
        paths[key] = str(path)
    return paths, info


def plan_tasks(config: CurateConfig, work_dir: Path, eval_indexes: dict[tuple, str]) -> list[ShardTask]:
    tasks = []
    for source in config.sources:
        filters = config.filters_for(source)
        key = (tuple(str(p) for p in filters.decontaminate.eval_paths), filters.decontaminate.ngram)
        for shard, files in enumerate(source.shards()):
            tasks.append(ShardTask(
                source_name=source.name, source_type=source.type, options=source.options, filters=filters,
                files=[str(f) for f in files], shard=shard, work_dir=str(work_dir), seed=config.seed,
                eval_index=eval_indexes.get(key),
            ))
    return tasks


def curate(config: CurateConfig) -> dict[str, Any]:
    """Run the whole curation stage; returns the report (also written to ``output_dir``)."""
    started = time.perf_counter()
    output_dir = Path(config.output_dir)
    work_dir = output_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    for folder in (output_dir, work_dir, output_dir / "pairs"):
        remove_stale_temporaries(folder)
    eval_indexes, eval_info = _eval_index(config, work_dir)
    tasks = plan_tasks(config, work_dir, eval_indexes)
    if config.engine == "ray":
        from e5kit.data.ray_engine import run_ray

        results = run_ray(tasks, config.workers)
    else:
        results = run_local(tasks, config.workers)
    for name in ("report.json", "report.md"):  # the report marks a finished run: gone while the final shards are rewritten
        (output_dir / name).unlink(missing_ok=True)
    totals = _merge(config, tasks, results)

    histogram_dir = output_dir / "histograms"
    histogram_dir.mkdir(exist_ok=True)
    sources: dict[str, Any] = {}
    for source in config.sources:
        total = totals[source.name]
        _histogram(histogram_dir / f"{source.name}.png", source.name, total, config.histogram_bins)
        sources[source.name] = {
            "type": source.type,
            "shards": total.shards,
            "read": total.read,
            "kept": total.kept,
            "dropped": dict(sorted(total.dropped.items())),
            "drop_where": total.dropped.where(),
            "query_words": _length_summary(total.query_words),
            "passage_words": _length_summary(total.passage_words),
            "histogram": f"histograms/{source.name}.png",
        }
    all_dropped: Counter = Counter()
    for entry in sources.values():
        all_dropped.update(entry["dropped"])
    elapsed = time.perf_counter() - started
    report = {
        "sources": sources,
        "totals": {"read": sum(e["read"] for e in sources.values()), "kept": sum(e["kept"] for e in sources.values()), "dropped": dict(sorted(all_dropped.items()))},
        "reconciled": all(e["read"] == e["kept"] + sum(e["dropped"].values()) for e in sources.values()),
        "engine": config.engine,
        "workers": config.workers,
        "shards": len(tasks),
        "resumed_shards": sum(bool(r.get("resumed")) for r in results),
        "elapsed_s": round(elapsed, 3),
        "pair_files": sorted(str(p.relative_to(output_dir)) for p in (output_dir / "pairs").glob("*.parquet")),
        "eval_indexes": eval_info,
        "config": config.model_dump(mode="json"),
    }
    _write_json_atomic(output_dir / "report.json", report)
    write_text_atomic(output_dir / "report.md", _report_markdown(report))
    if not report["reconciled"]:
        raise RuntimeError(f"curation counts do not reconcile (read != kept + dropped); see {output_dir / 'report.json'}")
    return report
