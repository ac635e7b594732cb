"""An index add reads its documents in segments (issue 16, "embedding at scale"): each segment is chunked,
embedded and committed before the next is read, so the texts held at once are bounded by the segment
size, the index is the same whatever the segment size (an ivfpq index trains on its first
``train_sample`` chunks), and an add stopped in a later segment, run again, gives the uninterrupted add's
index without embedding anything twice."""

from __future__ import annotations

import gc
import shutil
import sqlite3
import weakref
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
from tiny_texts import SENTENCES, long_text

from e5kit.retrieval.engines import StoreEmbedding
from e5kit.serving import index as index_module
from e5kit.serving.index import AddReport, Document, IndexSettings, IndexStoreError, VectorIndex

QUERIES = ["cat on a mat", "protein disease study", "read and write files", "moon in the sky"]
#: Small tokenizer batches and commits, so a 40-document add spans many commits and journal rewrites.
CHUNK_DOCUMENTS, ADD_BLOCK, JOURNAL_MIN = 3, 6, 12
#: Store blocks of 4 chunks: a segment of 8 or more chunks is embedded in several encoder calls.
EMBEDDING = StoreEmbedding(block_rows=4)
FLAT = IndexSettings(overlap=8)
IVFPQ = IndexSettings(kind="ivfpq", overlap=8, ivf_lists=4, pq_subquantizers=4, pq_bits=4, nprobe=4, train_sample=20)


class Stopped(BaseException):
    """Stands for kill -9 in these in-process tests: raised where the run would die."""


class CountingEncoder:
    """The tiny encoder, recording the number of texts each ``encode`` call gets; call ``stop_at`` raises
    ``Stopped`` instead, and ``on_encode`` (if given) runs at every call."""

    def __init__(self, encoder, stop_at: int | None = None, on_encode=None) -> None:
        self._encoder = encoder
        self.texts: list[int] = []
        self.stop_at = stop_at
        self.on_encode = on_encode

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def encode(self, texts, *args, **kwargs):
        if self.on_encode:
            self.on_encode()
        if len(self.texts) + 1 == self.stop_at:
            raise Stopped
        self.texts.append(len(texts))
        return self._encoder.encode(texts, *args, **kwargs)


@pytest.fixture()
def small_groups(monkeypatch):
    for name, value in (("CHUNK_DOCUMENTS", CHUNK_DOCUMENTS), ("ADD_BLOCK", ADD_BLOCK), ("JOURNAL_MIN", JOURNAL_MIN)):
        monkeypatch.setattr(index_module, name, value)


def documents(count: int = 40, version: int = 0) -> list[Document]:
    """Short and long (several-chunk) documents, one without visible text and one without tokens."""
    out = []
    for i in range(count):
        if i == 7:
            out.append(Document(f"d{i}", "  "))  # empty: kept as one zero vector
        elif i == 23:
            out.append(Document(f"d{i}", "\ufffd"))  # visible, but the tokenizer drops it: skipped
        elif i % 6 == 0:
            out.append(Document(f"d{i}", long_text(70, offset=i + version), title=f"long {i}"))
        else:
            out.append(Document(f"d{i}", f"{SENTENCES[(i + version) % len(SENTENCES)]} number {i}"))
    return out


def segments_read(monkeypatch) -> list[tuple[int, list[str]]]:
    """(chunks, document ids) of each segment an add embeds, recorded as ``embed_segment`` is called."""
    read: list[tuple[int, list[str]]] = []
    embed_segment = index_module.embed_segment

    def recorded(path, segment, *args, **kwargs):
        read.append((len(segment.texts), [doc.doc_id for doc, _ in segment.documents]))
        return embed_segment(path, segment, *args, **kwargs)

    monkeypatch.setattr(index_module, "embed_segment", recorded)
    return read


def contents(folder: Path) -> dict:
    """The stored rows of an index: documents, and chunks with their vector ids."""
    connection = sqlite3.connect(folder / "docstore.sqlite")
    try:
        return {
            "documents": connection.execute("SELECT doc_id, title, text FROM documents ORDER BY doc_id").fetchall(),
            "chunks": connection.execute("SELECT vector_id, doc_id, chunk_index, start_char, end_char FROM chunks ORDER BY vector_id").fetchall(),
        }
    finally:
        connection.close()


