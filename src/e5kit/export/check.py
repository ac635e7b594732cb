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
from e5kit.io.text import has_visible_text


class CalibrationError(ValueError):
    """A calibration file that cannot be read or holds no text (the message names it)."""


class ExportCheckError(ValueError):
    """An export fell short of its fidelity bounds; it was not written (the output folder is as it was).

    Attributes:
        failures: One phrase per bound missed, naming the file and precision.
    """

    def __init__(self, failures: list[str]) -> None:
        super().__init__("export fidelity check failed: " + "; ".join(failures))
        self.failures = failures


def verified(export, verify) -> None:
    """Run ``verify(export)`` on an export still in its staging folder; raise ``ExportCheckError`` on failures,
    so the folder is discarded instead of replacing the output (a failed export never takes a good one's place)."""
    if verify is not None and (failures := verify(export)):
        raise ExportCheckError(failures)


def read_calibration(path: Path, count: int) -> list[str]:
    """Up to ``count`` texts spread evenly over ``path``: one per line, or (a JSONL file, by its name;
    any compression ``e5kit.io.files`` reads) objects with a string "text" and optional "title".

    Lines and records without visible text (``e5kit.io.text.has_visible_text``: blank, or zero-width
    characters only) are passed over, as the blank lines between paragraphs are.

    Raises:
        CalibrationError: naming the file (and line), when it is missing, unreadable, has a "text" or
            "title" that is not a string, or holds no visible text.
    """
    try:
        if table_format(path) == "jsonl":
            lines = [_record_text(path, number, record) for number, record in iter_records(path, format="jsonl", columns=("text",))]
        else:
            lines = [line for _, line in iter_text_lines(path)]
    except (OSError, InputFormatError) as error:
        raise CalibrationError(f"{path}: cannot read calibration texts ({type(error).__name__}: {error}); expected one text per line, or JSONL with a 'text' field") from error
    read = len(lines)
    lines = [line for line in lines if has_visible_text(line)]
    if not lines:
        raise CalibrationError(f"{path}: no calibration texts ({'the file is empty' if not read else f'none of its {read} lines has visible text'})")
    step = max(len(lines) / count, 1)
    return [lines[int(i * step)] for i in range(min(count, len(lines)))]


def _record_text(path: Path, line: int, record: dict) -> str:
    """"title text" of a calibration JSONL record."""
    for name in ("text", "title"):
        if record.get(name) is not None and not isinstance(record[name], str):
            raise CalibrationError(f"{path}:{line}: '{name}' is {type(record[name]).__name__}, expected a string")
    return f"{record.get('title') or ''} {record['text']}".strip()


def passage_role(encoder) -> str | None:
    """The role exports embed their calibration and check texts in: "passage" when the model has that
    prompt (prose is what the documents of a retrieval index are), else none."""
    return "passage" if "passage" in encoder.prompts else None


@dataclass
class Reference:
    """What every exported candidate is compared with: torch fp32's (n, dim) ``embeddings`` of ``texts`` in ``role``."""

    texts: list[str]
    role: str | None
    embeddings: np.ndarray

    @classmethod
    def of(cls, encoder, count: int) -> Reference:
        """``encoder`` (torch fp32) embedding ``count`` ``check_texts``."""
        texts, role = check_texts(count), passage_role(encoder)
        return cls(texts, role, encoder.encode(texts, role=role))


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


def one_batch(encoder, texts: list[str], role: str | None) -> np.ndarray:
    """``encoder``'s normalised (n, dim) embeddings of ``texts`` from one forward pass, every text padded to
    the longest: what ``Encoder.encode`` never does by itself (it cuts batches where padding costs more
    than a pass), and so the case a batch-independence check must run."""
    return encoder.backend.forward(*encoder.pad(encoder.token_ids(encoder.prepare(texts, role))), normalize=True)


def measure_fidelity(reference: Reference, candidate) -> Fidelity:
    """Compare ``candidate`` (an Encoder) with torch fp32's embeddings in ``reference``.

    The batch check cuts the first ``BATCH_CHECK_TEXTS`` texts to lengths spread from 3 words to all of
    them and embeds them alone and all in one forward pass (``one_batch``): a short text padded far past
    its length is where a runtime whose kernels depend on the input's shape shows it (texts of one
    length would hide it).
    """
    texts, role = reference.texts, reference.role
    batched = candidate.encode(texts, role=role)
    mean, worst = mean_cosine(reference.embeddings, batched)
    spread = [" ".join(text.split()[: 3 + i * 97 // BATCH_CHECK_TEXTS]) for i, text in enumerate(texts[:BATCH_CHECK_TEXTS])]
    alone = np.concatenate([candidate.encode([text], role=role, normalize=True) for text in spread])
    _, batch_worst = mean_cosine(alone, one_batch(candidate, spread, role))
    return Fidelity(precision=candidate.dtype, mean=mean, min=worst, batch_min=batch_worst, texts=len(texts))
