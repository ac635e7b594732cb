"""Curation uses the shared "no visible text" rule (``e5kit.io.text.has_visible_text``) (issue 12, item 7).

A text of zero-width or format characters only (U+200B, U+2060, U+00AD, U+FEFF) passed the old
``.strip()`` emptiness checks and would have been written as a training pair; every such text embeds
to the same vector. Readers now treat such a field as missing and the pipeline drops a pair whose side
has no visible text after cleaning, each with a counted reason.
"""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest
from curation_dumps import json_lines, write_lines

from e5kit.data.curation import CurateConfig, curate
from e5kit.data.filters import decontaminate
from e5kit.data.filters.visible import PASSAGE_INVISIBLE, QUERY_INVISIBLE, VisibleTextFilter
from e5kit.data.readers import generic, news, wikipedia
from e5kit.data.readers.base import text_field
from e5kit.data.skips import SkipCounter
from e5kit.io.pairs import Pair

INVISIBLE = ["\u200b", "\u2060\u00ad", "\ufeff ", "", " \t\n"]


@pytest.mark.parametrize("text", INVISIBLE)
def test_filter_drops_either_side_without_visible_text(text):
    check = VisibleTextFilter()
    assert check.keep(Pair(text, "A real passage.")) == QUERY_INVISIBLE
    assert check.keep(Pair("A real query", text)) == PASSAGE_INVISIBLE
    kept = Pair("a\u200bb", "x\u00ady")  # format characters inside visible text do not matter
    assert check.keep(kept) is True


@pytest.mark.parametrize("text", INVISIBLE)
def test_readers_treat_invisible_fields_as_missing(tmp_path, text):
    # Given records whose text field holds only invisible characters
    assert text_field({"title": text, "headline": "Shown"}, "title", "headline") == "Shown"
    news_path = write_lines(tmp_path / "n.jsonl", json_lines([{"title": "Headline", "text": text}]))
    generic_path = write_lines(tmp_path / "g.jsonl", json_lines([{"query": text, "passage": "A passage"}]))
    wiki_path = write_lines(tmp_path / "w.jsonl", json_lines([{"title": "Article", "text": f"{text}\nA paragraph long enough to be a passage here."}]))
    # When read, Then each is a counted skip, not a pair
    skips = SkipCounter()
    assert list(news.read([news_path], news.Options(), skips)) == []
    assert list(generic.read([generic_path], generic.Options(), skips)) == []
    assert skips == Counter({"article without headline or text": 1, "row without text in 'query' or 'passage'": 1})
    # And an invisible paragraph is not a paragraph
    pairs = list(wikipedia.read([wiki_path], wikipedia.Options(min_paragraph_words=3), SkipCounter()))
    assert [p.passage for p in pairs] == ["A paragraph long enough to be a passage here."]


def test_pipeline_drops_pairs_left_invisible_after_cleaning_with_a_counted_reason(tmp_path):
    """Given pairs whose passage is a URL plus invisible characters (visible to the reader, empty once cleaned),
    When curated with cleaning on and with cleaning off,
    Then the pairs are dropped under 'visible_text: ...' (after cleaning) and the counts reconcile."""
    rows = [
        {"q": "First question about tea", "p": "https://example.org/tea \u200b"},
        {"q": "https://example.org/q \u2060\u00ad", "p": "Green tea contains catechins and other antioxidants."},
        {"q": "Kept question about tea", "p": "Black tea is oxidised longer than green tea is."},
    ]
    write_lines(tmp_path / "g.jsonl", json_lines(rows))

    def run(name, clean_enabled):
        return curate(CurateConfig.model_validate({
            "output_dir": str(tmp_path / name), "workers": 1,
            "sources": [{"type": "generic", "paths": [str(tmp_path / "g.jsonl")], "options": {"query_column": "q", "passage_column": "p"}}],
            "filters": {"clean": {"enabled": clean_enabled}, "language": {"enabled": False}, "length": {"min_passage_words": 1}},
        }))

    report = run("cleaned", True)
    assert report["sources"]["generic"]["dropped"] == {f"visible_text: {PASSAGE_INVISIBLE}": 1, f"visible_text: {QUERY_INVISIBLE}": 1}
    assert [row["query"] for row in pq.read_table(tmp_path / "cleaned" / "pairs" / "generic-00000.parquet").to_pylist()] == ["Kept question about tea"]
    # With cleaning off the URLs stay visible, so nothing is invisible; the rule still runs
    write_lines(tmp_path / "g.jsonl", json_lines(rows + [{"q": "Question", "p": "\ufeff\u200b"}]))
    report = run("raw", False)
    assert report["reconciled"]
    assert report["sources"]["generic"]["dropped"] == {"reader: row without text in 'q' or 'p'": 1}


def test_decontamination_index_skips_invisible_eval_texts(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "title": "\\u200b", "text": "visible words"}\n{"_id": "2", "title": "", "text": "\\u2060\\u00ad"}\n')
    texts = list(decontaminate.iter_eval_texts(tmp_path / "corpus.jsonl", SkipCounter()))
    assert texts == ["visible words"]


def test_stdlib_docs_skip_invisible_docstrings(tmp_path):
    # Given a library folder whose modules' docstrings are invisible, and one that is not
    from e5kit.data.readers.pydoc import iter_module_docs

    for index, text in enumerate(["\u200b", "\u2060\u00ad", "\ufeff "]):
        (tmp_path / f"invisible{index}.py").write_text(f'"""{text}"""\n\ndef f():\n    """{text}"""\n', encoding="utf-8")
    (tmp_path / "shown.py").write_text('"""A visible summary."""\n', encoding="utf-8")
    # Then only the visible docstring becomes a record
    assert [record.doc_id for record in iter_module_docs(tmp_path)] == ["shown"]
