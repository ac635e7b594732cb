"""Decontamination: drop pairs that overlap evaluation data (BEIR/MTEB-style folders or files).

A side is contaminated when it shares an n-gram of ``ngram`` words with any evaluation text (or,
with ``max_overlap`` set, when at least that fraction of its n-grams occur in evaluation texts).
Sides shorter than ``ngram`` words are contaminated when they equal an evaluation text (case and
punctuation aside), which catches copied queries. N-grams are 64-bit rolling hashes held in a
sorted array, so the index for a whole BEIR corpus is a few MB and is shared by all workers as a file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e5kit.data.filters.base import FilterConfig, Verdict, words
from e5kit.data.skips import SkipCounter
from e5kit.io.hashing import stable_hash
from e5kit.io.pairs import Pair
from e5kit.io.tables import iter_records, table_format
from e5kit.io.text import has_visible_text

#: Fields/columns of evaluation files that hold text (BEIR corpus/queries, STS, NLI, classification).
TEXT_FIELDS = ("title", "text", "query", "question", "sentence1", "sentence2", "premise", "hypothesis", "answer")
_MULTIPLIER = np.uint64(0x100000001B3)
#: Table formats of evaluation files (``e5kit.io.tables``).
_EVAL_FORMATS = ("jsonl", "tsv")


class Config(FilterConfig):
    """Decontamination settings.

    Attributes:
        eval_paths: Evaluation folders (searched recursively) or files: JSON lines or TSV with a header.
        ngram: Words per n-gram (13, as in GPT-3's decontamination).
        max_overlap: None: any shared n-gram contaminates. A fraction: contaminated when at least
            this fraction of a side's n-grams occur in evaluation texts.
    """

    eval_paths: list[Path] = []
    ngram: int = 13
    max_overlap: float | None = None

    def active(self) -> bool:
        return bool(self.eval_paths)


def _token_hashes(tokens: list[str], cache: dict[str, int]) -> np.ndarray:
    values = []
    for token in tokens:
        value = cache.get(token)
        if value is None:
            value = cache[token] = stable_hash(token)
        values.append(value)
    return np.array(values, dtype=np.int64).view(np.uint64)


def ngram_hashes(token_hashes: np.ndarray, n: int) -> np.ndarray:
    """(len - n + 1,) int64 rolling hashes of every n-gram of a (len,) uint64 token-hash array."""
    count = len(token_hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    rolling = np.zeros(count, dtype=np.uint64)
    for offset in range(n):  # uint64 arithmetic wraps modulo 2**64, as a hash should
        rolling = rolling * _MULTIPLIER + token_hashes[offset : offset + count]
    return rolling.view(np.int64)


def eval_files(paths: list[Path]) -> list[Path]:
    """The evaluation files: each file of ``paths``, and the JSONL/TSV files (compressed or not) under each folder."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(f for f in path.rglob("*") if f.is_file() and table_format(f) in _EVAL_FORMATS))
        else:
            files.append(path)
    return files


def iter_eval_texts(path: Path, skips: SkipCounter) -> Iterator[str]:
    """Texts of one evaluation file: the text fields of JSON lines, or the text columns of a TSV (header row)."""
    for _, record in iter_records(path, format=table_format(path, "jsonl"), skips=skips):
        yield from (record[name] for name in TEXT_FIELDS if isinstance(record.get(name), str) and has_visible_text(record[name]))


@dataclass
class EvalIndex:
    """Sorted unique n-gram hashes and whole-text hashes of the evaluation texts."""

    ngrams: np.ndarray
    texts: np.ndarray
    ngram: int

    @classmethod
    def build(cls, paths: list[Path], ngram: int) -> tuple[EvalIndex, SkipCounter]:
        """Index every text of ``paths``; returns the index and the eval-file records skipped (per reason, with locations)."""
        skips = SkipCounter()
        cache: dict[str, int] = {}
        ngram_parts, text_hashes = [], []
        for path in eval_files(paths):
            for text in iter_eval_texts(path, skips):
                tokens = words(text)
                text_hashes.append(stable_hash(" ".join(tokens)))
                ngram_parts.append(ngram_hashes(_token_hashes(tokens, cache), ngram))
        ngrams = np.unique(np.concatenate(ngram_parts)) if ngram_parts else np.empty(0, dtype=np.int64)
        return cls(ngrams, np.unique(np.array(text_hashes, dtype=np.int64)), ngram), skips

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(handle, ngrams=self.ngrams, texts=self.texts, ngram=np.int64(self.ngram))

    @classmethod
    def load(cls, path: Path) -> EvalIndex:
        data = np.load(path)
        return cls(data["ngrams"], data["texts"], int(data["ngram"]))


def _contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    positions = np.searchsorted(sorted_values, values).clip(max=len(sorted_values) - 1)
    return sorted_values[positions] == values


class DecontaminationFilter:
    """Drop pairs whose query or passage overlaps the evaluation index."""

    name = "decontaminate"

    def __init__(self, config: Config, index: EvalIndex) -> None:
        self.config = config
        self.index = index
        self._cache: dict[str, int] = {}

    def overlap(self, text: str) -> float:
        """Fraction of the text's n-grams found in evaluation texts (short texts: 1.0 on an exact match)."""
        tokens = words(text)
        if len(tokens) < self.index.ngram:
            return float(_contains(self.index.texts, np.array([stable_hash(" ".join(tokens))], dtype=np.int64))[0])
        hits = _contains(self.index.ngrams, ngram_hashes(_token_hashes(tokens, self._cache), self.index.ngram))
        return float(hits.mean())

    def keep(self, pair: Pair) -> Verdict:
        for side, text in (("query", pair.query), ("passage", pair.passage)):
            overlap = self.overlap(text)
            limit = self.config.max_overlap
            if (limit is None and overlap > 0) or (limit is not None and overlap >= limit):
                return f"{side} overlaps evaluation data"
        return True