def assert_same_hits(actual: VectorIndex, expected: VectorIndex, atol: float = 1e-5) -> None:
    """The same scores at each rank of each query, each found document with the score it has in
    ``expected``: the same ranking, documents of (nearly) equal score apart, which float error in their
    vectors may swap (a chunk's vector depends a little on the texts it is batched with)."""
    for query in QUERIES:
        found, wanted = actual.search([query], k=8)[0], expected.search([query], k=8)[0]
        np.testing.assert_allclose([hit.score for hit in found], [hit.score for hit in wanted], atol=atol)
        scores = {hit.doc_id: hit.score for hit in wanted}
        for hit in found:  # one not in expected's top k can only tie with its last
            assert abs(scores.get(hit.doc_id, wanted[-1].score) - hit.score) <= atol, (query, hit.doc_id)


def vectors_by_id(index: VectorIndex) -> np.ndarray:
    """(chunks, dim) vectors of a flat index in vector id order."""
    ids = np.sort(faiss.vector_to_array(index.vectors.id_map))
    return np.stack([index.vectors.reconstruct(int(vector_id)) for vector_id in ids])


def trained_codebooks(index: VectorIndex) -> tuple[np.ndarray, np.ndarray]:
    """(coarse centroids, PQ centroids) an ivfpq index trained."""
    ivfpq = faiss.downcast_index(index.vectors)
    return faiss.downcast_index(ivfpq.quantizer).reconstruct_n(0, ivfpq.nlist), faiss.vector_to_array(ivfpq.pq.centroids)


def vectors_by_chunk(index: VectorIndex) -> dict[tuple[str, int], np.ndarray]:
    """(doc id, chunk number) -> the chunk's vector in FAISS (flat: exact)."""
    rows = index.connection.execute("SELECT vector_id, doc_id, chunk_index FROM chunks").fetchall()
    return {(doc_id, chunk): index.vectors.reconstruct(int(vector_id)) for vector_id, doc_id, chunk in rows}


@pytest.mark.parametrize("settings", [FLAT, IVFPQ], ids=["flat", "ivfpq"])
def test_an_add_in_segments_of_one_group_equals_an_add_in_one_segment(settings, tiny_encoder, tmp_path, monkeypatch, small_groups,
                                                                       single_torch_thread):
    # Given 40 documents added to one index in a single segment, and to another with segment_chunks=1
    # (every document a segment of its own, but ivfpq's first: 20 chunks or more, its training sample)
    read = segments_read(monkeypatch)
    reports, sizes = {}, {}
    for name, segment_chunks in (("one", 10**9), ("tiny", 1)):
        index = VectorIndex.create(tmp_path / name, tiny_encoder, settings, model="tiny")
        reports[name] = index.add(documents(), segment_chunks=segment_chunks, embedding=EMBEDDING)
        index.close()
        sizes[name] = [chunks for chunks, _ in read]
        read.clear()
    assert len(sizes["tiny"]) >= 20 and sum(sizes["tiny"]) == sum(sizes["one"])
    if settings.kind == "ivfpq":  # both read the first 20 chunks or more as their first segment, then the rest
        assert len(sizes["one"]) == 2 and sizes["tiny"][0] == sizes["one"][0] >= 20
    else:
        assert len(sizes["one"]) == 1
    # Then the two indexes hold the same documents, chunks and vector ids, the same report (the empty and
    # the skipped document counted once), and search alike
    assert contents(tmp_path / "tiny") == contents(tmp_path / "one")
    assert reports["tiny"] == reports["one"]
    assert reports["one"].empty == 1 and reports["one"].skipped == {"no tokens": 1} and reports["one"].added == 39
    tiny, one = (VectorIndex.open(tmp_path / name, encoder=tiny_encoder) for name in ("tiny", "one"))
    assert_same_hits(tiny, one)
    assert not (tmp_path / "tiny" / "embeddings").exists()
    # And the same vector under each id: to float error, as a chunk's vector depends a little on the texts
    # it is batched with, and segment ends move the store's block ends (ivfpq trained on the same first
    # segment: the same quantizer)
    if settings.kind == "flat":
        np.testing.assert_allclose(vectors_by_id(tiny), vectors_by_id(one), atol=1e-5)
    else:
        for trained, expected in zip(trained_codebooks(tiny), trained_codebooks(one)):
            np.testing.assert_array_equal(trained, expected)


