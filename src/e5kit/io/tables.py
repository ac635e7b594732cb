"""The one reader of tables of records: JSON lines, TSV and CSV, plain or compressed.

Every stage that reads records from a text table comes through here: BEIR queries, corpora and qrels,
evaluation task files, fine-tuning formats (FlagEmbedding JSONL, MS MARCO triples, NLI), teacher
scoring, pair shards, curation dumps and evaluation files for decontamination, texts to embed. Files
are opened through ``e5kit.io.files`` (any compression it reads; errors name the file and line).

Formats (:func:`table_format` picks one by the file name, compression suffixes left out):

* JSONL (``.jsonl``, ``.json``, ``.ndjson``): one JSON object per non-blank line.
* TSV (``.tsv``): one row per non-blank line, cells split on tabs, no quoting (a ``"`` is text: BEIR
  qrels, MS MARCO and SNLI are written so).
* CSV (``.csv``): the ``csv`` module's dialect: quoted cells may hold commas and line breaks (a record
  spanning lines is located at its last line).

:func:`iter_records` gives each row as a record of column -> value: a TSV/CSV header row names the
columns (or the caller names them, for headerless files such as qrels and MS MARCO triples).

Two modes, as in ``e5kit.io.files``. Strict (no ``skips``): the first malformed row raises
``InputFormatError`` ``"path:line: ..."`` on one line. Counted (a ``e5kit.io.files.Skips`` sink): a
malformed row (invalid UTF-8, bad JSON, not an object, a wrong number of cells, a missing column) is
passed over and counted under its reason with file and line, and a cut stream ends the file, counted.
A header that lacks a needed column is an error in both modes: no row of such a file could be read.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from e5kit.io.files import InputFormatError, Skips, content_suffix, iter_text_lines, skip_or_raise
from e5kit.io.text import has_visible_text

TableFormat = Literal["jsonl", "tsv", "csv"]
#: Content suffix (compression left out) -> table format.
SUFFIX_FORMATS: dict[str, TableFormat] = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv", ".csv": "csv"}
_SEPARATED = {"tsv": "tab-separated", "csv": "comma-separated"}

# Skip reasons of the counted mode (a report's keys, so they read as prose).
CORRUPT_JSON = "corrupt JSON line"
NOT_AN_OBJECT = "JSON line is not an object"
MALFORMED_CSV = "malformed CSV (rest of file)"


def table_format(path: str | Path, default: TableFormat | None = None) -> TableFormat | None:
    """The table format of ``path`` by its name (``docs.JSONL.gz`` -> jsonl), or ``default`` when the name says none."""
    return SUFFIX_FORMATS.get(content_suffix(path), default)


def iter_jsonl(path: str | Path, skips: Skips | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file.

    Raises:
        InputFormatError: (strict mode) a line that is not a JSON object (``"path:line: invalid JSON ..."``,
            ``"... expected a JSON object, got list"``), invalid UTF-8 or a cut stream, naming file and line.
        FileNotFoundError, e5kit.io.files.InputPathError: (strict mode) a path that is not a readable file.
    """
    for line_number, line in iter_text_lines(path, skips):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:  # JSONDecodeError, and float overflow of a huge number
            skip_or_raise(skips, CORRUPT_JSON, path, line_number, f"invalid JSON ({getattr(error, 'msg', error)})")
            continue
        if not isinstance(record, dict):
            skip_or_raise(skips, NOT_AN_OBJECT, path, line_number, f"expected a JSON object, got {type(record).__name__}")
            continue
        yield line_number, record


