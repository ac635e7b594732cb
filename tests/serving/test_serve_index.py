"""Chunking and the vector index: offsets, equivalence with brute force, incremental add/delete, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.serving.chunking import chunk_texts, chunk_window, window_spans
from e5kit.serving.index import Document, IndexSettings, IndexStoreError, VectorIndex


def naive_windows(n_tokens: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Token ranges [first, last] of a plain sliding window that stops once the end is covered."""
    ranges, first = [], 0
    while n_tokens:
        ranges.append((first, min(first + window, n_tokens) - 1))
        if first + window >= n_tokens:
            break
        first += window - overlap
    return ranges


@pytest.mark.parametrize("n_tokens", [0, 1, 5, 10, 11, 29, 64])
@pytest.mark.parametrize("window,overlap", [(10, 0), (10, 3), (4, 3), (1, 0)])
def test_window_spans_match_naive_sliding_window(n_tokens, window, overlap):
    offsets = [(2 * i, 2 * i + 1) for i in range(n_tokens)]
    spans = [(c.start, c.end) for c in window_spans(offsets, window, overlap)]
    assert spans == [(offsets[a][0], offsets[b][1]) for a, b in naive_windows(n_tokens, window, overlap)]


def test_chunks_map_back_to_whole_words_of_the_text(tiny_encoder, texts):
    # Given a long text whose words split into several word pieces
    text = "  " + texts[-1] + " ."
    window = chunk_window(tiny_encoder.tokenizer, tiny_encoder.max_length, "passage: ")
    # When chunked with the model's tokenizer
    (chunks,) = chunk_texts([text], tiny_encoder.tokenizer, window, overlap=5)
    tokens = tiny_encoder.tokenizer.tokenize(text)
    assert len(chunks) > 1
    # Then each chunk's characters re-tokenise to a run of at most `window` tokens starting on a word,
    # consecutive chunks overlap by at most `overlap` tokens, and together they cover every token
    position = 0
    for chunk in chunks:
        pieces = tiny_encoder.tokenizer.tokenize(text[chunk.start : chunk.end])
        first = next(i for i in range(max(position - 5, 0), position + 1) if tokens[i : i + len(pieces)] == pieces)
        assert len(pieces) <= window and not pieces[0].startswith("##")
        position = first + len(pieces)
    assert chunks[0].start == 2 and position == len(tokens)
    # And a prefixed chunk fits the model without truncation
    tiny_encoder.encode([text[c.start : c.end] for c in chunks], role="passage")
    assert tiny_encoder.last_stats.truncated == 0


def brute_force(encoder, documents, query, k):
    """Score every document by its best chunk with plain numpy."""
    window = chunk_window(encoder.tokenizer, encoder.max_length, encoder.prompt_for("passage"))
    best = {}
    for doc, chunks in zip(documents, chunk_texts([d.body for d in documents], encoder.tokenizer, window, 8)):
        vectors = encoder.encode([doc.body[c.start : c.end] for c in chunks], role="passage")
        best[doc.doc_id] = float((vectors @ encoder.encode([query], role="query")[0]).max())
    return sorted(best.items(), key=lambda item: -item[1])[:k]


def test_flat_index_equals_brute_force(tiny_encoder, corpus, tmp_path):
    # Given a flat index over short and long documents
    index = VectorIndex.create(tmp_path / "idx", tiny_encoder, IndexSettings(overlap=8), model="tiny")
    report = index.add(corpus)
    assert report.added == len(corpus) and report.chunks > len(corpus) and report.truncated == 0
    # When searching, Then the ranking and scores equal a brute-force best-chunk search
    for query in ["cat on a mat", "protein disease study"]:
        hits = index.search([query], k=5)[0]
        expected = brute_force(tiny_encoder, corpus, query, 5)
        assert [h.doc_id for h in hits] == [doc_id for doc_id, _ in expected]
        np.testing.assert_allclose([h.score for h in hits], [score for _, score in expected], atol=1e-5)
        # And each hit's chunk text is the document's text at the stored offsets
        bodies = {d.doc_id: d.body for d in corpus}
        assert all(bodies[h.doc_id][h.start : h.end] == h.text for h in hits)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_incremental_add_replace_delete_and_reopen(kind, tiny_encoder, corpus, tmp_path):
    settings = IndexSettings(kind=kind, overlap=8, ivf_lists=4, pq_subquantizers=4, pq_bits=4, nprobe=4)
    index = VectorIndex.create(tmp_path / "idx", tiny_encoder, settings, model="tiny")
    # IVF-PQ trains on its first add, so it needs enough chunks there
    first = corpus if kind != "ivfpq" else corpus + [Document(f"x{i}-{d.doc_id}", d.text) for i in range(2) for d in corpus]
    index.add(first)
    # When a document is replaced, one deleted, and one added
    index.add([Document("s0", "a completely new text about the moon")])
    deleted, missing = index.delete(["s1", "nope"])
    assert (deleted, missing) == (1, ["nope"])
    index.add([Document("new", "the cat sat on the mat")])
    # Then the store and FAISS agree (HNSW keeps deleted vectors, filtered out at search)
    expected_docs = len(first) - 1 + 1
    assert index.num_documents == expected_docs
    reopened = VectorIndex.open(tmp_path / "idx", encoder=tiny_encoder)
    assert reopened.num_documents == expected_docs and reopened.vectors.ntotal == index.vectors.ntotal
    assert (reopened.stale_vectors > 0) == (kind == "hnsw")
    hits = reopened.search(["the cat sat on the mat"], k=reopened.num_documents + 5)[0]
    found = [h.doc_id for h in hits]
    assert "s1" not in found and len(found) == len(set(found)) == expected_docs
    if kind != "ivfpq":  # exact or near-exact: the identical text ranks first
        assert found[0] == "new"


