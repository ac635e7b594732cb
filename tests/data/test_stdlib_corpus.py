"""The quickstart corpus: standard-library docs as pairs plus a held-out BEIR split."""

from __future__ import annotations

import json

from e5kit.data.readers.pydoc import iter_module_docs
from e5kit.data.stdlib_corpus import build_stdlib_corpus, usable_records


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_docs_are_read_without_importing_modules():
    # Given the stdlib parsed with ast, Then well-known objects are there with their summaries
    titles = {r.doc_id: r.title for r in iter_module_docs()}
    assert titles["json"].startswith("json: JSON (JavaScript Object Notation)")
    assert "json.dumps" in titles and "json.decoder.JSONDecoder.decode" in titles
    assert not any(doc_id.split(".")[-1].startswith("_") for doc_id in titles)


def test_heldout_split_is_a_consistent_beir_folder(tmp_path):
    # When the corpus is built with 25 held-out objects
    built = build_stdlib_corpus(tmp_path, heldout=25, seed=3)
    pairs = read_jsonl(built.pairs_path)
    corpus = read_jsonl(built.eval_dir / "corpus.jsonl")
    queries = read_jsonl(built.eval_dir / "queries.jsonl")
    qrels = (built.eval_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]
    # Then every usable object is a pair and a corpus document, and each query has one relevant document
    assert len(pairs) == len(corpus) == built.pairs == len(usable_records())
    assert len(queries) == len(qrels) == built.heldout == 25
    corpus_ids = {doc["_id"] for doc in corpus}
    query_texts = {q["_id"]: q["text"] for q in queries}
    pair_query_by_doc = {json.loads(p["meta"])["doc_id"]: p["query"] for p in pairs}
    for line in qrels:
        query_id, doc_id, score = line.split("\t")
        assert doc_id in corpus_ids and score == "1" and query_texts[query_id] == pair_query_by_doc[doc_id]
    # And the decontamination reference holds exactly the held-out pairs
    reference = read_jsonl(built.heldout_path)
    assert {r["query"] for r in reference} == set(query_texts.values())
    assert all(p["passage"] and p["query"] and json.loads(p["meta"])["doc_id"] for p in pairs)


def test_heldout_draw_is_seeded(tmp_path):
    first = build_stdlib_corpus(tmp_path / "a", heldout=10, seed=7)
    second = build_stdlib_corpus(tmp_path / "b", heldout=10, seed=7)
    assert (first.eval_dir / "queries.jsonl").read_text() == (second.eval_dir / "queries.jsonl").read_text()
