"""Loading BEIR-format folders: corpus.jsonl[.gz], queries.jsonl[.gz], qrels/<split>.tsv, and the
corpus rules every stage shares (evaluation, mining, teacher scoring, the index).

Every malformed record is an error naming its file and line, so a score is never computed on
silently damaged data.

Empty passages: a document without visible text (``e5kit.io.text.has_visible_text`` of its "title text":
empty, whitespace, or only zero-width/format characters; BEIR FiQA has some) is well-formed data, not an
error. It stays in the corpus under its id, is never sent to an encoder (which refuses such texts),
gets an all-zero embedding (dot/cosine score 0; BM25 scores it 0 too), and every stage counts it.
``encode_corpus`` is that rule for every stage that embeds a corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from e5kit.io.text import has_visible_text
from e5kit.io.files import COMPRESSED_SUFFIXES, InputFormatError, find_compressed, iter_jsonl, iter_tsv_rows


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
    """``folder/name`` or a compressed ``folder/name.gz`` (``.bz2``, ``.xz``, ``.lzma``, ``.zst``), whichever exists."""
    found = find_compressed(folder, name)
    if found is None:
        raise FileNotFoundError(f"{folder}: no {name} (or {name} with {', '.join(COMPRESSED_SUFFIXES)})")
    return found


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

    A document with empty title and text is kept (an empty passage, see the module docstring).

    Raises:
        InputFormatError: malformed JSON, a missing id or text field, a duplicate id, or a file
            without any record (each naming file and line).
    """
    corpus: dict[str, dict[str, str]] = {}
    for line_number, record in iter_jsonl(path):
        doc_id = _record_id(path, line_number, record)
        if doc_id in corpus:
            raise InputFormatError(f"{path}:{line_number}: duplicate document id {doc_id!r}")
        title = _string_field(path, line_number, record, "title", required=False)
        text = _string_field(path, line_number, record, "text", required=True)
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
        if not has_visible_text(text):
            raise InputFormatError(f"{path}:{line_number}: query {query_id!r} has no visible text")
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
    for line_number, row in iter_tsv_rows(path):
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
    qrels_path = find_compressed(folder / "qrels", f"{split}.tsv")
    if qrels_path is None:
        available = sorted(p.name.split(".")[0] for p in (folder / "qrels").glob("*.tsv*"))
        raise FileNotFoundError(f"{folder / 'qrels' / f'{split}.tsv'}: no such file (splits with qrels: {', '.join(available) or 'none'})")
    qrels = load_qrels(qrels_path, corpus=corpus, queries=queries)
    return BeirData(corpus, queries, qrels)


def document_text(document: dict[str, str]) -> str:
    """BEIR's document input: "title text", stripped."""
    return f"{document.get('title', '')} {document['text']}".strip()


def empty_mask(texts: Sequence[str]) -> np.ndarray:
    """(len(texts),) bool: True for each text without visible text (an empty passage)."""
    return np.fromiter((not has_visible_text(text) for text in texts), dtype=bool, count=len(texts))


class EncodedCorpus(NamedTuple):
    """Passage embeddings with the empty passages marked.

    Attributes:
        embeddings: (len(texts), dim) float32; all-zero rows for empty passages.
        empty: (len(texts),) bool, True where the passage had no visible text.
    """

    embeddings: np.ndarray
    empty: np.ndarray

    @property
    def empty_count(self) -> int:
        return int(self.empty.sum())


def encode_corpus(encoder, texts: Sequence[str], role: str | None = "passage", **options) -> EncodedCorpus:
    """Embed corpus passages; empty passages are not sent to ``encoder`` and get all-zero rows.

    The one rule every stage that embeds a corpus follows (evaluation, dense mining, the bi-encoder
    teacher, the index): an all-zero row scores 0 against any query by dot product or cosine, so an
    empty passage stays searchable by id at score 0 without a crash, and callers count ``empty``.

    Args:
        encoder: An ``Encoder`` (or anything with its ``encode``; ``dimension`` is read only when every
            passage is empty).
        texts: The passages.
        role: The role the passages are embedded in.
        **options: Passed to ``encoder.encode`` (batch_size, show_progress, normalize).

    Returns:
        ``EncodedCorpus(embeddings, empty)``. When a passage was embedded, ``encoder.last_stats`` (if
        the encoder keeps it) describes the call over the non-empty passages.
    """
    empty = empty_mask(texts)
    keep = np.flatnonzero(~empty)
    if not len(keep):
        return EncodedCorpus(np.zeros((len(texts), encoder.dimension), dtype=np.float32), empty)
    vectors = encoder.encode([texts[i] for i in keep], role=role, **options)
    if len(keep) == len(texts):
        return EncodedCorpus(np.asarray(vectors, dtype=np.float32), empty)
    embeddings = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
    embeddings[keep] = vectors
    return EncodedCorpus(embeddings, empty)
