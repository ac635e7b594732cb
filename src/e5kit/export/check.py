"""The texts of ``e5kit export onnx``: the int8 calibration sample read from a file, and the real
prose its fidelity check embeds with both torch and the export."""

from __future__ import annotations

from pathlib import Path

from e5kit.io.files import InputFormatError, iter_text_lines
from e5kit.io.tables import iter_records, table_format


class CalibrationError(ValueError):
    """A calibration file that cannot be read or holds no text (the message names it)."""


def read_calibration(path: Path, count: int) -> list[str]:
    """Up to ``count`` texts spread evenly over ``path``: one per non-blank line, or (a JSONL file, by its name;
    any compression ``e5kit.io.files`` reads) objects with "text" and optional "title".

    Raises:
        CalibrationError: naming the file (and line), when it is missing, unreadable, or holds no text.
    """
    try:
        if table_format(path) == "jsonl":
            records = iter_records(path, format="jsonl", columns=("text",))
            lines = [f"{record.get('title') or ''} {record['text']}".strip() for _, record in records]
        else:
            lines = [line for _, line in iter_text_lines(path) if line.strip()]
    except (OSError, InputFormatError) as error:
        raise CalibrationError(f"{path}: cannot read calibration texts ({type(error).__name__}: {error}); expected one text per line, or JSONL with a 'text' field") from error
    if not lines:
        raise CalibrationError(f"{path}: no calibration texts (the file is empty)")
    step = max(len(lines) / count, 1)
    return [lines[int(i * step)] for i in range(min(count, len(lines)))]


def check_texts(count: int) -> list[str]:
    """``count`` real prose passages of ~100 words from the standard library's documentation."""
    from e5kit.data.readers.pydoc import iter_module_docs

    texts = []
    for record in iter_module_docs():
        words = record.text.split()
        texts += [" ".join(words[i : i + 100]) for i in range(0, len(words) - 20, 100)]
        if len(texts) >= count:
            return texts[:count]
    return texts
