"""Reading the local task files (TSV with a header row, or JSONL), with errors naming file and line."""

from __future__ import annotations

import csv
from pathlib import Path

from e5kit.text import has_visible_text
from e5kit.textio import InputFormatError, iter_jsonl, open_text

SUFFIXES = (".tsv", ".tsv.gz", ".jsonl", ".jsonl.gz")


def split_file(data: str | Path, split: str) -> Path:
    """``data`` itself when it is a file, else ``data/<split>.tsv[.gz]`` or ``data/<split>.jsonl[.gz]``."""
    path = Path(data)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    for suffix in SUFFIXES:
        if (path / f"{split}{suffix}").is_file():
            return path / f"{split}{suffix}"
    raise FileNotFoundError(f"{path}: no {split}.tsv, {split}.tsv.gz, {split}.jsonl or {split}.jsonl.gz")


def read_columns(path: Path, columns: tuple[str, ...], allow_empty: tuple[str, ...] = ()) -> dict[str, list]:
    """Read the named columns of a TSV (header row) or JSONL file.

    Args:
        path: The file.
        columns: Columns (TSV header names or JSONL keys) that every record must have.
        allow_empty: Columns whose value may be empty (the caller counts and skips such records).

    Returns:
        Column name -> values in file order (strings for TSV, JSON values for JSONL), plus
        "_line" -> line numbers.

    Raises:
        InputFormatError: a missing column, a short row or an empty value, naming file and line.
    """
    table: dict[str, list] = {name: [] for name in (*columns, "_line")}
    if ".jsonl" in path.suffixes:
        records = iter_jsonl(path)
    else:
        records = _iter_tsv(path, columns)
    for line_number, record in records:
        for name in columns:
            value = record.get(name)
            if value is None:
                raise InputFormatError(f"{path}:{line_number}: missing field {name!r}")
            if isinstance(value, str) and not has_visible_text(value) and name not in allow_empty:
                raise InputFormatError(f"{path}:{line_number}: field {name!r} has no visible text")
            table[name].append(value)
        table["_line"].append(line_number)
    if not table["_line"]:
        raise InputFormatError(f"{path}: no records")
    return table


def _iter_tsv(path: Path, columns: tuple[str, ...]):
    with open_text(path) as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            return
        missing = [name for name in columns if name not in header]
        if missing:
            raise InputFormatError(f"{path}:1: header lacks column(s) {', '.join(missing)} (has: {', '.join(header)})")
        for line_number, row in enumerate(reader, start=2):
            if not "".join(row).strip():
                continue
            if len(row) != len(header):
                raise InputFormatError(f"{path}:{line_number}: expected {len(header)} tab-separated columns, got {len(row)}")
            yield line_number, dict(zip(header, row, strict=True))


def parse_float(path: Path, line_number: int, column: str, value) -> float:
    """``float(value)``, or an error naming the file, line and column."""
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise InputFormatError(f"{path}:{line_number}: {column} {value!r} is not a number") from error
