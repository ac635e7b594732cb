"""Readers: expected pairs from small dumps in each raw format, bad input counted per reason, fuzzing."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest
from curation_dumps import STACK_ROWS, json_lines, mediawiki_xml, posts_xml, write_lines, write_warc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e5kit.data.readers import arxiv, generic, news, reddit, stackexchange, warc, wikipedia
from e5kit.data.skips import SkipCounter
from e5kit.io.files import INVALID_UTF8, TRUNCATED
from e5kit.io.tables import CORRUPT_JSON


def read_all(module, paths, **options):
    skips = SkipCounter()
    pairs = list(module.read(list(paths), module.Options(**options), skips))
    return pairs, skips


def test_reddit_pushshift_pairs_post_with_best_eligible_top_level_comment(pushshift_dir):
    # Given monthly submissions (.zst) and comments (.gz) files
    shards = reddit.group_shards(sorted(pushshift_dir.iterdir()))
    # When they are read as one shard
    assert len(shards) == 1
    pairs, skips = read_all(reddit, shards[0])
    # Then the post pairs with its best top-level comment under E5's rules (c4 is too long, c3 is a reply)
    assert [(p.query, p.passage) for p in pairs] == [
        ("How do I learn Python quickly\nI know some C already.", "Automate boring tasks you already do; you learn fastest when it matters to you.")
    ]
    assert skips["comment over 4096 characters"] == 1
    assert skips["comment score < 1"] == 1
    assert skips["deleted or removed comment"] == 1
    assert skips["deleted or removed post"] == 1
    assert skips["comment is not top-level"] == 1
    # And every record is accounted for: 3 posts + 7 comments = 1 pair (2 records) + 8 skips
    assert 2 * len(pairs) + sum(skips.values()) == 10


def test_stackexchange_posts_xml_prefers_accepted_answer_and_strips_html(tmp_path):
    # Given a Posts.xml with an accepted low-score answer, an unaccepted question and a malformed row
    path = tmp_path / "Posts.xml"
    path.write_bytes(posts_xml(STACK_ROWS, malformed=1))
    # When read
    pairs, skips = read_all(stackexchange, [path])
    # Then the accepted answer wins over a higher-scored one, else the best answer, HTML stripped
    assert [(p.query, p.passage) for p in pairs] == [
        ("What is a citra hop?\nI saw citra hops on a label.", "Citra is a hop variety with citrus & tropical aromas."),
        ("Why is it called porter?\nWhere does the name come from?", "It was popular with street porters in London."),
    ]
    assert skips == Counter({"answer is not its question's chosen answer": 3, "question without accepted or high-scored answer": 1,
                             "post is neither question nor answer": 1, "malformed XML row": 1})


def test_wikipedia_xml_dump_gives_entity_and_section_pairs(tmp_path):
    # Given a MediaWiki export with an article, a redirect, a talk page and a broken page
    path = tmp_path / "enwiki-pages-articles.xml.gz"
    path.write_bytes(gzip.compress(mediawiki_xml()))
    # When read
    pairs, skips = read_all(wikipedia, [path], min_paragraph_words=5)
    # Then (title [+ section], paragraph) pairs come out with markup, refs and captions removed
    assert [(p.query, p.passage) for p in pairs] == [
        ("Alan Turing", "Alan Mathison Turing was an English mathematician, computer scientist and logician."),
        ("Alan Turing Early life", "Turing was born in Maida Vale, London, while his father was on leave from the Indian Civil Service."),
    ]
    assert skips == Counter({"redirect page": 1, "page outside the article namespace": 1, "malformed XML page": 1, "reference or navigation section": 1})


@pytest.mark.parametrize("wet", [False, True])
def test_warc_and_wet_give_title_passage_pairs(tmp_path, wet):
    # Given a Common Crawl style WARC (HTML responses) or WET (text conversions)
    path = write_warc(tmp_path / ("x.warc.wet.gz" if wet else "x.warc.gz"), wet=wet)
    # When read
    pairs, skips = read_all(warc, [path])
    # Then each page gives (title, text) and the warcinfo record is counted
    assert [p.query for p in pairs] == ["Green tea health benefits", "Learning Rust ownership"]
    assert all("catechins" in p.passage or "garbage collector" in p.passage for p in pairs)
    assert all("var x" not in p.passage for p in pairs)
    assert skips == Counter({"non-content WARC record (warcinfo, request, metadata)": 1})


def test_arxiv_title_abstract_and_citation_pairs(tmp_path):
    # Given papers where one cites another by id, one inline and one cites a missing paper
    records = [
        {"id": "1", "title": "Paper one", "abstract": "First abstract.", "citations": [{"context": "as shown by [2]", "cited_id": "2"}, {"context": "see [9]", "cited_id": "9"}]},
        {"id": "2", "title": "Paper two", "abstract": "Second abstract."},
        {"id": "3", "title": "Paper three", "citations": [{"context": "inline cite", "cited_title": "Cited", "cited_abstract": "Its abstract."}]},
    ]
    path = write_lines(tmp_path / "papers.jsonl", json_lines(records))
    pairs, skips = read_all(arxiv, [path])
    # Then title->abstract pairs are asymmetric and citation pairs symmetric
    assert [(p.query, p.passage, p.symmetric) for p in pairs] == [
        ("Paper one", "First abstract.", False),
        ("Paper two", "Second abstract.", False),
        ("inline cite", "Cited\nIts abstract.", True),
        ("as shown by [2]", "Paper two\nSecond abstract.", True),
    ]
    assert skips == Counter({"paper without title or abstract": 1, "cited paper not in shard": 1})


def test_generic_reader_maps_columns_in_csv_parquet_and_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.csv").write_text('q,p,id\n"what, exactly",answer one,1\nonly query,,2\n', encoding="utf-8")
    pq.write_table(pa.table({"q": ["pq query"], "p": ["pq passage"], "id": ["3"]}), tmp_path / "b.parquet")
    write_lines(tmp_path / "c.jsonl.gz", json_lines([{"q": "jq", "p": "jp", "id": 4}]))
    pairs, skips = read_all(generic, sorted(tmp_path.iterdir()), query_column="q", passage_column="p", id_column="id")
    assert [(p.query, p.passage, p.meta["id"]) for p in pairs] == [("what, exactly", "answer one", "1"), ("pq query", "pq passage", "3"), ("jq", "jp", 4)]
    assert sum(skips.values()) == 1


def test_bad_input_is_counted_per_reason_never_raised(tmp_path):
    # Given a JSONL file with good records, a corrupt line, invalid UTF-8, a missing field, then cut short
    good = json.dumps({"title": "Headline", "description": "Body text of the article."}).encode()
    lines = [good, b"{not json", b'{"title": "caf\xe9"}', json.dumps({"title": "no body"}).encode(), b"[1, 2]"] + [good] * 2000
    path = tmp_path / "news.jsonl.gz"
    compressed = gzip.compress(b"".join(line + b"\n" for line in lines))
    path.write_bytes(compressed[: len(compressed) // 2])
    # When read
    pairs, skips = read_all(news, [path])
    # Then every problem has its own reason and nothing raises
    assert skips[CORRUPT_JSON] == 1 and skips[INVALID_UTF8] == 1 and skips[TRUNCATED] == 1
    assert skips["article without headline or text"] == 1 and skips["JSON line is not an object"] == 1
    assert 0 < len(pairs) < 2001


def test_truncated_zstd_is_counted(tmp_path):
    import zstandard

    data = b"".join(line + b"\n" for line in json_lines([{"title": f"t{i}", "text": "body"} for i in range(5000)]))
    compressed = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / "news.jsonl.zst"
    path.write_bytes(compressed[:-50])
    pairs, skips = read_all(news, [path])
    assert skips[TRUNCATED] == 1
    assert len(pairs) < 5000


LINE = st.one_of(
    st.builds(lambda t, d: json.dumps({"title": t, "description": d}).encode(), st.text(max_size=30), st.text(max_size=60)),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, max_size=30), suffix=st.sampled_from([".jsonl", ".jsonl.gz", ".jsonl.zst"]), cut=st.integers(0, 8))
def test_fuzz_news_reader_accounts_for_every_line(tmp_path_factory, lines, suffix, cut):
    # Given arbitrary lines (valid records and random bytes), possibly cut short
    path = write_lines(tmp_path_factory.mktemp("fuzz") / f"in{suffix}", lines)
    if cut:
        path.write_bytes(path.read_bytes()[:-cut])
    # When read, it never raises
    pairs, skips = read_all(news, [path])
    # And without a cut every non-blank line is a pair or a counted skip
    if not cut:
        non_blank = sum(1 for line in lines if line.strip())
        assert len(pairs) + sum(skips.values()) == non_blank


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(st.binary(max_size=60).filter(lambda b: b"\n" not in b), max_size=10))
def test_fuzz_xml_readers_never_raise(tmp_path_factory, garbage):
    """Given valid dumps followed by garbage lines (one unit each: a <row ...> line or a <page> line),
    When read, Then nothing raises and every unit ends as a pair or a counted skip."""
    folder = tmp_path_factory.mktemp("fuzzxml")
    posts = posts_xml(STACK_ROWS[:3]) + b"\n".join(b"<row " + g for g in garbage)
    (folder / "Posts.xml").write_bytes(posts)
    (folder / "wiki.xml").write_bytes(mediawiki_xml() + b"\n".join(b"<page>" + g for g in garbage))
    pairs, skips = read_all(stackexchange, [folder / "Posts.xml"])
    # Stack Exchange: every row is one unit; a pair joins two (question and answer)
    assert 2 * len(pairs) + sum(skips.values()) == 3 + len(garbage)
    # Wikipedia: the clean dump's units (paragraph pairs and skips) plus one per garbage page
    (folder / "clean.xml").write_bytes(mediawiki_xml())
    clean_pairs, clean_skips = read_all(wikipedia, [folder / "clean.xml"])
    pairs, skips = read_all(wikipedia, [folder / "wiki.xml"])
    assert [(p.query, p.passage) for p in pairs] == [(p.query, p.passage) for p in clean_pairs]
    assert sum(skips.values()) == sum(clean_skips.values()) + len(garbage)


@pytest.mark.shared
def test_readers_on_real_samples(shared_dir):
    # Given the real samples in ../shared/data/raw
    raw = shared_dir / "data" / "raw"
    # When each reader reads its sample
    results = {
        "reddit": read_all(reddit, [raw / "reddit" / "post_comment_pairs.jsonl.gz"]),
        "stackexchange": read_all(stackexchange, [raw / "stackexchange" / "posts.jsonl.gz"]),
        "wikipedia": read_all(wikipedia, [raw / "wikipedia" / "wikitext2_test_paragraphs.jsonl.gz"]),
        "arxiv": read_all(arxiv, [raw / "arxiv" / "title_abstract.jsonl.gz"]),
        "news": read_all(news, [raw / "news" / "ag_news_test.jsonl.gz"]),
    }
    # Then each gives pairs, and units (pairs + skipped records) match the manifest's record counts
    records = {"reddit": 9978, "wikipedia": 2187, "arxiv": 2993, "news": 7600}
    for name, (pairs, skips) in results.items():
        assert pairs, name
        if name in records:
            assert len(pairs) + sum(skips.values()) >= records[name] if name == "wikipedia" else len(pairs) + sum(skips.values()) == records[name]
    # Reddit follows E5's post -> comment rule; replies are counted, not lost
    assert results["reddit"][1]["comment-reply pair (include_replies is off)"] == 6809
    # Stack Exchange joins questions to answers (5,631 posts; 1,440 pairs with no score threshold)
    assert 1300 < len(results["stackexchange"][0]) <= 1440
