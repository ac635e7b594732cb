"""Loading BEIR-format folders: corpus.jsonl[.gz], queries.jsonl[.gz], qrels/<split>.tsv.

Every malformed record is an error naming its file and line, so a score is never computed on
silently damaged data.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

from e5kit.textio import InputFormatError, iter_jsonl, open_text


class BeirData(NamedTuple):
    """One BEIR split.

    Attributes:
        corpus: doc id -> {"title": str, "text": str}.
        queries: query id -> text; every query of queries.jsonl, with or without qrels for this split.
        qrels: query id -> {doc id: relevance score}; only scores > 0 count as relevant.
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def find_file(folder: Path, name: str) -> Path:
    """``folder/name`` or ``folder/name.gz``, whichever exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: no {name} or {name}.gz")


def _record_id(path: Path, line_number: int, record: dict) -> str:
    value = record.get("_id")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputFormatError(f"{path}:{line_number}: missing '_id'")
    return str(value)


def _string_field(path: Path, line_number: int, record: dict, field: str, required: bool) -> str:
    value = record.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InputFormatError(f"{path}:{line_number}: field {field!r} is missing or not a string")
    return value


def load_corpus(path: Path) -> dict[str, dict[str, str]]:
    """Read corpus.jsonl records ``{"_id", "title"?, "text"}``.

    Raises:
        InputFormatError: malformed JSON, a missing id or text, a duplicate id, a document with
            neither title nor text, or an empty corpus (each naming file and line).
    """
    corpus: dict[str, dict[str, str]] = {}
    for line_number, record in iter_jsonl(path):
        doc_id = _record_id(path, line_number, record)
        if doc_id in corpus:
            raise InputFormatError(f"{path}:{line_number}: duplicate document id {doc_id!r}")
        title = _string_field(path, line_number, record, "title", required=False)
        text = _string_field(path, line_number, record, "text", required=True)
        if not (title.strip() or text.strip()):
            raise InputFormatError(f"{path}:{line_number}: document {doc_id!r} has neither title nor text")
        corpus[doc_id] = {"title": title, "text": text}
    if not corpus:
        raise InputFormatError(f"{path}: the corpus is empty")
    return corpus


def load_queries(path: Path) -> dict[str, str]:
    """Read queries.jsonl records ``{"_id", "text"}``; errors name file and line."""
    queries: dict[str, str] = {}
    for line_number, record in iter_jsonl(path):
        query_id = _record_id(path, line_number, record)
        if query_id in queries:
            raise InputFormatError(f"{path}:{line_number}: duplicate query id {query_id!r}")
        text = _string_field(path, line_number, record, "text", required=True)
        if not text.strip():
            raise InputFormatError(f"{path}:{line_number}: query {query_id!r} has empty text")
        queries[query_id] = text
    return queries


def load_qrels(
    path: Path,
    corpus: dict[str, dict[str, str]] | None = None,
    queries: dict[str, str] | None = None,
) -> dict[str, dict[str, int]]:
    """Read a qrels TSV: ``query-id <tab> corpus-id <tab> score``, with an optional header row.

    Args:
        path: The qrels file.
        corpus: When given, every judged document id must be in it.
        queries: When given, every judged query id must be in it.

    Raises:
        InputFormatError: a row without three columns, a non-integer score, a repeated pair, an id
            missing from the corpus or queries, or a file without any judgement (naming file and line).
    """
    qrels: dict[str, dict[str, int]] = {}
    with open_text(path) as handle:
        for line_number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not "".join(row).strip():
                continue
            if line_number == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(row) != 3:
                raise InputFormatError(f"{path}:{line_number}: expected 3 tab-separated columns, got {len(row)}")
            query_id, doc_id, score_text = (cell.strip() for cell in row)
            try:
                score = int(score_text)
            except ValueError as error:
                raise InputFormatError(f"{path}:{line_number}: score {score_text!r} is not an integer") from error
            if queries is not None and query_id not in queries:
                raise InputFormatError(f"{path}:{line_number}: query id {query_id!r} is not in the queries file")
            if corpus is not None and doc_id not in corpus:
                raise InputFormatError(f"{path}:{line_number}: document id {doc_id!r} is not in the corpus")
            judged = qrels.setdefault(query_id, {})
            if doc_id in judged:
                raise InputFormatError(f"{path}:{line_number}: pair ({query_id}, {doc_id}) is judged twice")
            judged[doc_id] = score
    if not qrels:
        raise InputFormatError(f"{path}: no relevance judgements")
    return qrels


def load_beir(data_dir: str | Path, split: str = "test") -> BeirData:
    """Load a BEIR folder's corpus, queries and the qrels of ``split``.

    Args:
        data_dir: Folder with corpus.jsonl[.gz], queries.jsonl[.gz] and qrels/<split>.tsv.
        split: Which qrels file to read.

    Returns:
        ``BeirData(corpus, queries, qrels)``; it unpacks as a 3-tuple.

    Raises:
        FileNotFoundError: a file is missing (named).
        InputFormatError: a malformed record, or a qrels id that is not in the corpus or queries
            (naming file and line).
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    corpus = load_corpus(find_file(folder, "corpus.jsonl"))
    queries = load_queries(find_file(folder, "queries.jsonl"))
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise FileNotFoundError(f"{qrels_path}: no such file (splits with qrels: {', '.join(available) or 'none'})")
    qrels = load_qrels(qrels_path, corpus=corpus, queries=queries)
    return BeirData(corpus, queries, qrels)


def document_text(document: dict[str, str]) -> str:
    """BEIR's document input: "title text", stripped."""
    return f"{document.get('title', '')} {document['text']}".strip()