def _delimited_rows(path: str | Path, table: TableFormat, skips: Skips | None) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for every non-blank row of a TSV or CSV file."""
    if table == "tsv":
        for line_number, text in iter_text_lines(path, skips):
            if text.strip():
                yield line_number, text.split("\t")
        return
    line_number = 0  # the line the CSV parser is at: a record with a quoted line break is located at its last line

    def texts() -> Iterator[str]:
        nonlocal line_number
        for line_number, text in iter_text_lines(path, skips):  # noqa: B007 (the enclosing function reads line_number between yields)
            yield text + "\n"

    try:
        for cells in csv.reader(texts()):
            if len(cells) > 1 or (cells and cells[0].strip()):  # not a blank line (inside quotes, one is text)
                yield line_number, cells
    except csv.Error as error:  # an unclosed quote or a NUL byte: the parser cannot resynchronise
        skip_or_raise(skips, MALFORMED_CSV, path, line_number, f"malformed CSV ({error})")


def iter_records(
    path: str | Path,
    *,
    format: TableFormat | None = None,
    names: Sequence[str] | None = None,
    columns: Sequence[str] = (),
    column_name: Callable[[str], str] | None = None,
    skips: Skips | None = None,
    missing_hint: str = "",
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for every row of a JSONL, TSV or CSV table.

    A JSONL record is its object (JSON values); a TSV/CSV record maps each column to its cell (strings).

    Args:
        path: The file.
        format: jsonl, tsv or csv; None: by the file name (:func:`table_format`), TSV when it says nothing.
        names: The columns of a TSV/CSV file without a header row, in order; None: the first row is the header.
        columns: Columns every record must have (a JSON null counts as missing). A header row lacking one
            is an error in both modes; a JSONL record lacking one is a malformed row.
        column_name: Maps each header cell and JSONL key to the column it stands for (e.g. SNLI's
            ``sentence1`` to ``premise``, in any case); None: names are taken as they are.
        skips: None for strict mode; a sink to count malformed rows in and pass over them.
        missing_hint: Appended to the errors about a missing column.

    Raises:
        InputFormatError: a header lacking one of ``columns``; (strict mode) the first malformed row: bad
            JSON or not an object, a wrong number of cells (``"path:line: expected 3 tab-separated
            columns, got 2"``), a missing column, invalid UTF-8 or a cut stream; each naming file and line.
        FileNotFoundError, e5kit.io.files.InputPathError: (strict mode) a path that is not a readable file.
    """
    table = format or table_format(path, "tsv")
    if table == "jsonl":
        for line_number, record in iter_jsonl(path, skips):
            if column_name is not None:
                record = {column_name(key): value for key, value in record.items()}
            missing = next((name for name in columns if record.get(name) is None), None)
            if missing is not None:
                skip_or_raise(skips, f"missing field {missing!r}", path, line_number, f"missing field {missing!r}{missing_hint}")
                continue
            yield line_number, record
        return
    header = list(names) if names is not None else None
    for line_number, cells in _delimited_rows(path, table, skips):
        if header is None:
            header = [column_name(cell) for cell in cells] if column_name is not None else cells
            missing = [name for name in columns if name not in header]
            if missing:
                raise InputFormatError(f"{path}:{line_number}: header lacks column(s) {', '.join(missing)} (has: {', '.join(header)}){missing_hint}")
            continue
        if len(cells) != len(header):
            reason = f"expected {len(header)} {_SEPARATED[table]} columns, got {len(cells)}"
            skip_or_raise(skips, reason, path, line_number)
            continue
        yield line_number, dict(zip(header, cells, strict=True))


def read_columns(path: Path, columns: tuple[str, ...], allow_empty: tuple[str, ...] = (), missing_hint: str = "") -> dict[str, list]:
    """Read the named columns of a table (:func:`iter_records`, strict mode) into lists.

    Args:
        path: The file.
        columns: Columns (TSV/CSV header names or JSONL keys) that every record must have.
        allow_empty: Columns whose value may be empty (the caller counts and skips such records).
        missing_hint: Appended to the error about a missing column.

    Returns:
        Column name -> values in file order (strings for TSV/CSV, JSON values for JSONL), plus
        "_line" -> line numbers.

    Raises:
        InputFormatError: a missing column, a short row, a value without visible text, or no record at
            all, naming file (and line); :func:`iter_records`' errors.
    """
    table: dict[str, list] = {name: [] for name in (*columns, "_line")}
    for line_number, record in iter_records(path, columns=columns, missing_hint=missing_hint):
        for name in columns:
            value = record[name]
            if isinstance(value, str) and not has_visible_text(value) and name not in allow_empty:
                raise InputFormatError(f"{path}:{line_number}: field {name!r} has no visible text")
            table[name].append(value)
        table["_line"].append(line_number)
    if not table["_line"]:
        raise InputFormatError(f"{path}: no records")
    return table


def read_texts(path: str | Path, field: str = "text", jsonl: bool | None = None) -> list[str]:
    """Read the texts to embed: one per line of a text file, or ``field`` of each JSONL object.

    Rows of the output follow the lines of the input, so a blank line in a text file or a
    missing/empty field in a JSONL record is an error naming its line rather than a silent skip.
    ``jsonl`` says which the file is; None decides by its name (:func:`table_format`; standard input,
    ``-``, which has none: lines).

    Raises:
        InputFormatError: a line or field without visible text, bad JSON, invalid UTF-8 or a cut
            stream, naming file and line.
        FileNotFoundError, e5kit.io.files.InputPathError: a path that is not a readable file.
    """
    if jsonl if jsonl is not None else table_format(path) == "jsonl":
        texts = []
        for line_number, record in iter_jsonl(path):
            value = record.get(field)
            if not isinstance(value, str) or not has_visible_text(value):
                raise InputFormatError(f"{path}:{line_number}: field {field!r} is missing, not a string or has no visible text")
            texts.append(value)
        return texts
    texts = []
    for line_number, text in iter_text_lines(path):
        if not has_visible_text(text):
            raise InputFormatError(f"{path}:{line_number}: line without visible text (every line is one text to embed)")
        texts.append(text)
    return texts
