"""Held-out retrieval splits per source, cut from curated pairs before anything trains on them.

E5 measures its pre-training on BEIR; a user pre-training on their own dumps also needs to know whether
the model got better *on their data*. This step holds out a seeded fraction of each source's pairs as a
BEIR-format retrieval set (the query side searches for its passage among all held-out passages of that
source) and removes from the training pairs everything that overlaps the held-out texts, with the same
rule curation's decontamination applies to evaluation data (``e5kit.data.filters.decontaminate``: a
shared 13-word n-gram, or an exact match for shorter texts). The quickstart does the same with its
built-in stdlib-docs split.

Which pairs are held out depends only on the seed, the source and the query text (a stable hash), never
on file order or worker count; pairs sharing a query (after ``normalized_text_key``) are held out
together, so no held-out query is also a training query. Every file is written whole or not at all, and
``report.json`` is written last: it marks a finished run, and :class:`HoldoutStage` (what ``e5kit holdout``
runs) skips a rerun whose settings and inputs match it (``e5kit.stage``).

Output folder::

    pairs/<input shard>.parquet            training pairs (the input's columns, held-out and overlapping rows removed)
    heldout/<source>/corpus.jsonl          BEIR corpus: every held-out passage of the source
    heldout/<source>/queries.jsonl         BEIR queries: every held-out query
    heldout/<source>/qrels/test.tsv        query -> its passage(s), score 1
    report.json, report.md                 per source: pairs read, held out, dropped for overlap (with locations), kept
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from e5kit.data.filters import decontaminate
from e5kit.data.shards import invalid_reason, iter_rows
from e5kit.data.skips import SkipCounter
from e5kit.io.files import AtomicFile, remove_stale_temporaries, write_text_atomic
from e5kit.io.hashing import stable_hash
from e5kit.io.pairs import Pair, output_shard_names, resolve_shard_paths
from e5kit.io.text import normalized_text_key
from e5kit.stage import Stage

HELD_OUT = "held out for evaluation"
SPLIT = "test"


class HoldoutConfig(BaseModel):
    """The held-out split step.

    Attributes:
        pairs: Curated pair shards: Parquet files, folders (a ``curate`` output's ``pairs/``) or globs.
        output_dir: Receives pairs/ (training pairs), heldout/<source>/ (BEIR folders), report.json and report.md.
        fraction: Share of each source's distinct queries eligible for holding out.
        max_queries: At most this many held-out queries per source (the eligible ones with the lowest hash).
        min_queries: A source with fewer distinct queries than this holds out none (too small to measure).
        ngram: Words per n-gram of the overlap rule (curation's decontamination rule).
        seed: Seed of the hash that picks held-out queries.
    """

    model_config = ConfigDict(extra="forbid")

    pairs: list[str] = Field(min_length=1)
    output_dir: Path
    fraction: float = Field(default=0.05, gt=0, lt=1)
    max_queries: int = Field(default=500, ge=1)
    min_queries: int = Field(default=200, ge=1)
    ngram: int = Field(default=13, ge=1)
    seed: int = 0


def _draw(seed: int, source: str, query_key: str) -> float:
    """A uniform number in [0, 1) that depends only on the seed, the source and the query's text key."""
    return (stable_hash(f"{seed}\0{source}\0{query_key}") % 2**64) / 2**64  # the signed hash read as unsigned


def _rows(shard: Path):
    """(row, query, passage, source) of the rows that can be pairs (the training pass counts the others)."""
    for row, query, passage, source in iter_rows(shard):
        if invalid_reason(query, passage) is None:
            yield row, query, passage, source


def choose_heldout_queries(config: HoldoutConfig, shards: list[Path]) -> tuple[dict[str, set[str]], Counter]:
    """Per source, the query keys held out; and the number of distinct query keys per source."""
    drawn: dict[str, dict[str, float]] = {}
    distinct: dict[str, set[str]] = {}
    for shard in shards:
        for _, query, _, source in _rows(shard):
            key = normalized_text_key(query)
            distinct.setdefault(source, set()).add(key)
            value = _draw(config.seed, source, key)
            if value < config.fraction:
                drawn.setdefault(source, {})[key] = value
    counts = Counter({source: len(keys) for source, keys in distinct.items()})
    chosen = {}
    for source, candidates in drawn.items():
        if counts[source] >= config.min_queries:
            chosen[source] = set(sorted(candidates, key=candidates.__getitem__)[: config.max_queries])
    return chosen, counts


def _write_jsonl(path: Path, records: list[dict[str, str]]) -> None:
    write_text_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def write_heldout_splits(config: HoldoutConfig, shards: list[Path], chosen: dict[str, set[str]]) -> dict[str, dict[str, int]]:
    """Write one BEIR folder per source with held-out queries; returns per source its query/document/pair counts.

    A passage whose text is also a held-out query of the split (reply chains: a comment answers its
    parent and is asked by its replies) is left out of the corpus: as an unjudged copy of that query it
    would rank first for it and score nothing. Its pair is counted as ``passage_is_a_query``, and a query
    left without any relevant passage is left out too.
    """
    splits: dict[str, dict[str, Any]] = {source: {"queries": {}, "corpus": {}, "qrels": set(), "passage_is_a_query": 0} for source in chosen}
    for shard in shards:
        for _, query, passage, source in _rows(shard):
            query_key, passage_key = normalized_text_key(query), normalized_text_key(passage)
            if query_key not in chosen.get(source, ()):
                continue
            split = splits[source]
            if passage_key in chosen[source]:
                split["passage_is_a_query"] += 1
                continue
            # Ids follow first appearance, so a rerun on the same shards writes the same files.
            query_id = split["queries"].setdefault(query_key, (f"q{len(split['queries'])}", query))[0]
            doc_id = split["corpus"].setdefault(passage_key, (f"d{len(split['corpus'])}", passage))[0]
            split["qrels"].add((query_id, doc_id))
    counts = {}
    for source, split in splits.items():
        if not split["qrels"]:
            continue
        folder = config.output_dir / "heldout" / source
        (folder / "qrels").mkdir(parents=True, exist_ok=True)
        _write_jsonl(folder / "corpus.jsonl", [{"_id": i, "title": "", "text": t} for i, t in split["corpus"].values()])
        _write_jsonl(folder / "queries.jsonl", [{"_id": i, "text": t} for i, t in split["queries"].values()])
        qrels = sorted(split["qrels"], key=lambda pair: (int(pair[0][1:]), int(pair[1][1:])))
        write_text_atomic(folder / "qrels" / f"{SPLIT}.tsv", "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels))
        counts[source] = {"queries": len(split["queries"]), "documents": len(split["corpus"]), "pairs": len(qrels),
                          "passage_is_a_query": split["passage_is_a_query"]}
    return counts


def _write_training_shard(shard: Path, output: Path, keep: list[bool]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if shard.name.endswith(".parquet"):
        table = pq.read_table(shard).filter(pa.array(keep, type=pa.bool_()))
    else:
        rows = [{"query": q, "passage": p, "source": s} for (_, q, p, s), kept in zip(iter_rows(shard), keep) if kept]
        table = pa.Table.from_pylist(rows, schema=pa.schema([(name, pa.string()) for name in ("query", "passage", "source")]))
    with AtomicFile(output) as staged:
        pq.write_table(table, staged.temporary)


def holdout(config: HoldoutConfig) -> dict[str, Any]:
    """Cut the held-out splits and write the decontaminated training pairs; returns the report (every
    call does the work: :class:`HoldoutStage` is the run that skips a finished one).

    Raises:
        e5kit.io.pairs.ShardError: a pairs path that names no pair shard, or two shards with one file name (naming them).
    """
    output_dir = Path(config.output_dir)
    report_path = output_dir / "report.json"
    settings = config.model_dump(mode="json")
    report_path.unlink(missing_ok=True)  # gone while the outputs are rewritten: it marks a finished run
    shards = resolve_shard_paths(config.pairs)
    outputs = output_shard_names(shards)
    for stale in (output_dir / "heldout", output_dir / "pairs"):  # an earlier run's splits and shards must not mix in
        shutil.rmtree(stale, ignore_errors=True)
    for folder in (output_dir, output_dir / "pairs"):
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder)

    chosen, distinct = choose_heldout_queries(config, shards)
    split_counts = write_heldout_splits(config, shards, chosen)
    overlap_index, _ = decontaminate.EvalIndex.build([output_dir / "heldout"], config.ngram) if chosen else (None, None)
    overlap = decontaminate.DecontaminationFilter(decontaminate.Config(ngram=config.ngram), overlap_index) if chosen else None

    read: Counter = Counter()
    kept: Counter = Counter()
    dropped: dict[str, SkipCounter] = {}
    invalid = SkipCounter()
    for shard, output_name in zip(shards, outputs, strict=True):
        keep = []
        for row, query, passage, source in iter_rows(shard):
            bad = invalid_reason(query, passage)
            if bad is not None:
                invalid.add(f"invalid pair: {bad}", shard, row + 1)
                keep.append(False)
                continue
            read[source] += 1
            reason = None
            if normalized_text_key(query) in chosen.get(source, ()):
                reason = HELD_OUT
            elif overlap is not None:
                verdict = overlap.keep(Pair(query, passage))
                reason = None if verdict is True else f"overlaps a held-out split: {verdict.replace(' evaluation data', '')}"
            if reason is None:
                kept[source] += 1
            else:
                dropped.setdefault(source, SkipCounter()).add(reason, shard, row + 1)
            keep.append(reason is None)
        _write_training_shard(shard, output_dir / "pairs" / output_name, keep)

    sources = {}
    for source in sorted(read):
        drops = dropped.get(source, SkipCounter())
        sources[source] = {
            "read": read[source],
            "distinct_queries": distinct[source],
            "kept": kept[source],
            "dropped": dict(sorted(drops.items())),
            "drop_where": drops.where(),
            "heldout": split_counts.get(source, {"queries": 0, "documents": 0, "pairs": 0, "passage_is_a_query": 0}),
            "note": None if source in split_counts else (
                f"{distinct[source]:,} distinct queries < min_queries {config.min_queries}: nothing held out"
                if distinct[source] < config.min_queries
                else "every drawn query's passages are other drawn queries" if source in chosen
                else "no query drawn at this fraction"
            ),
            "eval_dir": f"heldout/{source}" if source in split_counts else None,
        }
    report = {
        "sources": sources,
        "invalid": dict(invalid),
        "invalid_where": invalid.where(),
        "kept": sum(kept.values()),
        "read": sum(read.values()),
        "eval_dirs": [str(output_dir / "heldout" / source) for source in sorted(split_counts)],
        "reconciled": all(e["read"] == e["kept"] + sum(e["dropped"].values()) for e in sources.values()),
        "config": settings,
    }
    write_text_atomic(output_dir / "report.md", report_markdown(report))
    write_text_atomic(report_path, json.dumps(report, indent=2, ensure_ascii=False))
    return report


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table, one row per source."""
    lines = [
        "| source | pairs read | held-out queries | held-out documents | held out (pairs) | overlapping a held-out text | kept for training |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["sources"].items():
        overlapping = sum(count for reason, count in entry["dropped"].items() if reason != HELD_OUT)
        lines.append(
            f"| {name} | {entry['read']:,} | {entry['heldout']['queries']:,} | {entry['heldout']['documents']:,} | "
            f"{entry['dropped'].get(HELD_OUT, 0):,} | {overlapping:,} | {entry['kept']:,} |"
        )
    notes = [f"- {name}: {entry['note']}" for name, entry in report["sources"].items() if entry["note"]]
    excluded = [f"- {name}: {entry['heldout']['passage_is_a_query']:,} held-out pair(s) left out of the split: their passage is "
                "another held-out query (it would rank first for that query, unjudged)"
                for name, entry in report["sources"].items() if entry["heldout"]["passage_is_a_query"]]
    if notes or excluded:
        lines += ["", *notes, *excluded]
    if report["invalid"]:
        lines += ["", f"Invalid rows skipped: {report['invalid']}"]
    return "\n".join(lines) + "\n"


class HoldoutStage(Stage[HoldoutConfig]):
    """The held-out split as a stage (``e5kit.stage``): reads pair shards, writes ``pairs/`` and ``heldout/``."""

    name = "holdout"
    config_class = HoldoutConfig

    def inputs(self) -> list[Path]:
        return resolve_shard_paths(self.config.pairs)

    def outputs(self) -> dict[str, Path]:
        return {"pairs": self.output_dir / "pairs", "heldout": self.output_dir / "heldout"}

    def execute(self, log: Callable[[str], None]) -> dict[str, Any]:
        report = holdout(self.config)
        for name, entry in report["sources"].items():
            log(f"  {name}: {entry['heldout']['queries']} held-out queries, {entry['kept']} of {entry['read']} pairs kept for training")
        return report
