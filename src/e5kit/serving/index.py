"""A FAISS vector index over chunked documents, with a SQLite document store.

An index is a folder:

- ``index.json``: the settings (model, backend, index kind, chunk window and overlap);
- ``vectors.faiss``: one vector per chunk, keyed by a 64-bit vector id;
- ``docstore.sqlite``: ``documents`` (id, title, text) and ``chunks`` (vector id -> document id,
  chunk number, character span), so a hit maps back to its document and passage;
- ``embeddings/`` while an add runs: its chunks' vectors (``e5kit.retrieval.store``), one store per
  segment (below), embedded in bounded blocks by ``e5kit.retrieval.engines.embed_texts`` on any engine
  (this process, torchrun ranks, Ray actors; the same vectors with each), removed once the add is
  finished. A killed add run again with the same documents and segment size finds the same segments
  and embeds only the blocks still missing.

An add reads its documents in segments: a segment ends with the document that brings it to
``segment_chunks`` chunks. A segment is chunked, its chunks embedded into its store, and its
documents committed with their vectors, before the next segment is read. So an add holds one
segment's texts (and up to ``CHUNK_DOCUMENTS`` documents read ahead for the tokenizer), never the
whole input's; it keeps the ids seen, to refuse one given twice. Its vectors are bounded by the
store's blocks.

An ivfpq index (the only kind that needs training) trains on the first ``train_sample`` chunks of its
first add (all of them when fewer), before any of them is committed: for ivfpq the first segment of an
add is read up to ``train_sample`` chunks whatever ``segment_chunks`` says (``IndexSettings.
first_segment_chunks``), and an add with too few chunks to train is refused before anything is
committed. So every kind of index is the same with any segment size: the same vector ids, the same
search results, and the same vectors to float error (a chunk's vector depends a little on the texts it
is batched with, and segment ends move the store's block ends). Training sees the input's first
documents, not a sample of all of them: shuffle a corpus sorted by topic, or raise ``train_sample``.

A document without visible text (``e5kit.io.text.has_visible_text`` of its title and text) follows the
corpus rule every stage shares (``e5kit.io.beir``): it is kept, in the store and as one chunk
with an all-zero vector (score 0 against any query), never sent to the encoder, and counted
(``AddReport.empty``).

Documents are added and deleted incrementally. Flat and IVF-PQ indexes drop deleted vectors at once;
an HNSW graph cannot remove nodes, so its deleted vectors stay in the graph and are filtered out at
search time (``VectorIndex.stale_vectors`` counts them; rebuild to reclaim the space).

kill -9 at any point leaves the vectors and the store in agreement once the index is opened again:

- The SQLite store is the record. Each run of documents an add commits (``ADD_BLOCK`` chunks or
  more, a segment's last fewer) goes in one SQLite transaction with its chunks and vectors: the
  vectors go to the ``pending_vectors`` journal until ``vectors.faiss`` is rewritten (atomically,
  ``e5kit.io.files.AtomicFile``) at the end of the add, or once the journal holds ``JOURNAL_MIN``
  vectors and as many as the file (so rewrites cost at most about twice the final file). Deletions
  commit their rows first.
- ``VectorIndex.open`` compares the vector ids in ``vectors.faiss`` with the chunk rows and repairs
  what a killed run left: journal vectors missing from the file are added, vectors whose rows are gone
  are removed (kept as stale in HNSW), and chunk rows without any vector (an add interrupted by an
  e5kit before the journal) are embedded again from the stored text; the repaired file is written
  back. A ``vectors.faiss`` that cannot be read is refused, naming it. The check reads every vector id
  (about a second per million chunks) and writes nothing when all agree.
- An index is created with ``index.json`` written last, and marked unfinished until its first add
  completes, so ``create`` (``e5kit index build``) rerun after a killed build starts it again instead
  of refusing an existing index.

Example:
    >>> index = VectorIndex.create("idx", Encoder.load("all-MiniLM-L6-v2"), IndexSettings())  # doctest: +SKIP
    >>> index.add([Document("d1", "A long text ...")])                                       # doctest: +SKIP
    >>> index.search(["what is it about"], k=5)[0][0].doc_id                                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, repeat
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from e5kit.config import describe_first_problem
from e5kit.encoder.backend import weights_fingerprint
from e5kit.encoder.model_format import BackendName, ModelDirectoryError
from e5kit.hub import resolve_model_dir
from e5kit.io.beir import iter_corpus
from e5kit.io.files import AtomicFile, remove_stale_temporaries, write_text_atomic
from e5kit.io.text import has_visible_text
from e5kit.progress import progress_bar
from e5kit.retrieval.dense import encode_corpus, inner_product_index
from e5kit.retrieval.engines import EncoderSpec, StoreEmbedding, embed_texts
from e5kit.retrieval.store import DEFAULT_BLOCK_ROWS, EmbeddingStore
from e5kit.serving.chunking import Chunk, chunk_texts, chunk_window

logger = logging.getLogger(__name__)

SETTINGS_FILE = "index.json"
VECTORS_FILE = "vectors.faiss"
DOCSTORE_FILE = "docstore.sqlite"
EMBEDDINGS_DIR = "embeddings"
#: Documents chunked at a time when adding.
CHUNK_DOCUMENTS = 256
#: Chunks an add reads, embeds and commits at a time by default (``VectorIndex.add``'s ``segment_chunks``):
#: two default store blocks, so the default two Ray actors both embed; 131,072 chunks of 512 tokens
#: are a few hundred MB of text.
SEGMENT_CHUNKS = 2 * DEFAULT_BLOCK_ROWS
#: Chunks committed per step when adding documents: one SQLite transaction and journal entry.
ADD_BLOCK = 2048
#: ``vectors.faiss`` is rewritten during an add once the journal holds this many vectors and as many as the file.
JOURNAL_MIN = 16 * ADD_BLOCK

_SCHEMA = """
PRAGMA auto_vacuum = INCREMENTAL;
CREATE TABLE IF NOT EXISTS documents (doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    vector_id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    chunk_index INTEGER NOT NULL,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending_vectors (first_id INTEGER PRIMARY KEY, vectors BLOB NOT NULL);
"""


class IndexStoreError(ValueError):
    """An index folder is missing, malformed, or cannot take the requested operation."""


class IndexSettings(BaseModel):
    """How an index is built; stored in ``index.json``.

    Attributes:
        kind: "flat" (exact inner product), "hnsw" (graph, approximate) or "ivfpq" (compressed, approximate).
        overlap: Tokens shared by consecutive chunks of a long document.
        window: Tokens per chunk; None = as many as fit in the model's max length after the prefix.
        passage_role / query_role: Roles (prompt names) used to embed chunks and queries.
        hnsw_m / hnsw_ef_search: HNSW neighbours per node and search breadth.
        ivf_lists / pq_subquantizers / pq_bits / nprobe: IVF-PQ coarse lists, PQ code size, lists probed.
        train_sample: Chunks an ivfpq index trains its quantizers on: the first this many of its first
            add (all of them when fewer; the add's first segment is read up to them,
            ``first_segment_chunks``), so training time does not grow with the corpus and the index does
            not depend on the add's segment size (flat and hnsw indexes need no training).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["flat", "hnsw", "ivfpq"] = "flat"
    overlap: int = Field(32, ge=0)
    window: int | None = Field(None, ge=1)
    passage_role: str = "passage"
    query_role: str = "query"
    hnsw_m: int = Field(32, ge=2)
    hnsw_ef_search: int = Field(64, ge=1)
    ivf_lists: int = Field(64, ge=1)
    pq_subquantizers: int = Field(8, ge=1)
    pq_bits: int = Field(8, ge=1, le=16)
    nprobe: int = Field(8, ge=1)
    train_sample: int = Field(100_000, ge=1)

    @model_validator(mode="after")
    def _overlap_below_window(self):
        if self.window is not None and self.overlap >= self.window:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than window ({self.window})")
        return self

    def first_segment_chunks(self, segment_chunks: int) -> int:
        """Chunks the first segment of an add is read up to: ``train_sample`` for ivfpq, which trains on
        that segment before committing it, so the training chunks do not depend on ``segment_chunks``;
        else ``segment_chunks``. An add to an ivfpq index that is trained already reads the same first
        segment, so a killed first add run again finds the segments (and stores) it had."""
        return self.train_sample if self.kind == "ivfpq" else segment_chunks


class StoredIndex(BaseModel):
    """``index.json``: the settings plus what the index was built with."""

    model_config = ConfigDict(extra="forbid")

    model: str
    backend: BackendName = "torch"
    #: The similarity the vectors were embedded for; an index written before it was stored was cosine.
    similarity_fn_name: Literal["cosine", "dot"] = "cosine"
    #: ``weights_fingerprint`` of the model that embedded the documents; None in indexes built before it was stored.
    model_fingerprint: str | None = None
    dimension: int
    window: int
    settings: IndexSettings

    def load_encoder(self, backend: str | None = None):
        """The index's model, with its similarity, on ``backend`` (default: the one it was built with)."""
        from e5kit.encoder import Encoder

        return Encoder.load(self.model, backend=backend or self.backend, similarity_fn_name=self.similarity_fn_name)

    def check_model(self, model: str | None = None, encoder=None) -> str | None:
        """Refuse to embed queries with a model other than the one that embedded the documents.

        Args:
            model: The model to check (default: the index's own, whose folder may have been replaced
                since the build).
            encoder: ``model`` loaded already; a torch float32 one gives its fingerprint without
                loading the weights again (it is ``weights_fingerprint``'s value).

        Returns:
            None when it embeds as that model did (``weights_fingerprint``: the same weights and
            pooling, by any path, or as an export of it); a warning when that cannot be known (an index
            built before fingerprints were stored, whose model can no longer be found).

        Raises:
            IndexStoreError: ``model`` embeds otherwise (its query vectors would not live in the
                documents' space: the search would return unrelated documents), or cannot be found.
        """
        model = model or self.model
        try:
            loaded = encoder is not None and encoder.backend.name == "torch" and encoder.dtype == "float32"
            given = encoder.fingerprint() if loaded else weights_fingerprint(resolve_model_dir(model))
        except (FileNotFoundError, ModelDirectoryError) as error:
            raise IndexStoreError(str(error)) from error
        expected = self.model_fingerprint
        if expected is None:  # built before fingerprints were stored: compare with what its model path holds now
            try:
                expected = weights_fingerprint(resolve_model_dir(self.model))
            except (FileNotFoundError, ModelDirectoryError):
                return f"the index was built with {self.model}, which cannot be found to compare with {model}"
        if given == expected:
            return None
        if model == self.model:
            raise IndexStoreError(f"{model}: no longer the model the index was built with (its weights or pooling changed since the build); rebuild the index")
        raise IndexStoreError(
            f"{model}: not the model the index was built with ({self.model}: other weights or pooling), so queries would not match "
            "its documents; serve the index's own model (leave out --model) or rebuild the index with this one"
        )


def read_stored(path: str | Path) -> StoredIndex:
    """The ``index.json`` of the index in ``path``.

    Raises:
        IndexStoreError: ``path`` is not an index, or its settings are invalid (naming the file).
    """
    path = Path(path)
    settings_path = path / SETTINGS_FILE
    if not settings_path.is_file():
        raise IndexStoreError(f"{path}: not an index (no {SETTINGS_FILE}); build one with `e5kit index build`")
    try:
        return StoredIndex.model_validate_json(settings_path.read_text(encoding="utf-8"))
    except ValidationError as error:
        raise IndexStoreError(f"{settings_path}: invalid index settings: {describe_first_problem(error)}") from None


@dataclass
class Document:
    """A document to index; ``title`` (may be empty) is embedded before ``text``."""

    doc_id: str
    text: str
    title: str = ""

    @property
    def body(self) -> str:
        """The text that is chunked and embedded; chunk offsets refer to it."""
        return f"{self.title} {self.text}" if self.title else self.text


@dataclass
class AddReport:
    """What ``VectorIndex.add`` did; every document not indexed is counted with its reason.

    ``empty`` counts the documents without visible text that were indexed as empty passages (one
    all-zero vector each); they are part of ``added`` / ``replaced``.
    """

    added: int = 0
    replaced: int = 0
    chunks: int = 0
    truncated: int = 0
    empty: int = 0
    skipped: Counter = field(default_factory=Counter)

    def __str__(self) -> str:
        skipped = ", ".join(f"{count} ({reason})" for reason, count in self.skipped.items()) or "none"
        return (f"added {self.added} documents, replaced {self.replaced}, {self.chunks} chunks; chunks truncated: {self.truncated}; "
                f"empty documents (kept, zero vector): {self.empty}; skipped: {skipped}")


@dataclass
class SearchHit:
    """One retrieved document, represented by its best-scoring chunk."""

    doc_id: str
    score: float
    title: str
    chunk_index: int
    start: int
    end: int
    text: str

    def snippet(self, chars: int = 240) -> str:
        """The best chunk's text, shortened to about ``chars`` characters on a word boundary."""
        flat = " ".join(self.text.split())
        return flat if len(flat) <= chars else flat[:chars].rsplit(" ", 1)[0] + " ..."


def corpus_documents(path: str | Path, id_field: str = "_id", text_field: str = "text", title_field: str = "title") -> Iterator[Document]:
    """The documents of a corpus JSONL (BEIR ``corpus.jsonl`` layout by default), read by ``e5kit.io.beir.iter_corpus``.

    Raises:
        InputFormatError: a malformed record or a repeated id, naming file and line.
    """
    for record in iter_corpus(path, id_field=id_field, text_field=text_field, title_field=title_field):
        yield Document(doc_id=record.doc_id, text=record.text, title=record.title)


def faiss_factory(settings: IndexSettings) -> str:
    """The ``faiss.index_factory`` string of an index kind: vectors keyed by 64-bit ids, scored by inner product."""
    if settings.kind == "flat":
        return "IDMap2,Flat"
    if settings.kind == "hnsw":
        return f"IDMap2,HNSW{settings.hnsw_m}"
    return f"IVF{settings.ivf_lists},PQ{settings.pq_subquantizers}x{settings.pq_bits}"  # IVF keeps its own ids


def _new_faiss_index(settings: IndexSettings, dimension: int):
    import faiss

    if settings.kind == "ivfpq" and dimension % settings.pq_subquantizers:
        raise IndexStoreError(f"pq_subquantizers ({settings.pq_subquantizers}) must divide the embedding dimension ({dimension})")
    index = inner_product_index(faiss_factory(settings), dimension)
    if settings.kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = settings.hnsw_ef_search
    return index


class VectorIndex:
    """Chunked documents in a FAISS index plus a SQLite store; see the module docstring for the layout.

    Use ``create`` or ``open``; changes are written to disk by ``add`` and ``delete``. Safe to search
    from several threads.
    """

    def __init__(self, path: Path, stored: StoredIndex, vectors, connection: sqlite3.Connection, encoder) -> None:
        self.path = path
        self.stored = stored
        self.settings = stored.settings
        self.vectors = vectors
        self.connection = connection
        self.encoder = encoder
        self._lock = threading.Lock()
        self._journaled = 0  # vectors this session put in the journal since vectors.faiss was written
        self._written = int(vectors.ntotal)  # vectors in vectors.faiss when it was last written

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls, path: str | Path, encoder, settings: IndexSettings, model: str, backend: str = "torch", overwrite: bool = False, model_fingerprint: str | None = None
    ) -> VectorIndex:
        """Start an empty index in ``path`` for documents embedded by ``encoder`` (loaded from ``model``,
        whose ``weights_fingerprint`` is ``model_fingerprint``: ``StoredIndex.check_model`` compares with it).

        An index whose build was killed before its first add finished is replaced as if ``overwrite``
        were given, so a build can simply be run again.

        Raises:
            IndexStoreError: a finished index is already in ``path`` (without ``overwrite``), the overlap
                does not fit the chunk window, or pq_subquantizers does not divide the dimension.
        """
        path = Path(path)
        if (path / SETTINGS_FILE).exists() and not overwrite and not _unfinished_build(path):
            raise IndexStoreError(f"{path}: an index already exists here (use add to extend it, or overwrite)")
        window = index_window(encoder, settings)
        if settings.overlap >= window:
            raise IndexStoreError(f"overlap ({settings.overlap}) must be smaller than the chunk window ({window} tokens)")
        vectors = _new_faiss_index(settings, encoder.dimension)
        stored = StoredIndex(
            model=model, backend=backend, similarity_fn_name=encoder.similarity_fn_name, model_fingerprint=model_fingerprint,
            dimension=encoder.dimension, window=window, settings=settings,
        )
        path.mkdir(parents=True, exist_ok=True)
        for name in (SETTINGS_FILE, VECTORS_FILE, *_store_files()):  # index.json first: until it is back, no index is here
            (path / name).unlink(missing_ok=True)
        connection = _connect(path / DOCSTORE_FILE)
        with connection:
            connection.execute("INSERT INTO meta (key, value) VALUES ('built', 0)")
        index = cls(path, stored, vectors, connection, encoder)
        index._write_vectors()
        write_text_atomic(path / SETTINGS_FILE, stored.model_dump_json(indent=2) + "\n")
        return index

    @classmethod
    def open(cls, path: str | Path, encoder=None, backend: str | None = None) -> VectorIndex:
        """Open an index; its model is loaded unless ``encoder`` is given (with the stored or given backend),
        once ``StoredIndex.check_model`` finds its folder still holds the model that built the index.

        The vectors are checked against the store and what a killed add or delete left is repaired
        (see the module docstring); the repair is written back.

        Raises:
            IndexStoreError: not an index, a file missing or unreadable, its model folder holding
                another model now, or an encoder that does not fit the stored vectors, naming the path.
            sqlite3.Error, OSError: the store cannot be read, or a repair cannot be written.
        """
        import faiss

        path = Path(path)
        stored = read_stored(path)
        for name in (VECTORS_FILE, DOCSTORE_FILE):
            if not (path / name).is_file():
                raise IndexStoreError(f"{path / name}: missing; the index is incomplete")
        if encoder is None:
            encoder = stored.load_encoder(backend)
            if warning := stored.check_model(encoder=encoder):  # its folder may hold another model since the build
                logger.warning("%s: %s", path, warning)
        if encoder.similarity_fn_name != stored.similarity_fn_name:
            raise IndexStoreError(
                f"{path}: the index holds vectors for {stored.similarity_fn_name} similarity but the encoder scores by "
                f"{encoder.similarity_fn_name}; load it with similarity_fn_name={stored.similarity_fn_name!r}"
            )
        if encoder.dimension != stored.dimension:
            raise IndexStoreError(
                f"{path}: the index holds {stored.dimension}-dimensional vectors but the model embeds {encoder.dimension}"
            )
        try:
            vectors = faiss.read_index(str(path / VECTORS_FILE))
        except RuntimeError as error:
            detail = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
            raise IndexStoreError(f"{path / VECTORS_FILE}: not a readable FAISS index ({detail}); rebuild the index") from None
        if vectors.d != stored.dimension:
            raise IndexStoreError(f"{path / VECTORS_FILE}: holds {vectors.d}-dimensional vectors but {SETTINGS_FILE} says {stored.dimension}")
        index = cls(path, stored, vectors, _connect(path / DOCSTORE_FILE), encoder)
        index._reconcile()
        return index

    def _reconcile(self) -> None:
        """Make the FAISS vectors agree with the chunk rows after a killed add or delete (see the module
        docstring), and write the repair back when anything changed."""
        present = self._faiss_ids()
        rows = np.array([row[0] for row in self.connection.execute("SELECT vector_id FROM chunks")], dtype=np.int64)
        journal = self.connection.execute("SELECT first_id, vectors FROM pending_vectors ORDER BY first_id").fetchall()
        changed = bool(journal)
        for first_id, blob in journal:  # in the order the add gave them, as the uninterrupted add would
            vectors = np.frombuffer(blob, dtype=np.float32).reshape(-1, self.stored.dimension)
            ids = np.arange(first_id, first_id + len(vectors), dtype=np.int64)
            wanted = np.isin(ids, rows) & ~np.isin(ids, present)
            if wanted.any():
                self.vectors.add_with_ids(np.ascontiguousarray(vectors[wanted]), ids[wanted])
                present = np.concatenate([present, ids[wanted]])
        orphans = present[~np.isin(present, rows)]
        if len(orphans) and self.settings.kind != "hnsw":  # HNSW keeps them as stale vectors
            self.vectors.remove_ids(orphans)
            changed = True
        missing = rows[~np.isin(rows, present)]
        if len(missing):
            logger.warning("%s: %d chunks have no vector (an interrupted add); embedding them again", self.path, len(missing))
            self._embed_again(missing)
            changed = True
        if changed:
            self._checkpoint()

    def _faiss_ids(self) -> np.ndarray:
        """The vector ids held in the FAISS index."""
        import faiss

        if isinstance(self.vectors, faiss.IndexIDMap):
            return faiss.vector_to_array(self.vectors.id_map).astype(np.int64)
        from faiss.contrib.inspect_tools import get_invlist

        ivf = faiss.extract_index_ivf(self.vectors)
        return np.concatenate([np.empty(0, dtype=np.int64)] + [get_invlist(ivf.invlists, number)[0] for number in range(ivf.nlist)]).astype(np.int64)

    def _embed_again(self, vector_ids: np.ndarray) -> None:
        """Embed the chunks ``vector_ids`` from their stored text and add them under the same ids."""
        rows = self._select_in(
            "SELECT c.vector_id, d.text, c.start_char, c.end_char FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE c.vector_id IN ({})",
            [int(vector_id) for vector_id in vector_ids],
        )
        rows.sort()
        embeddings = self._embed([text[start:end] for _, text, start, end in rows], None).embeddings
        self._train_if_needed(embeddings)
        self.vectors.add_with_ids(embeddings, np.array([row[0] for row in rows], dtype=np.int64))

    # ------------------------------------------------------------------ counts
    @property
    def num_documents(self) -> int:
        return self.connection.execute("SELECT COUNT(*) FROM documents").fetchone()[0]

    @property
    def num_chunks(self) -> int:
        return self.connection.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    @property
    def stale_vectors(self) -> int:
        """Vectors of deleted documents still inside the FAISS index (HNSW only)."""
        return int(self.vectors.ntotal) - self.num_chunks

    # ------------------------------------------------------------------ changes
    def add(
        self,
        documents: Iterable[Document],
        batch_size: int | None = None,
        show_progress: bool = False,
        *,
        segment_chunks: int = SEGMENT_CHUNKS,
        embedding: StoreEmbedding | None = None,
        spec: EncoderSpec | None = None,
    ) -> AddReport:
        """Chunk, embed and index ``documents``; a document whose id is already indexed is replaced.

        A document without visible text is indexed as an empty passage (one all-zero vector, counted
        in ``report.empty``); one with visible text but no tokens is skipped and counted in
        ``report.skipped``. ``documents`` is read one segment at a time (see the module docstring):
        a segment's chunks are embedded into ``embeddings/``, then its documents are committed with
        their vectors ``ADD_BLOCK`` chunks at a time, before the next segment is read. After kill -9
        the commits done are kept (``open`` repairs the vectors), and adding the same documents again
        with the same ``segment_chunks`` embeds only the blocks still missing and gives the index an
        uninterrupted add would have given.

        Args:
            documents: The documents, each id once; any iterable (read once, lazily).
            batch_size: Chunks per forward pass.
            show_progress: Show the embedding and indexing progress.
            segment_chunks: Chunks read, embedded and committed at a time: memory holds one segment's
                texts (a segment ends with the document that reaches it). The index is the same with
                any value (an ivfpq index's first segment holds ``train_sample`` chunks).
            embedding: Engine, Ray workers and block rows of the embedding (default: this process).
            spec: How Ray actors load the encoder (default: the index's model, backend and similarity).

        Raises:
            IndexStoreError: a document id given twice (the segments before the one repeating it stay
                committed, as an interrupted add's), or too few chunks to train an ivfpq index (nothing
                committed).
            sqlite3.Error, OSError: the index cannot be written.
        """
        report = AddReport()
        spec = spec or self.encoder_spec()
        with progress_bar(desc="indexing", unit="doc", show=show_progress) as progress:
            for segment in plan_segments(documents, self.encoder.tokenizer, self.stored.window, self.settings, segment_chunks, report):
                self._add_segment(segment, report, progress, embedding=embedding, spec=spec, batch_size=batch_size)
                del segment  # before the next segment is read: one segment's texts in memory, not two
        self._checkpoint(finished_add=True)
        shutil.rmtree(self.path / EMBEDDINGS_DIR, ignore_errors=True)  # the vectors are in vectors.faiss now
        return report

    def _add_segment(
        self, segment: Segment, report: AddReport, progress, *, embedding: StoreEmbedding | None, spec: EncoderSpec, batch_size: int | None
    ) -> None:
        """Embed one segment, train an untrained ivfpq index on it, then commit it ``ADD_BLOCK`` chunks at a time."""
        store = embed_segment(self.path, segment, self.encoder, self.settings, embedding=embedding, spec=spec, batch_size=batch_size)
        report.truncated += _truncated(self.encoder, segment.texts, self.settings.passage_role)
        if not self.vectors.is_trained and store.layout.rows:
            self._train_if_needed(self._training_sample(store))
            self._write_vectors()  # the trained quantizer is on disk before any row relies on it
        for pending, embeddings in _commits(segment, store):
            self._add_block(pending, report, embeddings)
            progress.update(len(pending))

    def encoder_spec(self) -> EncoderSpec:
        """How another process (a Ray actor) loads this index's encoder."""
        return EncoderSpec.of(self.encoder, self.stored.model, max_length=self.encoder.max_length, similarity_fn_name=self.stored.similarity_fn_name)

    def _embed(self, texts: list[str], batch_size: int | None):
        return encode_corpus(self.encoder, texts, role=self.settings.passage_role, batch_size=batch_size)

    def _training_sample(self, store: EmbeddingStore) -> np.ndarray:
        """(min(train_sample, rows), dim) float32: the first ``train_sample`` vectors of the first segment's store."""
        return store.rows(np.arange(min(self.settings.train_sample, store.layout.rows), dtype=np.int64))

    def _add_block(self, pending: list[tuple[Document, list]], report: AddReport, embeddings: np.ndarray) -> None:
        """Commit ``pending`` documents with their chunks' (chunks, dim) ``embeddings``, in add order."""
        count = len(embeddings)
        with self._lock:
            with self.connection:  # rows and their vectors (in the journal) commit together
                replaced, stale = self._remove([doc.doc_id for doc, _ in pending])
                # Ids are never reused: an HNSW graph still holds the vectors of deleted documents.
                first_id = self._next_id()
                ids = np.arange(first_id, first_id + count, dtype=np.int64)
                self.connection.executemany(
                    "INSERT INTO documents (doc_id, title, text) VALUES (?, ?, ?)",
                    [(doc.doc_id, doc.title, doc.body) for doc, _ in pending],
                )
                rows = [(doc.doc_id, chunk.index, chunk.start, chunk.end) for doc, chunks in pending for chunk in chunks]
                self.connection.executemany(
                    "INSERT INTO chunks (vector_id, doc_id, chunk_index, start_char, end_char) VALUES (?, ?, ?, ?, ?)",
                    [(int(vector_id), *row) for vector_id, row in zip(ids, rows)],
                )
                self.connection.execute(
                    "INSERT INTO pending_vectors (first_id, vectors) VALUES (?, ?)", (first_id, np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
                )
                self.connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_id', ?)", (int(ids[-1]) + 1,))
            self._drop_vectors(stale)
            self.vectors.add_with_ids(np.ascontiguousarray(embeddings, dtype=np.float32), ids)
        report.replaced += replaced
        report.added += len(pending) - replaced
        report.chunks += count
        self._journaled += count
        if self._journaled >= max(JOURNAL_MIN, self._written):
            self._checkpoint()

    def _next_id(self) -> int:
        row = self.connection.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
        return int(row[0]) if row else 0

    def _train_if_needed(self, embeddings: np.ndarray) -> None:
        if self.vectors.is_trained:
            return
        needed = max(self.settings.ivf_lists, 2**self.settings.pq_bits)
        if len(embeddings) < needed:
            raise IndexStoreError(
                f"an ivfpq index trains on a sample of the first documents added and needs at least {needed} chunks "
                f"(max of ivf_lists={self.settings.ivf_lists} and 2**pq_bits={2**self.settings.pq_bits}); got "
                f"{len(embeddings)}. Add more documents at once, lower ivf_lists/pq_bits, or use kind flat"
            )
        self.vectors.train(embeddings)

    def delete(self, doc_ids: Sequence[str]) -> tuple[int, list[str]]:
        """Remove documents by id; returns (number deleted, ids that were not in the index).

        Raises:
            sqlite3.Error, OSError: the index cannot be written.
        """
        with self._lock:
            with self.connection:
                present = {row[0] for row in self._select_in("SELECT doc_id FROM documents WHERE doc_id IN ({})", list(doc_ids))}
                _, stale = self._remove(sorted(present))
            self._drop_vectors(stale)
        self._checkpoint()
        return len(present), [doc_id for doc_id in doc_ids if doc_id not in present]

    def _remove(self, doc_ids: list[str]) -> tuple[int, list[int]]:
        """Drop ``doc_ids`` from the store (in the caller's transaction); returns how many existed and
        the vector ids of their chunks."""
        vector_ids = [row[0] for row in self._select_in("SELECT vector_id FROM chunks WHERE doc_id IN ({})", doc_ids)]
        removed = 0
        for start in range(0, len(doc_ids), 500):
            part = doc_ids[start : start + 500]
            marks = ",".join("?" * len(part))
            self.connection.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", part)
            removed += self.connection.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", part).rowcount
        return removed, vector_ids

    def _drop_vectors(self, vector_ids: list[int]) -> None:
        """Remove the vectors of deleted chunks from FAISS, where it can (an HNSW graph keeps them as stale)."""
        if vector_ids and self.settings.kind != "hnsw":
            self.vectors.remove_ids(np.asarray(vector_ids, dtype=np.int64))

    def _select_in(self, query: str, values: list) -> list[tuple]:
        rows: list[tuple] = []
        for start in range(0, len(values), 500):  # SQLite caps the number of bound parameters
            part = values[start : start + 500]
            rows += self.connection.execute(query.format(",".join("?" * len(part))), part).fetchall()
        return rows

    def _checkpoint(self, finished_add: bool = False) -> None:
        """Write ``vectors.faiss``, then empty the journal it now holds (and, at the end of an add, mark
        the index built: ``create`` no longer replaces it)."""
        self._write_vectors()
        with self.connection:
            self.connection.execute("DELETE FROM pending_vectors")
            if finished_add:
                self.connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('built', 1)")
        self.connection.execute("PRAGMA incremental_vacuum").fetchall()  # a store made before auto_vacuum keeps its free pages for reuse
        self._journaled = 0

    def _write_vectors(self) -> None:
        import faiss

        remove_stale_temporaries(self.path)  # what killed runs left half written
        with AtomicFile(self.path / VECTORS_FILE) as staged:
            faiss.write_index(self.vectors, str(staged.temporary))
        self._written = int(self.vectors.ntotal)

    # ------------------------------------------------------------------ search
    def search(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """Embed ``queries`` in the query role and return the top ``k`` documents of each."""
        return self.search_vectors(self.encoder.encode(list(queries), role=self.settings.query_role), k)

    def search_vectors(self, query_vectors: np.ndarray, k: int = 10) -> list[list[SearchHit]]:
        """Top ``k`` documents per query vector, each scored by its best chunk (inner product)."""
        if self.settings.kind == "ivfpq":
            self.vectors.nprobe = self.settings.nprobe
        total = int(self.vectors.ntotal)
        results: list[list[SearchHit]] = []
        with self._lock:
            for vector in np.asarray(query_vectors, dtype=np.float32).reshape(-1, self.stored.dimension):
                fetch = min(total, max(4 * k, 32))
                while True:
                    # A document can own many chunks: fetch more until k distinct documents are found.
                    scores, ids = self.vectors.search(vector[None, :], fetch) if fetch else (np.empty((1, 0)), np.empty((1, 0)))
                    hits = self._best_chunk_per_document(scores[0], ids[0], k)
                    if len(hits) >= k or fetch >= total:
                        break
                    fetch = min(total, fetch * 4)
                results.append(hits)
        return results

    def _best_chunk_per_document(self, scores: np.ndarray, ids: np.ndarray, k: int) -> list[SearchHit]:
        found = [(int(i), float(s)) for i, s in zip(ids, scores) if i >= 0]
        rows = {
            row[0]: row[1:]
            for row in self._select_in(
                "SELECT vector_id, doc_id, chunk_index, start_char, end_char FROM chunks WHERE vector_id IN ({})",
                [vector_id for vector_id, _ in found],
            )
        }
        best: dict[str, tuple[float, tuple]] = {}
        for vector_id, score in found:  # FAISS returns best first; stale (deleted) ids have no row
            if vector_id in rows and rows[vector_id][0] not in best:
                best[rows[vector_id][0]] = (score, rows[vector_id])
        top = list(best.items())[:k]
        texts = {
            row[0]: row[1:]
            for row in self._select_in("SELECT doc_id, title, text FROM documents WHERE doc_id IN ({})", [doc_id for doc_id, _ in top])
        }
        return [
            SearchHit(
                doc_id=doc_id,
                score=score,
                title=texts[doc_id][0],
                chunk_index=chunk_index,
                start=start,
                end=end,
                text=texts[doc_id][1][start:end],
            )
            for doc_id, (score, (_, chunk_index, start, end)) in top
        ]

    def close(self) -> None:
        self.connection.close()


def index_window(encoder, settings: IndexSettings) -> int:
    """Tokens per chunk: ``settings.window``, or as many as fit in the encoder's max length after the passage prefix."""
    return settings.window or chunk_window(encoder.tokenizer, encoder.max_length, encoder.prompt_for(settings.passage_role))


@dataclass
class Segment:
    """Documents of an add that are read, embedded and committed together.

    Attributes:
        documents: (document, its chunks) in add order, those skipped left out.
    """

    documents: list[tuple[Document, list[Chunk]]]

    @cached_property
    def texts(self) -> list[str]:
        """The chunks' texts, in add order (the rows of the segment's embedding store)."""
        return [doc.body[chunk.start : chunk.end] for doc, chunks in self.documents for chunk in chunks]


def chunked_documents(
    documents: Iterable[Document], tokenizer, window: int, overlap: int, report: AddReport
) -> Iterator[tuple[Document, list[Chunk]]]:
    """(document, its chunks: windows of ``window`` tokens sharing ``overlap``), read and tokenized
    ``CHUNK_DOCUMENTS`` at a time, yielded one by one; the empty and skipped documents are counted in
    ``report`` (the skipped ones are not yielded).

    Raises:
        IndexStoreError: a document id given twice (the ids seen are kept, not the texts).
    """
    seen: set[str] = set()
    for block in _blocks(documents, CHUNK_DOCUMENTS):
        for doc in block:
            if doc.doc_id in seen:
                raise IndexStoreError(f"document id {doc.doc_id!r} is given twice in one add")
            seen.add(doc.doc_id)
        for doc, chunks in zip(block, chunk_texts([doc.body for doc in block], tokenizer, window, overlap)):
            if not has_visible_text(doc.body):
                chunks = [Chunk(index=0, start=0, end=len(doc.body))]  # an empty passage: one zero vector
                report.empty += 1
            elif not chunks:
                report.skipped["no tokens"] += 1
                continue
            yield doc, chunks


def plan_segments(
    documents: Iterable[Document], tokenizer, window: int, settings: IndexSettings, segment_chunks: int, report: AddReport
) -> Iterator[Segment]:
    """``documents`` chunked (``chunked_documents``) and gathered into segments, each read only when the
    one before has been taken: the first segment ends with the document that brings it to
    ``settings.first_segment_chunks(segment_chunks)`` chunks, the others with the one that brings them
    to ``segment_chunks`` (the last may hold fewer). No segment is yielded for no documents.

    Raises:
        IndexStoreError: a document id given twice, when the documents holding its second copy are read.
    """
    limits = chain([settings.first_segment_chunks(segment_chunks)], repeat(segment_chunks))
    for run in _runs(chunked_documents(documents, tokenizer, window, settings.overlap, report), limits):
        yield Segment(run)
        del run  # before the next run is read: one segment's documents in memory, not two


def _runs(documents: Iterable[tuple[Document, list[Chunk]]], limits: Iterator[int]) -> Iterator[list[tuple[Document, list[Chunk]]]]:
    """Consecutive runs of (document, its chunks), read lazily: each run ends with the document that brings
    it to the next of ``limits`` chunks; the last holds what is left (none for no documents)."""
    limit = next(limits)
    pending: list[tuple[Document, list[Chunk]]] = []
    count = 0
    for doc, chunks in documents:
        pending.append((doc, chunks))
        count += len(chunks)
        if count >= limit:
            yield pending
            pending, count, limit = [], 0, next(limits)
    if pending:
        yield pending


def embed_segment(
    path: str | Path,
    segment: Segment,
    encoder,
    settings: IndexSettings,
    *,
    embedding: StoreEmbedding | None = None,
    spec: EncoderSpec | None = None,
    batch_size: int | None = None,
) -> EmbeddingStore:
    """Embed a segment's chunks into their store under ``path/embeddings`` and return it, finished: one
    row per chunk in add order. The store is named by the encoder and the texts, so the same segment
    of a killed add run again finds its blocks.

    Args:
        path: The index folder.
        segment: The documents and chunks (``plan_segments``).
        encoder: The loaded encoder (embeds under local/torchrun; names the store).
        settings: The index's passage role.
        embedding: Engine, workers, block rows.
        spec: How Ray actors load the encoder.
        batch_size: Chunks per forward pass.

    Raises:
        ValueError: ``ray`` without ``spec``, or an unknown engine.
    """
    return embed_texts(segment.texts, Path(path) / EMBEDDINGS_DIR, encoder, role=settings.passage_role, settings=embedding, spec=spec, batch_size=batch_size)


def embed_documents(
    path: str | Path,
    documents: Iterable[Document],
    encoder,
    settings: IndexSettings,
    *,
    window: int,
    segment_chunks: int = SEGMENT_CHUNKS,
    embedding: StoreEmbedding | None = None,
    batch_size: int | None = None,
) -> None:
    """What a torchrun rank other than 0 runs for an add while rank 0 runs ``VectorIndex.add``: the same
    segments, read and embedded in the same order (this rank's share of each segment's blocks, then the
    barrier rank 0 meets before it commits the segment); nothing of the index is written.

    Args:
        path: The index folder.
        documents: The add's documents, as rank 0 reads them.
        encoder: The loaded encoder.
        settings: The index's chunking, passage role and kind (which sizes the first segment).
        window: Tokens per chunk (``index_window``, or the index's stored window).
        segment_chunks: As rank 0's add is given.
        embedding: Engine, workers, block rows.
        batch_size: Chunks per forward pass.

    Raises:
        IndexStoreError: a document id given twice.
    """
    for segment in plan_segments(documents, encoder.tokenizer, window, settings, segment_chunks, AddReport()):
        embed_segment(path, segment, encoder, settings, embedding=embedding, batch_size=batch_size)
        del segment  # before the next segment is read: one segment's texts in memory, not two


def embed_for_add(
    path: str | Path,
    documents: Iterable[Document],
    *,
    backend: str | None = None,
    segment_chunks: int = SEGMENT_CHUNKS,
    embedding: StoreEmbedding | None = None,
    batch_size: int | None = None,
) -> None:
    """``embed_documents`` for an add to the index in ``path``, chunked and embedded as the index's
    settings say (a torchrun rank other than 0 of ``e5kit index add``).

    Raises:
        IndexStoreError: ``path`` is not an index, or a document id given twice.
    """
    stored = read_stored(path)
    embed_documents(path, documents, stored.load_encoder(backend), stored.settings, window=stored.window, segment_chunks=segment_chunks,
                    embedding=embedding, batch_size=batch_size)


#: Chunks tokenized at once when counting those over the encoder's max length.
TRUNCATION_BLOCK = 4096


def _truncated(encoder, texts: list[str], role: str) -> int:
    """Of the chunks with visible text (the others are never encoded), those longer than the encoder's max length."""
    from e5kit.encoder.encoder import EncodeStats

    stats = EncodeStats()
    visible = [text for text in texts if has_visible_text(text)]
    # Block by block: the token ids of a whole corpus at once (a few KB per chunk as Python ints) would
    # hold GBs for a 1M-passage index, and only the count is kept.
    for start in range(0, len(visible), TRUNCATION_BLOCK):
        encoder.token_ids(encoder.prepare(visible[start : start + TRUNCATION_BLOCK], role), stats=stats)
    return stats.truncated


def _commits(segment: Segment, store: EmbeddingStore) -> Iterator[tuple[list[tuple[Document, list[Chunk]]], np.ndarray]]:
    """(documents with their chunks, their (chunks, dim) float32 vectors) as ``add`` commits a segment:
    each commit ends with the document that brings it to ``ADD_BLOCK`` chunks (the segment's last may
    hold fewer); the store is read block by block."""
    blocks = store.blocks()
    buffered = np.empty((0, store.layout.dimension), dtype=np.float32)
    for run in _runs(segment.documents, repeat(ADD_BLOCK)):
        count = sum(len(chunks) for _, chunks in run)
        while len(buffered) < count:
            buffered = np.concatenate([buffered, next(blocks)[1]])
        yield run, buffered[:count]
        buffered = buffered[count:]


def _store_files() -> tuple[str, ...]:
    """The store and the files SQLite keeps beside it (a killed write leaves its rollback journal)."""
    return (DOCSTORE_FILE, *(DOCSTORE_FILE + suffix for suffix in ("-journal", "-wal", "-shm")))


def _unfinished_build(path: Path) -> bool:
    """Whether ``path`` holds an index whose first add never finished (a build killed midway)."""
    if not (path / DOCSTORE_FILE).is_file() or not (path / VECTORS_FILE).is_file():
        return True
    try:
        connection = sqlite3.connect(path / DOCSTORE_FILE)
        try:
            row = connection.execute("SELECT value FROM meta WHERE key = 'built'").fetchone()
        finally:
            connection.close()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == 0


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, check_same_thread=False)  # the server searches from worker threads
    connection.execute("PRAGMA foreign_keys = ON")
    connection.executescript(_SCHEMA)
    return connection


def _blocks(items: Iterable, size: int) -> Iterator[list]:
    block = []
    for item in items:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block
