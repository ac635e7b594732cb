"""The per-shard pass: stream the reader, assign the query role of symmetric pairs by a seeded coin, run
the shard filters of ``registry.FILTERS`` in order, store each kept pair with its global filters' keys
(exact-dedup hash, MinHash signature) and word counts (``e5kit.data.text.words``, as the length filter
counts) in ``work/<source>-<NNNNN>.parquet``, then write an atomic done marker with its counts. A rerun
skips shards whose marker matches the task (resumable).

This module knows nothing of how shards are scheduled: the executors import it, never the reverse.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from e5kit.data.curation.parquet import ParquetWriter, pair_schema
from e5kit.data.curation.planner import ShardTask
from e5kit.data.curation.registry import FILTERS, READERS, Resources, is_active, settings_of
from e5kit.data.filters.base import Filter
from e5kit.data.skips import SkipCounter
from e5kit.data.text import words
from e5kit.io.files import write_text_atomic
from e5kit.io.pairs import Pair
from e5kit.progress import add as count_records

#: Records a shard reads between two additions to the records bar (each takes a lock shared by the workers).
COUNT_EVERY = 1000


def shard_filters(filters: Any, resources: Resources) -> list[Filter]:
    """The active per-pair filters of ``filters`` (a ``FiltersConfig``), in the registry's order."""
    return [entry.build(settings_of(filters, entry), resources) for entry in FILTERS if entry.stage == "shard" and is_active(filters, entry)]


def swap_coin(seed: int, pair: Pair) -> bool:
    """A fair coin that depends only on the seed and the pair, so every engine and order agrees."""
    digest = hashlib.blake2b(f"{seed}\0{pair.query}\0{pair.passage}".encode(), digest_size=1).digest()
    return bool(digest[0] & 1)


def location(meta: dict[str, Any]) -> tuple[str | None, int | None]:
    """(file, line) of a pair from its provenance (WARC pairs give their record offset as the line)."""
    return meta.get("file"), meta.get("line", meta.get("offset"))


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False))


def process_shard(task: ShardTask) -> dict[str, Any]:
    """Read, filter and key one shard; returns its counts (from the done marker when already finished)."""
    work_dir = Path(task.work_dir)
    marker = work_dir / f"{task.stem}.done.json"
    fingerprint = task.fingerprint()
    if marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("fingerprint") == fingerprint:
            count_records(done["read"])
            return {**done, "resumed": True}
    reader = READERS[task.source_type].module
    options = reader.Options.model_validate(task.options)
    chain = shard_filters(task.filters, Resources(eval_index=task.eval_index))
    keys = [
        (entry.column, entry.key, settings_of(task.filters, entry), entry.empty)
        for entry in FILTERS if entry.stage == "global"
    ]
    keys = [(column, key if settings.active() else None, settings, empty) for column, key, settings, empty in keys]
    skips = SkipCounter()
    dropped = SkipCounter()
    candidates = 0
    writer = ParquetWriter(work_dir / f"{task.stem}.parquet", pair_schema(with_dedup=True))
    for pair in reader.read([Path(f) for f in task.files], options, skips):
        candidates += 1
        if candidates % COUNT_EVERY == 0:
            count_records(COUNT_EVERY)
        if pair.symmetric and swap_coin(task.seed, pair):
            pair.query, pair.passage = pair.passage, pair.query
        for step in chain:
            verdict = step.keep(pair)
            if verdict is not True:
                dropped.add(f"{step.name}: {verdict}", *location(pair.meta))
                break
        else:
            row = {
                "query": pair.query, "passage": pair.passage, "source": task.source_name, "meta": pair.meta_json(),
                # The length filter's unit (data.text.words; cached, so a pair it measured is not split again).
                "query_words": len(words(pair.query)), "passage_words": len(words(pair.passage)),
            }
            for column, key, settings, empty in keys:
                row[column] = key(pair, settings) if key is not None else empty
            writer.add(row)
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
    write_json_atomic(marker, counts)
    return {**counts, "resumed": False}
