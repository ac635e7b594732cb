"""An index's chunks are embedded into an on-disk store in bounded blocks (issue 16 item 3): the index
filled from the store holds the vectors one in-memory pass gives, a build killed mid-embedding resumes
block by block to the same index, an ivfpq index trains on the first train_sample stored chunks, and
torchrun (2 gloo processes) and Ray (2 actors) build the bytes one process builds."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
from store_runs import Killed, kill_embedding_at_block, ray_cli, torchrun_cli
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.retrieval import engines
from e5kit.retrieval.dense import encode_corpus
from e5kit.retrieval.engines import StoreEmbedding
from e5kit.serving.index import EMBEDDINGS_DIR, SEGMENT_CHUNKS, AddReport, IndexSettings, VectorIndex, index_window, plan_segments

QUERIES = ["cat on a mat", "protein disease study", "long document"]


def _vectors(index: VectorIndex) -> tuple[np.ndarray, np.ndarray]:
    """(ids, (n, dim) vectors) an IDMap2 index holds, in id order."""
    ids = np.sort(faiss.vector_to_array(index.vectors.id_map).astype(np.int64))
    return ids, np.stack([index.vectors.reconstruct(int(vector_id)) for vector_id in ids])


def _hits(index: VectorIndex) -> list[list[tuple[str, float]]]:
    return [[(hit.doc_id, round(hit.score, 5)) for hit in index.search([query], k=6)[0]] for query in QUERIES]


def test_an_index_filled_from_a_store_of_small_blocks_holds_one_in_memory_pass(tiny_encoder, corpus, tmp_path, single_torch_thread):
    # Given the corpus's chunks embedded in one in-memory pass
    settings = IndexSettings(overlap=8)
    (plan,) = plan_segments(corpus, tiny_encoder.tokenizer, index_window(tiny_encoder, settings), settings, SEGMENT_CHUNKS, AddReport())
    expected = encode_corpus(tiny_encoder, plan.texts, role="passage").embeddings
    # When an index is built through a store of 4-row blocks (chunks embedded 4 at a time)
    index = VectorIndex.create(tmp_path / "idx", tiny_encoder, settings, model="tiny")
    report = index.add(corpus, embedding=StoreEmbedding(block_rows=4))
    # Then it holds one vector per chunk, in chunk order, equal to the in-memory pass
    ids, vectors = _vectors(index)
    assert report.chunks == len(plan.texts) > len(corpus) and ids.tolist() == list(range(len(plan.texts)))
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    # And it searches as the index built with one block does, and the store is gone once the add finished
    one_block = VectorIndex.create(tmp_path / "one", tiny_encoder, settings, model="tiny")
    one_block.add(corpus)
    assert _hits(index) == _hits(one_block)
    assert not (tmp_path / "idx" / EMBEDDINGS_DIR).exists()


def test_a_build_killed_while_embedding_resumes_block_by_block_to_the_same_index(tiny_encoder, corpus, tmp_path, monkeypatch, single_torch_thread):
    # Given a build through 4-row blocks that dies while reading block 2
    settings, embedding = IndexSettings(overlap=8), StoreEmbedding(block_rows=4)
    straight = VectorIndex.create(tmp_path / "straight", tiny_encoder, settings, model="tiny")
    straight.add(corpus, embedding=embedding)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        kill_embedding_at_block(patch, 2)
        VectorIndex.create(tmp_path / "idx", tiny_encoder, settings, model="tiny").add(corpus, embedding=embedding)
    (store,) = (tmp_path / "idx" / EMBEDDINGS_DIR).iterdir()
    assert sorted(path.name for path in store.glob("*.ids.npy")) == ["block-00000.ids.npy", "block-00001.ids.npy"]
    # When the build runs again (create replaces an unfinished index; the store stays)
    embedded = []
    embed_blocks = engines.embed_blocks
    monkeypatch.setattr(engines, "embed_blocks", lambda *args, **kwargs: embedded.append(embed_blocks(*args, **kwargs)) or embedded[-1])
    resumed = VectorIndex.create(tmp_path / "idx", tiny_encoder, settings, model="tiny")
    resumed.add(corpus, embedding=embedding)
    # Then only the blocks still missing are embedded, and the index equals the uninterrupted build's
    blocks = -(-straight.num_chunks // 4)
    assert embedded == [blocks - 2]
    assert (tmp_path / "idx" / "vectors.faiss").read_bytes() == (tmp_path / "straight" / "vectors.faiss").read_bytes()
    assert _hits(resumed) == _hits(straight)
    assert sorted(path.name for path in (tmp_path / "idx").iterdir()) == ["docstore.sqlite", "index.json", "vectors.faiss"]


def test_ivfpq_trains_on_the_first_train_sample_stored_chunks(tiny_encoder, tmp_path, monkeypatch, single_torch_thread):
    # Given 60 one-chunk documents and an ivfpq index training on 20 chunks
    from e5kit.serving.index import Document

    documents = [Document(f"d{i}", f"document {i} about {'cats' if i % 2 else 'genes'} and thing {i * 7 % 13}") for i in range(60)]
    settings = IndexSettings(kind="ivfpq", overlap=8, ivf_lists=4, pq_subquantizers=4, pq_bits=4, nprobe=4, train_sample=20)
    trained_on = []
    train = VectorIndex._train_if_needed
    monkeypatch.setattr(VectorIndex, "_train_if_needed", lambda self, sample: trained_on.append(sample) or train(self, sample))
    # When it is built twice, once read in segments of 7 chunks
    for name, segment_chunks in (("a", SEGMENT_CHUNKS), ("b", 7)):
        index = VectorIndex.create(tmp_path / name, tiny_encoder, settings, model="tiny")
        index.add(documents, segment_chunks=segment_chunks, embedding=StoreEmbedding(block_rows=16))
    # Then each trained on the first 20 stored chunks, and the two indexes are the same bytes
    chunks = encode_corpus(tiny_encoder, [doc.body for doc in documents], role="passage").embeddings
    assert [sample.shape for sample in trained_on] == [(20, tiny_encoder.dimension)] * 2
    np.testing.assert_allclose(trained_on[0], chunks[:20], atol=1e-5)
    assert (tmp_path / "a" / "vectors.faiss").read_bytes() == (tmp_path / "b" / "vectors.faiss").read_bytes()


def _corpus_files(folder: Path) -> tuple[Path, Path]:
    """A corpus of short, long and empty documents, and a second one replacing two of them and adding two."""
    from tiny_texts import SENTENCES, long_text

    records = [{"_id": f"s{i}", "text": text} for i, text in enumerate(SENTENCES)]
    records += [{"_id": f"long{i}", "title": f"long document {i}", "text": long_text(150, offset=i * 7)} for i in range(3)]
    records.append({"_id": "empty", "text": "  "})
    more = [{"_id": "s0", "text": "a replaced sentence about the moon"}, {"_id": "long1", "text": long_text(90, offset=3)},
            {"_id": "new0", "text": "genes change in cancer cells"}, {"_id": "new1", "text": long_text(120, offset=11)}]
    paths = folder / "corpus.jsonl", folder / "more.jsonl"
    for path, rows in zip(paths, (records, more)):
        path.write_text("".join(json.dumps(record) + "\n" for record in rows), encoding="utf-8")
    return paths


#: Blocks of 4 chunks in segments of 6 or more: every engine embeds and commits several segments, some of
#: one block (under torchrun, rank 1 then embeds nothing and still meets rank 0 at the segment's barrier).
SMALL = ["--block-rows", "4", "--segment-chunks", "6"]


def _build_args(model: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["index", "build", "--model", str(model), "--corpus", str(corpus), "--out", str(out), "--overlap", "8", *SMALL, *extra]


def _add_args(corpus: Path, out: Path) -> list[str]:
    return ["index", "add", str(out), "--corpus", str(corpus), *SMALL]


def _index_contents(folder: Path) -> tuple[bytes, list]:
    import sqlite3

    connection = sqlite3.connect(folder / "docstore.sqlite")
    try:
        rows = connection.execute("SELECT vector_id, doc_id, chunk_index, start_char, end_char FROM chunks ORDER BY vector_id").fetchall()
    finally:
        connection.close()
    return (folder / "vectors.faiss").read_bytes(), rows


@pytest.fixture()
def one_process(tiny_bert_dir, tmp_path) -> dict:
    """The corpora, and the index one process builds from the first through 4-row blocks in segments of 6
    chunks, then after adding the second."""
    corpus, more = _corpus_files(tmp_path)
    runs = {"corpus": corpus, "more": more}
    for name, args in (("built", _build_args(tiny_bert_dir, corpus, tmp_path / "one")), ("added", _add_args(more, tmp_path / "one"))):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        runs[name] = _index_contents(tmp_path / "one")
    return runs


def test_torchrun_two_processes_build_and_add_as_one_process(tiny_bert_dir, tmp_path, one_process):
    # Given the index one process builds, then extends
    # When two gloo processes under torchrun build it, each embedding half of the blocks, rank 0 writing
    torchrun_cli(_build_args(tiny_bert_dir, one_process["corpus"], tmp_path / "two"))
    # Then the vectors file and the chunk rows are the same
    assert _index_contents(tmp_path / "two") == one_process["built"]
    # And so they are after the two processes add the second corpus (rank 1 reads the index's settings only)
    torchrun_cli(_add_args(one_process["more"], tmp_path / "two"))
    assert _index_contents(tmp_path / "two") == one_process["added"]


def test_ray_with_two_actors_builds_the_index_one_process_builds(tiny_bert_dir, tmp_path, one_process, single_torch_thread):
    # Given the index one process builds through 4-row blocks
    # When a local Ray actor pool of two embeds the blocks
    ray_cli(_build_args(tiny_bert_dir, one_process["corpus"], tmp_path / "ray"))
    # Then the vectors file and the chunk rows are the same
    assert _index_contents(tmp_path / "ray") == one_process["built"]


def test_a_bad_engine_option_is_named(tiny_bert_dir, tmp_path):
    # Given an engine that does not exist, When building, Then the error names the option in one line
    result = CliRunner().invoke(app, _build_args(tiny_bert_dir, _corpus_files(tmp_path)[0], tmp_path / "idx", "--engine", "spark"))
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "engine: " in result.output and "local" in result.output
