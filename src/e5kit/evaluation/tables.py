"""Finding and reading the local task files (TSV with a header row, or JSONL) through the one table
reader (``e5kit.io.tables``), with errors naming file and line.

Each task reads named fields (STS: sentence1, sentence2, score); a column mapping
(``{"sentence1": "sentence_A"}``) reads a file whose columns are named otherwise, e.g. SICK's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from e5kit.io.files import COMPRESSED_SUFFIXES, InputFormatError, find_compressed
from e5kit.io.tables import read_columns

SUFFIXES = (".tsv", ".jsonl")


def split_file(data: str | Path, split: str) -> Path:
    """``data`` itself when it is not a folder, else ``data/<split>.tsv`` or ``data/<split>.jsonl``, each
    possibly compressed (``.gz``, ``.bz2``, ``.xz``, ``.lzma``, ``.zst``)."""
    path = Path(data)
    if not path.is_dir():
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        return path
    for suffix in SUFFIXES:
        found = find_compressed(path, f"{split}{suffix}")
        if found is not None:
            return found
    raise FileNotFoundError(f"{path}: no {split}.tsv or {split}.jsonl (plain or {', '.join(COMPRESSED_SUFFIXES)})")


def column_names(fields: tuple[str, ...], columns: Mapping[str, str] | None) -> dict[str, str]:
    """Field -> the file's column that holds it: ``columns[field]`` when mapped, else the field's own name.

    Raises:
        ValueError: ``columns`` maps a field the task does not read, or two fields to one column.
    """
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(fields))
    if unknown:
        raise ValueError(f"the column mapping names unknown field(s) {', '.join(unknown)}; this task reads {', '.join(fields)}")
    names = {field: columns.get(field, field) for field in fields}
    shared = sorted({name for name in names.values() if list(names.values()).count(name) > 1})
    if shared:
        raise ValueError(f"the column mapping reads more than one of the fields {', '.join(fields)} from column(s) {', '.join(shared)}")
    return names


def read_fields(
    path: Path, fields: tuple[str, ...], columns: Mapping[str, str] | None = None, allow_empty: tuple[str, ...] = ()
) -> dict[str, list]:
    """``e5kit.io.tables.read_columns`` of a task's ``fields``, each read from its column (``column_names``).

    Returns:
        Field name -> values in file order, plus "_line" -> line numbers.

    Raises:
        InputFormatError: a missing column (its name in the file; the message says how to map it), a
            short row or an empty value, naming file and line.
        ValueError: a bad mapping (``column_names``).
    """
    names = column_names(fields, columns)
    hint = "; map the task's fields to your columns with --columns FIELD=COLUMN,... (columns: in a config)"
    table = read_columns(path, tuple(names.values()), tuple(names[field] for field in allow_empty), missing_hint=hint)
    return {**{field: table[name] for field, name in names.items()}, "_line": table["_line"]}


def parse_float(path: Path, line_number: int, column: str, value) -> float:
    """``float(value)``, or an error naming the file, line and column.

    Raises:
        InputFormatError: the value is not a number, or not a finite one (``inf``, ``NaN``, ``1e400``).
    """
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError) as error:
        raise InputFormatError(f"{path}:{line_number}: {column} {value!r} is not a number") from error
    if not math.isfinite(number):
        raise InputFormatError(f"{path}:{line_number}: {column} {value!r} is not a finite number")
    return number