def test_the_texts_held_during_an_add_are_bounded_by_the_segment_size(tiny_encoder, tmp_path, monkeypatch, small_groups, single_torch_thread):
    # Given 60 one-chunk documents read lazily from a generator that keeps a weak reference to each and
    # counts, before it makes each document and at each encoder call, the documents still alive anywhere
    # in the process
    documents_read: list[weakref.ref] = []
    held: list[int] = []

    def corpus() -> Iterator[Document]:
        for i in range(60):
            count_alive()
            document = Document(f"d{i}", f"{SENTENCES[i % len(SENTENCES)]} number {i}")
            documents_read.append(weakref.ref(document))
            yield document
            del document

    def count_alive() -> None:
        gc.collect()
        held.append(sum(read() is not None for read in documents_read))

    read = segments_read(monkeypatch)
    # When they are added in segments of 6 chunks (tokenized 3 documents at a time)
    encoder = CountingEncoder(tiny_encoder, on_encode=count_alive)
    index = VectorIndex.create(tmp_path / "idx", encoder, FLAT, model="tiny")
    report = index.add(corpus(), segment_chunks=6, embedding=EMBEDDING)
    # Then each segment held 6 chunks, no encoder call got more texts than one segment, and at most one
    # segment's documents were alive at any point: not the whole input, nor the segment before (11)
    assert report.added == 60 and [chunks for chunks, _ in read] == [6] * 10
    assert max(encoder.texts) <= 6 and sum(encoder.texts) == 60
    assert len(held) == 60 + len(encoder.texts) and max(held) == 6
    # And in one segment the same count sees every document alive (the measure catches holding them all)
    held.clear()
    VectorIndex.create(tmp_path / "one", encoder, FLAT, model="tiny").add(corpus(), segment_chunks=10**9, embedding=EMBEDDING)
    assert max(held) == 60