def test_ivfpq_with_too_few_chunks_fails_naming_the_settings(tiny_encoder, corpus, tmp_path):
    index = VectorIndex.create(tmp_path / "idx", tiny_encoder, IndexSettings(kind="ivfpq", ivf_lists=4, pq_subquantizers=4), model="tiny")
    with pytest.raises(IndexStoreError, match="pq_bits"):
        index.add(corpus)
    assert index.num_documents == 0


def test_cli_build_search_add_delete(tiny_bert_dir, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    records = [{"_id": "d1", "title": "Cats", "text": "the cat sat on the mat " * 30}, {"_id": "d2", "text": "python can read files"}, {"_id": "d3", "text": "   "}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    runner = CliRunner()
    result = runner.invoke(app, ["index", "build", "--model", str(tiny_bert_dir), "--corpus", str(corpus), "--out", str(tmp_path / "idx"), "--overlap", "4"])
    assert result.exit_code == 0, result.output
    # (d3 has no visible text: kept as an empty passage and counted, as in evaluation and mining)
    assert "added 3 documents" in result.output and "empty documents (kept, zero vector): 1; skipped: none" in result.output
    result = runner.invoke(app, ["search", str(tmp_path / "idx"), "cat on the mat", "-k", "2"])
    assert result.exit_code == 0, result.output
    assert "1. " in result.output and "d1 | Cats  [chunk" in result.output
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"id": "d4", "text": "the moon"}) + "\n")
    assert "added 1 documents" in runner.invoke(app, ["index", "add", str(tmp_path / "idx"), "--corpus", str(extra)]).output
    # And add reads other field names when told (its options are IndexConfig's, defaults included)
    renamed = tmp_path / "renamed.jsonl"
    renamed.write_text(json.dumps({"key": "d5", "body": "the sun", "heading": "Sky"}) + "\n")
    fields = ["--id-field", "key", "--text-field", "body", "--title-field", "heading"]
    result = runner.invoke(app, ["index", "add", str(tmp_path / "idx"), "--corpus", str(renamed), *fields])
    assert "added 1 documents" in result.output, result.output
    result = runner.invoke(app, ["index", "delete", str(tmp_path / "idx"), "d2", "zz"])
    assert "deleted 1 documents; not found: 1" in result.output
    # Bad input is named: a record without an id
    corpus.write_text(json.dumps({"text": "no id"}) + "\n")
    result = runner.invoke(app, ["index", "build", "--model", str(tiny_bert_dir), "--corpus", str(corpus), "--out", str(tmp_path / "idx2")])
    assert result.exit_code == 2 and "docs.jsonl:1" in result.output


# ---------------------------------------------------------------- issue 12: empty passages
BEIR_EMPTY = Path(__file__).resolve().parents[1] / "evaluation" / "fixtures" / "beir_empty" / "corpus.jsonl"


def test_beir_empty_index_build_keeps_and_counts_the_empty_document(tiny_bert_dir, tmp_path):
    # Given beir_empty: document 7915 has empty title and text (index build used to skip it)
    # When an index is built from the command line
    result = CliRunner().invoke(app, ["index", "build", "--model", str(tiny_bert_dir), "--corpus", str(BEIR_EMPTY), "--out", str(tmp_path / "idx")])
    # Then every document is added and the summary counts 1 empty document
    assert result.exit_code == 0, result.output
    assert "added 4 documents" in result.output and "empty documents (kept, zero vector): 1;" in result.output
    assert "now 4 documents" in result.output


