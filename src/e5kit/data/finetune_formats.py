"""Fine-tuning data: BEIR train qrels, MS MARCO triples, NLI and FlagEmbedding JSONL as one example type.

Every reader yields :class:`FinetuneExample` records (a query, its positives, optional hard negatives
and optional teacher scores). A record that cannot be used -- a query without positives, an id missing
from the corpus, teacher scores of the wrong length -- is skipped and counted in a :class:`RecordIssues`
under its reason, with the first few records named, so nothing is dropped silently.

Example:
    >>> issues = RecordIssues()
    >>> examples = list(read_examples("flag", "train.jsonl", issues))     # doctest: +SKIP
    >>> issues.describe()                                                  # doctest: +SKIP
    'teacher scores of the wrong length: 2 (train.jsonl:14, train.jsonl:90)'
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e5kit.io.files import check_input_file
from e5kit.io.tables import iter_jsonl, iter_records
from e5kit.io.text import has_visible_text

logger = logging.getLogger(__name__)

#: Input formats ``read_examples`` understands.
FORMATS = ("flag", "beir", "msmarco", "nli")
#: NLI label spellings (SNLI/MultiNLI text labels and the Hugging Face integer labels).
NLI_LABELS = {
    "entailment": "entailment",
    "0": "entailment",
    "neutral": "neutral",
    "1": "neutral",
    "contradiction": "contradiction",
    "2": "contradiction",
}
NO_POSITIVE = "query without positives"
WRONG_SCORES = "teacher scores of the wrong length"
NEGATIVE_WITHOUT_VISIBLE_TEXT = "negative without visible text left out (the group is kept)"
#: The columns of an MS MARCO text triples file (no header row).
TRIPLE_COLUMNS = ("query", "positive", "negative")
#: The columns an NLI file must have, and their other spellings (SNLI/MultiNLI TSV headers); names are read in any case.
NLI_READS = ("premise", "hypothesis", "label")
NLI_COLUMNS = {"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"}


@dataclass
class FinetuneExample:
    """One fine-tuning query with its candidates (the FlagEmbedding record, plus provenance).

    Attributes:
        query: Query text (no role prefix; the encoder adds it).
        positives: Relevant passages (at least one).
        negatives: Hard negatives, best first.
        positive_scores: Teacher score of each positive, or None.
        negative_scores: Teacher score of each negative, or None.
        record: Where it came from ("file:line" or "qrels file query ID"), for error messages.
        query_id: The query's id, when the source has ids.
        positive_ids: Ids of the positives, when the source has ids.
        negative_ids: Ids of the negatives, when the source has ids.
    """

    query: str
    positives: list[str]
    negatives: list[str] = field(default_factory=list)
    positive_scores: list[float] | None = None
    negative_scores: list[float] | None = None
    record: str = ""
    query_id: str | None = None
    positive_ids: list[str] | None = None
    negative_ids: list[str] | None = None

    @property
    def has_teacher_scores(self) -> bool:
        return self.positive_scores is not None and self.negative_scores is not None

    def to_json(self) -> dict[str, Any]:
        """The FlagEmbedding record ``{query, pos, neg[, pos_scores, neg_scores]}`` plus ids when known."""
        record: dict[str, Any] = {"query": self.query, "pos": self.positives, "neg": self.negatives}
        if self.has_teacher_scores:
            record["pos_scores"] = self.positive_scores
            record["neg_scores"] = self.negative_scores
        for key, value in (("query_id", self.query_id), ("pos_ids", self.positive_ids), ("neg_ids", self.negative_ids)):
            if value is not None:
                record[key] = value
        return record


class RecordIssues:
    """Skipped records, counted by reason, with the first ``keep`` records of each reason named.

    It is an ``e5kit.io.files.Skips`` sink, so the table reader counts its malformed rows here too.

    Args:
        keep: How many records to name per reason.
    """

    def __init__(self, keep: int = 5) -> None:
        self.keep = keep
        self.counts: Counter = Counter()
        self.named: dict[str, list[str]] = {}

    def add(self, reason: str, record: str | Path | None, line: int | None = None) -> None:
        """Count one skipped record under ``reason``: ``record`` names it (a "file:line", an id, or a file
        whose ``line`` is given)."""
        self.counts[reason] += 1
        named = self.named.setdefault(reason, [])
        if len(named) < self.keep:
            name = f"{record}:{line}" if line is not None else str(record)
            named.append(name)
            logger.warning("skipped %s: %s", name, reason)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> dict[str, dict[str, Any]]:
        """``{reason: {"count": n, "records": [first named records]}}`` (JSON-serialisable)."""
        return {reason: {"count": count, "records": self.named[reason]} for reason, count in self.counts.most_common()}

    def describe(self) -> str:
        """One line per reason: ``reason: n (record, record, ...)``; "none" when nothing was skipped."""
        if not self.counts:
            return "none"
        return "; ".join(
            f"{reason}: {count} ({', '.join(self.named[reason])}{', ...' if count > len(self.named[reason]) else ''})"
            for reason, count in self.counts.most_common()
        )


def invalid_reason(example: FinetuneExample) -> str | None:
    """Why an example cannot be trained on, or None when it can."""
    if not isinstance(example.query, str) or not has_visible_text(example.query):
        return "query missing or without visible text"
    if not example.positives:
        return NO_POSITIVE
    for name, texts in (("positive", example.positives), ("negative", example.negatives)):
        if not all(isinstance(text, str) and has_visible_text(text) for text in texts):
            return f"a {name} is missing, not a string or without visible text"
    if (example.positive_scores is None) != (example.negative_scores is None):
        return "pos_scores and neg_scores must be given together"
    if example.has_teacher_scores:
        if len(example.positive_scores) != len(example.positives) or len(example.negative_scores) != len(example.negatives):
            return WRONG_SCORES
        if not all(
            isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)
            for score in example.positive_scores + example.negative_scores
        ):
            return "a teacher score is not a finite number"  # Infinity, NaN, 1e400 would make the loss NaN
    return None


def _without_invisible_negatives(example: FinetuneExample, issues: RecordIssues) -> FinetuneExample:
    """Leave out negatives without visible text (with their teacher score and id), counted; the group stays.

    Teacher scoring keeps an empty passage of a mined file (score 0), but an empty negative teaches nothing,
    so fine-tuning drops the passage, not the query's whole group.
    """
    keep = [i for i, text in enumerate(example.negatives) if not (isinstance(text, str) and not has_visible_text(text))]
    if len(keep) == len(example.negatives):
        return example
    issues.add(NEGATIVE_WITHOUT_VISIBLE_TEXT, example.record)

    count = len(example.negatives)

    def aligned(values):
        # Misaligned scores are left as they are for invalid_reason to name.
        return [values[i] for i in keep] if isinstance(values, list) and len(values) == count else values

    example.negatives = [example.negatives[i] for i in keep]
    example.negative_scores = aligned(example.negative_scores)
    example.negative_ids = aligned(example.negative_ids)
    return example


def _checked(example: FinetuneExample, issues: RecordIssues) -> FinetuneExample | None:
    example = _without_invisible_negatives(example, issues)
    reason = invalid_reason(example)
    if reason is not None:
        issues.add(reason, example.record)
        return None
    return example


def _list_field(record: dict[str, Any], key: str) -> list | None:
    value = record.get(key)
    if value is None or isinstance(value, list):
        return value
    return [value]  # some files store a single positive as a bare string


def read_flag_jsonl(path: str | Path, issues: RecordIssues) -> Iterator[FinetuneExample]:
    """FlagEmbedding JSONL: ``{"query", "pos": [...], "neg": [...], "pos_scores"?, "neg_scores"?}`` per line.

    The ids written by ``e5kit mine-negatives`` (``query_id``, ``pos_ids``, ``neg_ids``) are kept.
    """
    for line_number, record in iter_jsonl(path):
        example = FinetuneExample(
            query=record.get("query"),
            positives=_list_field(record, "pos") or [],
            negatives=_list_field(record, "neg") or [],
            positive_scores=_list_field(record, "pos_scores"),
            negative_scores=_list_field(record, "neg_scores"),
            record=f"{path}:{line_number}",
            query_id=record.get("query_id"),
            positive_ids=record.get("pos_ids"),
            negative_ids=record.get("neg_ids"),
        )
        if _checked(example, issues) is not None:
            yield example


def beir_positives(
    qrels: dict[str, dict[str, int]],
    queries: dict[str, str],
    corpus_ids: set[str] | dict,
    issues: RecordIssues,
    origin: str = "qrels",
) -> dict[str, list[str]]:
    """Query id -> ids of its relevant documents (qrels score > 0), checked against queries and corpus.

    A judged query missing from ``queries``, a document id missing from the corpus (that judgement
    only) and a query left without any relevant document are counted in ``issues``.
    """
    positives: dict[str, list[str]] = {}
    for query_id, judged in qrels.items():
        name = f"{origin} query {query_id!r}"
        if query_id not in queries:
            issues.add("query id not in the queries file", name)
            continue
        relevant = []
        for doc_id, score in judged.items():
            if score <= 0:
                continue
            if doc_id not in corpus_ids:
                issues.add("document id not in the corpus", f"{name} document {doc_id!r}")
                continue
            relevant.append(doc_id)
        if not relevant:
            issues.add(NO_POSITIVE, name)
            continue
        positives[query_id] = relevant
    return positives


def read_beir(folder: str | Path, issues: RecordIssues, split: str = "train") -> Iterator[FinetuneExample]:
    """A BEIR folder (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/<split>.tsv): one example per judged query.

    Negatives are left empty: they come from mining (``e5kit mine-negatives``) or from in-batch and
    random passages during fine-tuning.
    """
    from e5kit.io.beir import document_text, find_file, load_corpus, load_qrels, load_queries

    folder = Path(folder)
    corpus = load_corpus(find_file(folder, "corpus.jsonl"))
    queries = load_queries(find_file(folder, "queries.jsonl"))
    qrels_path = folder / "qrels" / f"{split}.tsv"
    positives = beir_positives(load_qrels(qrels_path), queries, corpus, issues, origin=str(qrels_path))
    for query_id, doc_ids in positives.items():
        yield FinetuneExample(
            query=queries[query_id],
            positives=[document_text(corpus[doc_id]) for doc_id in doc_ids],
            record=f"{qrels_path} query {query_id!r}",
            query_id=query_id,
            positive_ids=doc_ids,
        )


def _grouped(groups: dict[str, FinetuneExample], issues: RecordIssues) -> Iterator[FinetuneExample]:
    for example in groups.values():
        if _checked(example, issues) is not None:
            yield example


def read_msmarco_triples(path: str | Path, issues: RecordIssues) -> Iterator[FinetuneExample]:
    """MS MARCO text triples (``query <tab> positive <tab> negative`` per line, no header), grouped by query.

    The file is grouped in memory: all positives and negatives of a query form one example. A row without
    three cells, a line of invalid UTF-8 and a cut stream (the rows before it are kept) are counted in
    ``issues`` with their line.

    Raises:
        FileNotFoundError, e5kit.io.files.InputPathError: ``path`` is not a readable file (named).
    """
    check_input_file(path)  # only what reading meets is counted; a wrong path is the caller's error
    groups: dict[str, FinetuneExample] = {}
    for line_number, row in iter_records(path, format="tsv", names=TRIPLE_COLUMNS, skips=issues):
        query, positive, negative = (row[name].strip() for name in TRIPLE_COLUMNS)
        example = groups.setdefault(query, FinetuneExample(query=query, positives=[], record=f"{path}:{line_number}"))
        if positive not in example.positives:
            example.positives.append(positive)
        if negative not in example.negatives:
            example.negatives.append(negative)
    yield from _grouped(groups, issues)


def _nli_column(name: str) -> str:
    name = name.strip().lower()
    return NLI_COLUMNS.get(name, name)


def read_nli(path: str | Path, issues: RecordIssues) -> Iterator[FinetuneExample]:
    """NLI pairs grouped by premise: entailments are positives, contradictions hard negatives (E5 section 3).

    A TSV with a header row (SNLI/MultiNLI: ``sentence1``, ``sentence2``, ``gold_label``) or JSONL
    (``premise``, ``hypothesis``, ``label``). Neutral pairs are not used (counted), nor are malformed rows
    (without the three columns, invalid UTF-8, bad JSON; a cut stream ends the file), each counted with
    its line. Random negatives are added at training time.

    Raises:
        FileNotFoundError, e5kit.io.files.InputPathError: ``path`` is not a readable file (named).
        e5kit.io.files.InputFormatError: a TSV header without the premise, hypothesis or label column, naming
            file and line.
    """
    check_input_file(path)  # only what reading meets is counted; a wrong path is the caller's error
    groups: dict[str, FinetuneExample] = {}
    hint = f" (NLI reads {', '.join(f'{column} or {name}' for name, column in NLI_COLUMNS.items())})"
    rows = iter_records(path, columns=NLI_READS, column_name=_nli_column, skips=issues, missing_hint=hint)
    for line_number, row in rows:
        record = f"{path}:{line_number}"
        premise, hypothesis, label = (row[name] for name in NLI_READS)
        kind = NLI_LABELS.get(str(label).strip().lower())
        if kind is None:
            issues.add(f"unknown NLI label {label!r}", record)
            continue
        if not (isinstance(premise, str) and has_visible_text(premise) and isinstance(hypothesis, str) and has_visible_text(hypothesis)):
            issues.add("premise or hypothesis missing or without visible text", record)
            continue
        if kind == "neutral":
            issues.add("neutral pair (not used)", record)
            continue
        example = groups.setdefault(premise.strip(), FinetuneExample(query=premise.strip(), positives=[], record=record))
        (example.positives if kind == "entailment" else example.negatives).append(hypothesis.strip())
    yield from _grouped(groups, issues)


def read_examples(kind: str, path: str | Path, issues: RecordIssues, *, split: str = "train") -> Iterator[FinetuneExample]:
    """Read fine-tuning examples of format ``kind`` (one of ``FORMATS``); ``split`` applies to "beir".

    Raises:
        FileNotFoundError: a missing file or folder (named).
        e5kit.io.files.InputFormatError: a file that is not of the format at all (named with its line).
    """
    if kind == "flag":
        return read_flag_jsonl(path, issues)
    if kind == "beir":
        return read_beir(path, issues, split=split)
    if kind == "msmarco":
        return read_msmarco_triples(path, issues)
    if kind == "nli":
        return read_nli(path, issues)
    raise ValueError(f"unknown fine-tuning format {kind!r}; expected one of {', '.join(FORMATS)}")
