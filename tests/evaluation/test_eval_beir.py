"""BEIR loading: happy path, and every kind of bad input fails naming the file and line."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from e5kit.evaluation.retrieval import run_beir
from e5kit.io.beir import document_text, load_beir
from e5kit.io.files import InputFormatError
from e5kit.io.text import has_visible_text
from e5kit.retrieval.dense import encode_corpus


def test_load_beir_reads_corpus_queries_and_qrels(beir_dir):
    # Given a generated BEIR folder
    # When it is loaded
    corpus, queries, qrels = load_beir(beir_dir)
    # Then every record is there, with titles defaulting to "" and scores as ints
    assert len(corpus) == 30 and len(queries) == 7 and len(qrels) == 6
    assert corpus["cells-1"]["title"] == "cells 1" and corpus["cells-0"]["title"] == ""
    assert qrels["q-cells"]["cells-0"] == 1 and qrels["q-cells"]["cells-4"] == 0
    assert document_text(corpus["cells-0"]) == corpus["cells-0"]["text"]
    assert document_text(corpus["cells-1"]).startswith("cells 1 ")


def test_load_beir_reads_gzipped_files(beir_dir):
    # Given the same folder with gzipped corpus and queries
    for name in ("corpus.jsonl", "queries.jsonl"):
        data = (beir_dir / name).read_bytes()
        (beir_dir / f"{name}.gz").write_bytes(gzip.compress(data))
        (beir_dir / name).unlink()
    # When loaded, Then the content is the same
    assert len(load_beir(beir_dir).corpus) == 30


def _corrupt(path, line_number, new_line):
    lines = path.read_text().splitlines()
    lines[line_number - 1] = new_line
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("file", "line", "content", "message"),
    [
        ("corpus.jsonl", 3, '{"_id": "x", "text": ', "corpus.jsonl:3: invalid JSON"),
        ("corpus.jsonl", 4, '{"title": "t", "text": "no id"}', "corpus.jsonl:4: missing '_id'"),
        ("corpus.jsonl", 5, '{"_id": "cells-0", "text": "dup"}', "corpus.jsonl:5: duplicate document id"),
        ("queries.jsonl", 3, '{"_id": "q-python", "text": "\\u200b "}', "queries.jsonl:3: query 'q-python' has no visible text"),
        ("queries.jsonl", 2, '{"_id": "q-cancer"}', "queries.jsonl:2: field 'text'"),
        ("qrels/test.tsv", 3, "q-cells\tnot-a-doc\t1", "test.tsv:3: document id 'not-a-doc' is not in the corpus"),
        ("qrels/test.tsv", 4, "q-nobody\tcells-0\t1", "test.tsv:4: query id 'q-nobody' is not in the queries"),
        ("qrels/test.tsv", 5, "q-cells\tcells-0", "test.tsv:5: expected 3 tab-separated columns"),
        ("qrels/test.tsv", 6, "q-cells\tcells-9\thigh", "test.tsv:6: score 'high' is not an integer"),
    ],
)
def test_bad_input_names_file_and_line(beir_dir, file, line, content, message):
    # Given a BEIR folder with one damaged line
    _corrupt(beir_dir / file, line, content)
    # When it is loaded, Then the error names the file and line
    with pytest.raises(InputFormatError, match=message):
        load_beir(beir_dir)


def test_a_document_without_visible_text_is_kept_as_an_empty_passage(beir_dir):
    # Given a corpus line with empty title and a text of whitespace and zero-width characters
    _corrupt(beir_dir / "corpus.jsonl", 2, json.dumps({"_id": "cells-1", "title": "", "text": " \u200b\u2060 "}))
    # When it is loaded, Then the document is there under its id, not an error
    corpus = load_beir(beir_dir).corpus
    assert corpus["cells-1"] == {"title": "", "text": " \u200b\u2060 "} and len(corpus) == 30


def test_encode_corpus_never_sends_an_empty_passage_to_the_encoder():
    # Given an encoder that refuses texts without visible text, as Encoder does
    class Refusing:
        dimension = 3

        def __init__(self):
            self.seen = []

        def encode(self, texts, role=None, **options):
            assert all(has_visible_text(text) for text in texts), texts
            self.seen += list(texts)
            return np.ones((len(texts), 3), dtype=np.float32)

    encoder = Refusing()
    # When a corpus with empty passages is embedded
    encoded = encode_corpus(encoder, ["a", "", "\u200b", "b"], role="passage", batch_size=2)
    # Then only the visible passages reach the encoder, and the empty ones get all-zero rows, counted
    assert encoder.seen == ["a", "b"]
    assert encoded.empty.tolist() == [False, True, True, False] and encoded.empty_count == 2
    assert encoded.embeddings.tolist() == [[1, 1, 1], [0, 0, 0], [0, 0, 0], [1, 1, 1]]
    # And a corpus of empty passages only is never sent at all
    assert encode_corpus(Refusing(), ["", " "]).embeddings.shape == (2, 3)


def test_empty_corpus_is_an_error(beir_dir):
    # Given an empty corpus file
    (beir_dir / "corpus.jsonl").write_text("\n")
    # Then loading fails naming it
    with pytest.raises(InputFormatError, match="corpus.jsonl: the corpus is empty"):
        load_beir(beir_dir)


def test_missing_split_names_the_available_ones(beir_dir):
    with pytest.raises(FileNotFoundError, match="splits with qrels: test"):
        load_beir(beir_dir, split="dev")


def test_query_set_without_any_qrels_is_an_error(beir_dir):
    # Given qrels whose queries are all absent from the queries file's judged set
    (beir_dir / "queries.jsonl").write_text(json.dumps({"_id": "lonely", "text": "no qrels here"}) + "\n")
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    # Then evaluating refuses rather than scoring nothing
    with pytest.raises(InputFormatError, match="no relevance judgements"):
        run_beir("bm25", beir_dir)