def test_an_empty_document_is_stored_with_a_zero_vector_and_scores_zero(tiny_encoder, tmp_path):
    # Given documents of which two have no visible text, and an encoder that would refuse them
    documents = [Document("d1", "the cat sat on the mat"), Document("7915", ""), Document("zw", "\u200b \u2060", title=" "), Document("d2", "a blue sky")]
    index = VectorIndex.create(tmp_path / "idx", tiny_encoder, IndexSettings(), model="tiny")
    # When they are indexed
    report = index.add(documents)
    # Then all four are stored, the two empty ones counted, each with one all-zero vector
    assert report.added == 4 and report.empty == 2 and not report.skipped and index.num_chunks == 4
    vectors = index.vectors.index.reconstruct_n(0, 4)
    assert not vectors[1].any() and not vectors[2].any() and vectors[0].any()
    # And a search over every document finds them by id at score 0
    hits = {h.doc_id: h for h in index.search(["cat on a mat"], k=4)[0]}
    assert hits["7915"].score == 0.0 and hits["7915"].text == "" and hits["zw"].score == 0.0


def test_serve_takes_the_index_model_by_any_path_and_refuses_other_weights(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    import shutil

    import typer

    from e5kit.cli.serve import build_app
    from e5kit.serving.config import ServeConfig
    from tests.conftest import build_tiny_bert

    # Given an index built with the tiny model, a copy of that model elsewhere, and a model of other weights
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"_id": "d1", "text": "the cat sat on the mat"}) + "\n")
    built = CliRunner().invoke(app, ["index", "build", "--model", str(tiny_bert_dir), "--corpus", str(corpus), "--out", str(tmp_path / "idx")])
    assert built.exit_code == 0, built.output
    copy = shutil.copytree(tiny_bert_dir, tmp_path / "copy")
    other = build_tiny_bert(tmp_path / "other", seed=1)
    # When the server is given the index with the same weights by a relative path or from the copy
    monkeypatch.chdir(tiny_bert_dir.parent)
    for model in (tiny_bert_dir.name, str(copy)):
        assert build_app(ServeConfig(model=model, index=tmp_path / "idx")).title
    # Then it serves without a warning
    assert "warning" not in capsys.readouterr().err
    # When it is given the model of other weights, Then it refuses, naming both models
    with pytest.raises(typer.Exit):
        build_app(ServeConfig(model=str(other), index=tmp_path / "idx"))
    assert "not the model the index was built with" in capsys.readouterr().err


def test_an_index_whose_model_folder_now_holds_another_model_is_refused(tiny_bert_dir, tmp_path):
    import shutil

    from tests.conftest import build_tiny_bert

    # Given an index built from a model folder, which is then replaced by a model of other weights
    model = shutil.copytree(tiny_bert_dir, tmp_path / "model")
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"_id": "d1", "text": "the cat sat on the mat"}) + "\n")
    runner = CliRunner()
    assert runner.invoke(app, ["index", "build", "--model", str(model), "--corpus", str(corpus), "--out", str(tmp_path / "idx")]).exit_code == 0
    shutil.rmtree(model)
    build_tiny_bert(model, seed=1)
    # When the index is searched, Then the search refuses, naming the folder, instead of ranking with the other model
    result = runner.invoke(app, ["search", str(tmp_path / "idx"), "cat"])
    assert result.exit_code == 2 and "no longer the model the index was built with" in result.output


def test_opening_an_index_with_a_torch_model_checks_it_without_loading_its_weights_twice(tiny_bert_dir, tmp_path, monkeypatch):
    import e5kit.serving.index as index_module

    # Given an index built with a model, and weights_fingerprint (a second load of the weights) made to fail
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"_id": "d1", "text": "the cat sat on the mat"}) + "\n")
    build = ["index", "build", "--model", str(tiny_bert_dir), "--corpus", str(corpus), "--out", str(tmp_path / "idx")]
    assert CliRunner().invoke(app, build).exit_code == 0

    def second_load(root):
        raise AssertionError(f"loaded {root} again")

    monkeypatch.setattr(index_module, "weights_fingerprint", second_load)
    # When it is opened with its own model (torch float32), Then the loaded encoder's fingerprint is the check
    index = VectorIndex.open(tmp_path / "idx")
    assert index.search(["cat"], k=1)[0][0].doc_id == "d1"


def test_index_settings_with_an_unknown_backend_are_named_in_one_line(tmp_path):
    from e5kit.serving.index import read_stored

    # Given an index.json whose backend e5kit does not have
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "index.json").write_text(json.dumps({"model": "m", "backend": "tensorrt", "dimension": 8, "window": 16, "settings": {}}))
    # When it is read, Then one line names the file and the field
    with pytest.raises(IndexStoreError, match=r"index.json: invalid index settings: field 'backend'") as error:
        read_stored(tmp_path / "idx")
    assert "\n" not in str(error.value)
