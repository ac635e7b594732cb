"""The one BEIR corpus reader: streaming (index, mining) and in-memory (evaluation) forms follow one rule."""

from __future__ import annotations

import json

import pytest

from e5kit.io.beir import CorpusStream, iter_corpus, load_corpus
from e5kit.io.files import InputFormatError
from e5kit.io.hashing import stable_hash, text_key_hash


def write(path, *records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"title": "t", "text": "no id"}, "corpus.jsonl:2: missing '_id'"),
        ({"_id": "  ", "text": "blank id"}, "corpus.jsonl:2: missing '_id'"),
        ({"_id": True, "text": "bool id"}, "corpus.jsonl:2: '_id' must be a string or an integer"),
        ({"_id": "d0", "text": "again"}, "corpus.jsonl:2: duplicate document id 'd0' \\(first on line 1\\)"),
        ({"_id": "d1"}, "corpus.jsonl:2: field 'text' is missing or not a string"),
        ({"_id": "d1", "text": "x", "title": 3}, "corpus.jsonl:2: field 'title' is missing or not a string"),
        ("{not json", "corpus.jsonl:2: invalid JSON"),
    ],
)
def test_every_corpus_form_refuses_a_bad_record_naming_file_and_line(tmp_path, bad, message):
    path = write(tmp_path / "corpus.jsonl", {"_id": "d0", "text": "first"}, bad)
    for read in (lambda: list(iter_corpus(path)), lambda: load_corpus(path), lambda: CorpusStream(path)):
        with pytest.raises(InputFormatError, match=message):
            read()


def test_empty_passages_integer_ids_and_null_titles_are_read_alike_by_every_form(tmp_path):
    path = write(tmp_path / "corpus.jsonl", {"_id": 7, "title": None, "text": "seven"}, {"id": "d1", "text": ""}, {"_id": "d2", "title": "T", "text": "\u200b"})
    assert [(r.line, r.doc_id, r.title, r.text) for r in iter_corpus(path)] == [(1, "7", "", "seven"), (2, "d1", "", ""), (3, "d2", "T", "\u200b")]
    assert load_corpus(path) == {"7": {"title": "", "text": "seven"}, "d1": {"title": "", "text": ""}, "d2": {"title": "T", "text": "\u200b"}}
    stream = CorpusStream(path)
    assert stream.ids == ["7", "d1", "d2"] and stream.empty == {1} and next(stream.shards(None)) == (0, ["seven", "", "T \u200b"])


def test_an_empty_corpus_is_refused_in_memory_and_streamed(tmp_path):
    path = write(tmp_path / "corpus.jsonl", "")
    for read in (lambda: load_corpus(path), lambda: CorpusStream(path)):
        with pytest.raises(InputFormatError, match="the corpus is empty"):
            read()


def test_the_text_hash_is_stable_and_keys_texts_by_their_normalised_form():
    assert stable_hash("cell") == 4589785136723539555  # the same in every process and release: shards and indexes keep it
    assert text_key_hash("  Mitosis\u00a0IS ") == text_key_hash("mitosis is") != text_key_hash("mitosis")
