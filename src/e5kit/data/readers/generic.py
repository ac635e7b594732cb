"""Any table of text pairs: JSON lines, CSV/TSV, Parquet, or a Hugging Face dataset, with a column mapping.

Files stream (Parquet batch by batch; a ``datasets`` folder saved with ``save_to_disk`` is memory-mapped).
A path ``hf:NAME[:SPLIT]`` streams a dataset from the Hugging Face Hub (needs network).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from e5kit.data.pair import Pair
from e5kit.data.readers.base import ReaderOptions, file_meta, iter_json_records, iter_lines
from e5kit.text import has_visible_text

_HUB_PREFIX = "hf:"


class Options(ReaderOptions):
    """Generic reader options.

    Attributes:
        query_column: Column holding the query side.
        passage_column: Column holding the passage side.
        id_column: Optional column copied into the pair's provenance.
        symmetric: The pair has no natural query side: the query role is assigned at random (seeded).
        format: auto (from the file name), jsonl, csv, tsv, parquet or hf.
    """

    query_column: str = "query"
    passage_column: str = "passage"
    id_column: str | None = None
    symmetric: bool = False
    format: Literal["auto", "jsonl", "csv", "tsv", "parquet", "hf"] = "auto"


def _format(path: Path, options: Options) -> str:
    if options.format != "auto":
        return options.format
    if str(path).startswith(_HUB_PREFIX) or path.is_dir():
        return "hf"
    suffixes = [s for s in path.suffixes if s not in (".gz", ".zst", ".bz2")]
    last = suffixes[-1] if suffixes else ""
    return {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}.get(last, "jsonl")


def _delimited_rows(path: Path, delimiter: str, skips: Counter) -> Iterator[tuple[int, dict[str, Any]]]:
    lines = (line + "\n" for _, line in iter_lines(path, skips))
    reader = csv.DictReader(lines, delimiter=delimiter)
    try:
        for row in reader:
            if None in row or any(value is None for value in row.values()):
                skips["CSV row with a wrong number of fields"] += 1
                continue
            yield reader.line_num, row
    except csv.Error:
        skips["malformed CSV (rest of file)"] += 1


def _parquet_rows(path: Path, columns: list[str], skips: Counter) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        present = [c for c in columns if c in parquet.schema_arrow.names]
        row = 0
        for batch in parquet.iter_batches(columns=present, batch_size=4096):
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except (pa.ArrowException, OSError):
        skips["corrupt Parquet file"] += 1


def _hf_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import datasets

    text = str(path)
    if text.startswith(_HUB_PREFIX):
        name, _, split = text[len(_HUB_PREFIX):].partition(":")
        rows = datasets.load_dataset(name, split=split or "train", streaming=True)
    else:
        rows = datasets.load_from_disk(text)
    return enumerate(rows, start=1)


def _rows(path: Path, options: Options, skips: Counter) -> Iterator[tuple[int, dict[str, Any]]]:
    kind = _format(path, options)
    if kind in ("csv", "tsv"):
        return _delimited_rows(path, "," if kind == "csv" else "\t", skips)
    if kind == "parquet":
        columns = [options.query_column, options.passage_column] + ([options.id_column] if options.id_column else [])
        return _parquet_rows(path, columns, skips)
    if kind == "hf":
        return _hf_rows(path)
    return iter_json_records(path, skips)


def read(paths: list[Path], options: Options, skips: Counter) -> Iterator[Pair]:
    """Stream pairs from the mapped columns; rows missing either text are counted."""
    for path in paths:
        for row_number, row in _rows(path, options, skips):
            query, passage = row.get(options.query_column), row.get(options.passage_column)
            if not isinstance(query, str) or not has_visible_text(query) or not isinstance(passage, str) or not has_visible_text(passage):
                skips[f"row without text in {options.query_column!r} or {options.passage_column!r}"] += 1
                continue
            record_id = row.get(options.id_column) if options.id_column else None
            yield Pair(query.strip(), passage.strip(), file_meta(path, line=row_number, id=record_id), symmetric=options.symmetric)
