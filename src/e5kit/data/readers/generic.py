"""Any table of text pairs: JSON lines, CSV/TSV, Parquet, or a Hugging Face dataset, with a column mapping.

Files stream (Parquet batch by batch; a ``datasets`` folder saved with ``save_to_disk`` is memory-mapped).
A path ``hf:NAME[:SPLIT]`` streams a dataset from the Hugging Face Hub (needs network). Folders and
``hf:`` paths need the ``datasets`` package (``pip install 'e5kit[hf]'``); :func:`check_paths` says so
before work starts, as it refuses a folder that is not a saved dataset.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from e5kit.data.readers.base import ReaderOptions, file_meta
from e5kit.data.skips import SkipCounter
from e5kit.io.files import InputPathError, check_input_file, content_suffix
from e5kit.io.pairs import Pair
from e5kit.io.tables import iter_records, table_format
from e5kit.io.text import has_visible_text

_HUB_PREFIX = "hf:"


class Options(ReaderOptions):
    """Generic reader options.

    Attributes:
        query_column: Column holding the query side.
        passage_column: Column holding the passage side.
        id_column: Optional column copied into the pair's provenance.
        symmetric: The pair has no natural query side: the query role is assigned at random (seeded).
        format: auto (from the file name), jsonl, csv, tsv, parquet or hf. Text tables are read by
            ``e5kit.io.tables``: a TSV row is one line (no quoting), a CSV cell may be quoted.
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
    return "parquet" if content_suffix(path) == ".parquet" else table_format(path, "jsonl")


def check_paths(paths: list[Path], options: Options) -> None:
    """Refuse, before work starts, a path this reader cannot read, naming it.

    Files must be readable regular files (``e5kit.io.files.check_input_file``). A folder or ``hf:`` path is
    read with ``datasets``: it must be installed, and a folder must hold one saved ``Dataset``.

    Raises:
        FileNotFoundError, e5kit.io.files.InputPathError: naming the path and, for a missing package, the extra.
    """
    for path in paths:
        if _format(path, options) != "hf":
            check_input_file(path)
            continue
        if importlib.util.find_spec("datasets") is None:
            raise InputPathError(f"{path}: a Hugging Face dataset (folder or hf: path) needs the datasets package: pip install 'e5kit[hf]'")
        if str(path).startswith(_HUB_PREFIX):
            continue
        if not path.is_dir():
            raise InputPathError(f"{path}: format hf reads a folder saved with datasets' save_to_disk, and this is not a folder")
        if (path / "dataset_dict.json").is_file():
            raise InputPathError(f"{path}: holds several splits (a DatasetDict); name one split's folder, e.g. {path / 'train'}")
        if not (path / "state.json").is_file():
            raise InputPathError(f"{path}: is a folder but not a saved Hugging Face dataset (no state.json); name the files to read")


def _parquet_rows(path: Path, columns: list[str], skips: SkipCounter) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        parquet = pq.ParquetFile(path)
        present = [c for c in columns if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(columns=present, batch_size=4096):
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except (pa.ArrowException, OSError):
        skips.add("corrupt Parquet file", path, row + 1 if row else None)


def _hf_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import datasets

    text = str(path)
    if text.startswith(_HUB_PREFIX):
        name, _, split = text[len(_HUB_PREFIX):].partition(":")
        rows = datasets.load_dataset(name, split=split or "train", streaming=True)
    else:
        rows = datasets.load_from_disk(text)
    return enumerate(rows, start=1)


def _rows(path: Path, options: Options, skips: SkipCounter) -> Iterator[tuple[int, dict[str, Any]]]:
    kind = _format(path, options)
    if kind == "parquet":
        columns = [options.query_column, options.passage_column] + ([options.id_column] if options.id_column else [])
        return _parquet_rows(path, columns, skips)
    if kind == "hf":
        return _hf_rows(path)
    return iter_records(path, format=kind, skips=skips)


def read(paths: list[Path], options: Options, skips: SkipCounter) -> Iterator[Pair]:
    """Stream pairs from the mapped columns; rows missing either text are counted."""
    for path in paths:
        for row_number, row in _rows(path, options, skips):
            query, passage = row.get(options.query_column), row.get(options.passage_column)
            if not isinstance(query, str) or not has_visible_text(query) or not isinstance(passage, str) or not has_visible_text(passage):
                skips.add(f"row without text in {options.query_column!r} or {options.passage_column!r}", path, row_number)
                continue
            record_id = row.get(options.id_column) if options.id_column else None
            yield Pair(query.strip(), passage.strip(), file_meta(path, line=row_number, id=record_id), symmetric=options.symmetric)
