"""The one BEIR reader: corpus.jsonl[.gz], queries.jsonl[.gz], qrels/<split>.tsv, for every stage
(evaluation, mining, teacher scoring, fine-tuning formats, the index).

Every malformed record is an error naming its file and line, so a score is never computed on silently
damaged data. A corpus record is ``{"_id", "title"?, "text"}``: the id a non-blank string or an integer
(``"id"`` is read when ``"_id"`` is absent), ``text`` a string, ``title`` a string or absent/null; a
repeated id is an error. :func:`iter_corpus` streams the records (the index, which may name other
fields); :func:`load_corpus` holds them in memory (evaluation); :class:`CorpusStream` reads a corpus
too large to hold in passes (dense mining, shard by shard).

Empty passages: a document without visible text (``e5kit.io.text.has_visible_text`` of its "title text":
empty, whitespace, or only zero-width/format characters; BEIR FiQA has some) is well-formed data, not an
error. It stays in the corpus under its id, is never sent to an encoder (which refuses such texts),
gets an all-zero embedding (dot/cosine score 0; BM25 scores it 0 too), and every stage counts it
(``empty_mask``; ``e5kit.retrieval.dense.encode_corpus`` embeds a corpus by that rule).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from e5kit.io.files import COMPRESSED_SUFFIXES, InputFormatError, find_compressed
from e5kit.io.hashing import text_key_hash
from e5kit.io.tables import iter_jsonl, iter_records
from e5kit.io.text import has_visible_text

#: A qrels file's columns (its optional header row names them so; ``QRELS_HEADER`` lists the spellings of the first).
QRELS_COLUMNS = ("query-id", "corpus-id", "score")
QRELS_HEADER = ("query-id", "query_id", "qid")


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


class CorpusRecord(NamedTuple):
    """One corpus document as read: its line in the file, id, title ("" when absent) and text."""

    line: int
    doc_id: str
    title: str
    text: str


def find_file(folder: Path, name: str) -> Path:
    """``folder/name`` or a compressed ``folder/name.gz`` (``.bz2``, ``.xz``, ``.lzma``, ``.zst``), whichever exists."""
    found = find_compressed(folder, name)
    if found is None:
        raise FileNotFoundError(f"{folder}: no {name} (or {name} with {', '.join(COMPRESSED_SUFFIXES)})")
    return found


def _record_id(path: Path, line_number: int, record: dict, field: str = "_id") -> str:
    value = record.get(field)
    if value is None and field == "_id":
        value = record.get("id")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputFormatError(f"{path}:{line_number}: missing {field!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputFormatError(f"{path}:{line_number}: {field!r} must be a string or an integer, got {type(value).__name__}")
    return str(value)


def _string_field(path: Path, line_number: int, record: dict, field: str, required: bool) -> str:
    value = record.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InputFormatError(f"{path}:{line_number}: field {field!r} is missing or not a string")
    return value


def iter_corpus(path: str | Path, id_field: str = "_id", text_field: str = "text", title_field: str = "title") -> Iterator[CorpusRecord]:
    """Stream the documents of a corpus JSONL (BEIR layout by default; any compression ``e5kit.io.files`` reads).

    A document with empty title and text is given out (an empty passage, see the module docstring).

    Raises (while reading):
        InputFormatError: malformed JSON, a missing or non-string/integer id, a missing or non-string
            text, a non-string title, a repeated id (each naming file and line).
    """
    path = Path(path)
    first_line: dict[str, int] = {}
    for line_number, record in iter_jsonl(path):
        doc_id = _record_id(path, line_number, record, id_field)
        if doc_id in first_line:
            raise InputFormatError(f"{path}:{line_number}: duplicate document id {doc_id!r} (first on line {first_line[doc_id]})")
        first_line[doc_id] = line_number
        title = _string_field(path, line_number, record, title_field, required=False)
        text = _string_field(path, line_number, record, text_field, required=True)
        yield CorpusRecord(line_number, doc_id, title, text)


def load_corpus(path: Path) -> dict[str, dict[str, str]]:
    """Read a whole corpus.jsonl (``iter_corpus``'s rules) into doc id -> ``{"title", "text"}``.

    Raises:
        InputFormatError: ``iter_corpus``'s errors, or a file without any record (naming the file).
    """
    corpus = {record.doc_id: {"title": record.title, "text": record.text} for record in iter_corpus(path)}
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
    for line_number, row in iter_records(path, format="tsv", names=QRELS_COLUMNS):
        query_id, doc_id, score_text = (row[name].strip() for name in QRELS_COLUMNS)
        if line_number == 1 and query_id.lower() in QRELS_HEADER:
            continue
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


class CorpusStream:
    """A corpus.jsonl[.gz] read in passes (``iter_corpus``): ids once, then shards of (ids, "title text") on demand.

    The first pass also notes, per document, whether it is an empty passage (``empty``: positions
    without visible text) and ``text_key_hash`` of its "title text" (``key_hashes``), so copies of a
    document are found without holding the texts.

    Raises (while reading):
        InputFormatError: ``iter_corpus``'s errors, or a file without any record.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.ids: list[str] = []
        self.position: dict[str, int] = {}
        self.empty: set[int] = set()
        hashes: list[int] = []
        for record in iter_corpus(self.path):
            text = document_text(record._asdict())
            self.position[record.doc_id] = len(self.ids)
            if not has_visible_text(text):
                self.empty.add(len(self.ids))
            hashes.append(text_key_hash(text))
            self.ids.append(record.doc_id)
        if not self.ids:
            raise InputFormatError(f"{self.path}: the corpus is empty")
        self.key_hashes = np.array(hashes, dtype=np.int64)

    def copies_of(self, positions: set[int]) -> dict[int, set[int]]:
        """For each position in ``positions``: every other position whose text has the same normalised key."""
        wanted = {int(self.key_hashes[p]) for p in positions}
        by_key: dict[int, set[int]] = {}
        for other in np.flatnonzero(np.isin(self.key_hashes, np.array(sorted(wanted), dtype=np.int64))):
            by_key.setdefault(int(self.key_hashes[other]), set()).add(int(other))
        return {p: by_key[int(self.key_hashes[p])] - {p} for p in positions}

    def _texts(self) -> Iterator[str]:
        for record in iter_corpus(self.path):
            yield document_text(record._asdict())

    def shards(self, size: int | None) -> Iterator[tuple[int, list[str]]]:
        """(position of the shard's first document, its texts) for shards of ``size`` documents (None: one)."""
        start, texts = 0, []
        for text in self._texts():
            texts.append(text)
            if size is not None and len(texts) == size:
                yield start, texts
                start, texts = start + len(texts), []
        if texts:
            yield start, texts

    def texts(self, wanted: set[int]) -> dict[int, str]:
        """Texts of the documents at positions ``wanted`` (one more pass over the file)."""
        return {position: text for position, text in enumerate(self._texts()) if position in wanted}
