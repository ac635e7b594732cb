"""Reading text files line by line with errors that name the file and line."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class InputFormatError(ValueError):
    """A record in an input file is malformed; the message names the file and line."""


def open_text(path: str | Path) -> IO[str]:
    """Open a UTF-8 text file, transparently decompressing ``.gz`` and ``.zst``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if path.suffix == ".zst":
        import zstandard

        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(path.open("rb")), encoding="utf-8")
    return path.open("r", encoding="utf-8")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file.

    Raises:
        InputFormatError: on a line that is not a JSON object.
    """
    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputFormatError(f"{path}:{line_number}: invalid JSON ({error.msg})") from error
            if not isinstance(record, dict):
                raise InputFormatError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            yield line_number, record


def read_texts(path: str | Path, field: str = "text") -> list[str]:
    """Read the texts to embed: one per line of a ``.txt`` file, or ``field`` of each JSONL object.

    Rows of the output follow the lines of the input, so a blank line in a ``.txt`` file or a
    missing/empty field in a JSONL record is an error naming its line rather than a silent skip.
    """
    path = Path(path)
    suffixes = [s for s in path.suffixes if s not in (".gz", ".zst")]
    if suffixes and suffixes[-1] in (".jsonl", ".json", ".ndjson"):
        texts = []
        for line_number, record in iter_jsonl(path):
            value = record.get(field)
            if not isinstance(value, str) or not value.strip():
                raise InputFormatError(f"{path}:{line_number}: field {field!r} is missing, empty or not a string")
            texts.append(value)
        return texts
    texts = []
    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            text = line.rstrip("\n")
            if not text.strip():
                raise InputFormatError(f"{path}:{line_number}: blank line (every line is one text to embed)")
            texts.append(text)
    return texts
