"""The texts and the fidelity rule of ``e5kit export``: the int8 calibration sample read from a file,
the real prose the check embeds with both torch and the export, and the bounds every exported
backend and precision is held to (issue 17)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e5kit.encoder.precision import MIN_BATCH_COSINE, MIN_BF16_COSINE, MIN_INT8_COSINE, mean_cosine
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


#: Lowest mean cosine to torch fp32 on the check texts, by the candidate's precision
#: (``Encoder.dtype``): a float32 runtime differs from torch only in summation order, bf16 keeps 8
#: bits of mantissa, and int8 is held to issue 17's bound.
MIN_MEAN_COSINE = {"float32": 0.9999, "bfloat16": MIN_BF16_COSINE, "int8": MIN_INT8_COSINE}
#: Texts of the batch-independence check, each embedded alone (a forward pass each) and in one batch: a
#: flip of one int8 level shows in about one text of 200 (OpenVINO int8 IR, prose of mixed lengths).
BATCH_CHECK_TEXTS = 128


@dataclass
class Fidelity:
    """How closely an exported Encoder reproduces torch fp32 (``measure_fidelity``).

    Attributes:
        precision: The candidate's ``Encoder.dtype`` ("float32", "bfloat16", "int8"), which sets its bound.
        mean: Mean cosine to torch fp32 over the check texts (embedded in batches).
        min: The lowest of those cosines.
        batch_min: Lowest cosine between a text embedded alone and in one batch (``BATCH_CHECK_TEXTS`` texts of spread lengths).
        texts: How many check texts.
    """

    precision: str
    mean: float
    min: float
    batch_min: float
    texts: int

    def failures(self) -> list[str]:
        """What falls short of ``MIN_MEAN_COSINE`` and ``MIN_BATCH_COSINE``, one phrase each."""
        failures = []
        if self.mean < MIN_MEAN_COSINE[self.precision]:
            failures.append(f"{self.precision}: mean cosine {self.mean:.4f} < {MIN_MEAN_COSINE[self.precision]}")
        if self.batch_min < MIN_BATCH_COSINE:
            failures.append(f"{self.precision}: a text's vector depends on its batch (cosine {self.batch_min:.6f} < {MIN_BATCH_COSINE})")
        return failures


def measure_fidelity(expected: np.ndarray, candidate, texts: list[str], role: str | None) -> Fidelity:
    """Compare ``candidate`` (an Encoder) with torch fp32's ``expected`` (n, dim) embeddings of ``texts``.

    The batch check cuts the first ``BATCH_CHECK_TEXTS`` texts to lengths spread from 3 words to all of
    them and embeds them alone and as one batch: a short text padded far past its length is where a
    runtime whose kernels depend on the input's shape shows it (texts of one length would hide it).
    """
    batched = candidate.encode(texts, role=role)
    mean, worst = mean_cosine(expected, batched)
    spread = [" ".join(text.split()[: 3 + i * 97 // BATCH_CHECK_TEXTS]) for i, text in enumerate(texts[:BATCH_CHECK_TEXTS])]
    alone = np.concatenate([candidate.encode([text], role=role) for text in spread])
    _, batch_worst = mean_cosine(alone, candidate.encode(spread, role=role, batch_size=len(spread)))
    return Fidelity(precision=candidate.dtype, mean=mean, min=worst, batch_min=batch_worst, texts=len(texts))