def test_an_add_stopped_in_its_second_segment_run_again_equals_an_uninterrupted_add(tiny_encoder, tmp_path, monkeypatch, small_groups,
                                                                                   single_torch_thread):
    # Given an index of the first 20 documents, and a second add (10 of them replaced, 20 new) in segments of 8 chunks
    base = VectorIndex.create(tmp_path / "base", tiny_encoder, FLAT, model="tiny")
    base.add(documents(20), embedding=EMBEDDING)
    base.close()
    second = documents(40, version=1)[10:]
    for name in ("straight", "stopped"):
        shutil.copytree(tmp_path / "base", tmp_path / name)
    read = segments_read(monkeypatch)
    straight_encoder = CountingEncoder(tiny_encoder)
    straight = VectorIndex.open(tmp_path / "straight", encoder=straight_encoder)
    straight.add(second, segment_chunks=8, embedding=EMBEDDING)
    (first_chunks, first_ids), (second_chunks, _) = read[:2]
    assert len(read) >= 3 and second_chunks > EMBEDDING.block_rows  # the second segment takes two encoder calls or more
    # When the same add stops at the second encoder call of its second segment (its first block embedded)
    stopping = CountingEncoder(tiny_encoder, stop_at=-(-first_chunks // EMBEDDING.block_rows) + 2)
    with pytest.raises(Stopped):
        VectorIndex.open(tmp_path / "stopped", encoder=stopping).add(second, segment_chunks=8, embedding=EMBEDDING)
    # Then the index opened again agrees with itself and holds the first segment's documents as added,
    # the others as before the add
    reopened = VectorIndex.open(tmp_path / "stopped", encoder=tiny_encoder)
    assert reopened.vectors.ntotal == reopened.num_chunks
    stored = dict(reopened.connection.execute("SELECT doc_id, text FROM documents").fetchall())
    before = {doc.doc_id: doc.body for doc in documents(20)}
    assert stored == {**before, **{doc.doc_id: doc.body for doc in second if doc.doc_id in first_ids}}
    reopened.close()
    # And the add run again embeds only what the stopped run had not, and gives the uninterrupted add's
    # documents, chunks, vectors and search results (vector ids apart: committed documents are replaced)
    rerun_encoder = CountingEncoder(tiny_encoder)
    resumed = VectorIndex.open(tmp_path / "stopped", encoder=rerun_encoder)
    report = resumed.add(second, segment_chunks=8, embedding=EMBEDDING)
    assert sum(stopping.texts) + sum(rerun_encoder.texts) == sum(straight_encoder.texts)
    assert report.skipped == {"no tokens": 1}
    expected, actual = contents(tmp_path / "straight"), contents(tmp_path / "stopped")
    assert actual["documents"] == expected["documents"]
    assert sorted(row[1:] for row in actual["chunks"]) == sorted(row[1:] for row in expected["chunks"])
    straight_vectors, resumed_vectors = vectors_by_chunk(straight), vectors_by_chunk(resumed)
    assert straight_vectors.keys() == resumed_vectors.keys()
    for key, vector in straight_vectors.items():
        np.testing.assert_allclose(resumed_vectors[key], vector, atol=1e-6)
    assert_same_hits(resumed, straight)
    assert sorted(path.name for path in (tmp_path / "stopped").iterdir()) == ["docstore.sqlite", "index.json", "vectors.faiss"]


def test_a_document_id_repeated_in_a_later_segment_is_refused_keeping_the_segments_before(tiny_encoder, tmp_path, small_groups,
                                                                                         single_torch_thread):
    # Given 40 documents followed by a second copy of d2, added in segments of 6 chunks
    given = [*documents(), Document("d2", "a second text under the same id")]
    index = VectorIndex.create(tmp_path / "idx", tiny_encoder, FLAT, model="tiny")
    # When added, Then the repeated id is refused, naming it
    with pytest.raises(IndexStoreError, match="'d2' is given twice in one add"):
        index.add(given, segment_chunks=6, embedding=EMBEDDING)
    # And the segments read before it stay committed, in agreement with the vectors, as an interrupted add's
    reopened = VectorIndex.open(tmp_path / "idx", encoder=tiny_encoder)
    assert 0 < reopened.num_documents < 40 and reopened.vectors.ntotal == reopened.num_chunks
    assert reopened.connection.execute("SELECT text FROM documents WHERE doc_id = 'd2'").fetchone()[0] == given[2].text


def test_ivfpq_with_too_few_chunks_is_refused_before_any_segment_is_committed(tiny_encoder, tmp_path, small_groups, single_torch_thread):
    # Given an ivfpq index needing 16 chunks to train, and 10 one-chunk documents added in segments of 2 chunks
    index = VectorIndex.create(tmp_path / "idx", tiny_encoder, IVFPQ, model="tiny")
    few = [Document(f"d{i}", f"{SENTENCES[i % len(SENTENCES)]} number {i}") for i in range(10)]
    # When added, Then the error says how many chunks training needs, and nothing was committed
    with pytest.raises(IndexStoreError, match="needs at least 16 chunks"):
        index.add(few, segment_chunks=2, embedding=EMBEDDING)
    assert index.num_documents == 0 and not index.vectors.is_trained


def test_add_report_sums_the_segments(tiny_encoder, tmp_path, small_groups, single_torch_thread):
    # Given documents where the empty one and the one without tokens fall in different segments
    index = VectorIndex.create(tmp_path / "idx", tiny_encoder, FLAT, model="tiny")
    # When added in segments of 4 chunks, Then each is counted once, and every other document added
    report = index.add(documents(), segment_chunks=4, embedding=EMBEDDING)
    assert report == AddReport(added=39, replaced=0, chunks=index.num_chunks, truncated=report.truncated, empty=1, skipped=report.skipped)
    assert report.skipped == {"no tokens": 1} and index.num_documents == 39
    assert faiss.vector_to_array(index.vectors.id_map).tolist() == list(range(index.num_chunks))
