"""Text survives cleaning: HTML is decoded once, by the reader of an HTML field; plain text is never decoded.

Issue 12, item 3. The kind of fault: the clean filter guessed from a text's content ("it has a '<' or
an '&'") that the text was HTML and parsed or unescaped it, so plain text lost characters
(``if (a<b && c>d)`` became ``if (ad)``) and already-decoded text was decoded a second time.
"""

from __future__ import annotations

import gzip
import json
import re

import pyarrow.parquet as pq
import pytest
from curation_dumps import json_lines, posts_xml, write_lines
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from e5kit.config import load_config
from e5kit.data.curation import CurateConfig, curate
from e5kit.data.filters import clean
from e5kit.data.readers import arxiv, generic, news, stackexchange
from e5kit.data.skips import SkipCounter
from e5kit.data.text import html_to_text, normalize_space, unescape_reddit
from e5kit.io.pairs import Pair

CODE_TEXTS = ["if (a<b && c>d)", "std::vector<int>", "Use x &amp;&amp; y; a &lt;b&gt; is not a tag, nor is <br> here"]
#: arXiv 0704.0215 (title and abstract), one of the shared sample's abstracts the old cleaner cut short.
ARXIV_0704_0215 = {
    "id": "0704.0215",
    "title": "The exact asymptotic of the collision time tail distribution for independent Brownian particles with different drifts",
    "abstract": "In this note we consider the time of the collision $\\tau$ for $n$ independent Brownian motions $X^1_t,...,X_t^n$ "
    "with drifts $a_1,...,a_n$, each starting from $x=(x_1,...,x_n)$, where $x_1<...<x_n$. We show the exact asymptotics of "
    "$P_x(\\tau>t) = C h(x)t^{-\\alpha}e^{-\\gamma t}(1 + o(1))$ as $t\\to\\infty$ and identify $C,h(x),\\alpha,\\gamma$ in terms of the drifts.",
}


def pairs_of(output, source):
    return [(row["query"], row["passage"]) for row in pq.read_table(output / "pairs" / f"{source}-00000.parquet").to_pylist()]


def test_code_and_math_survive_curation_unchanged(tmp_path):
    """Given plain-text sources holding code with '<', '>' and '&' and an arXiv abstract with inequalities,
    When they are curated end to end,
    Then every text comes out exactly as it went in."""
    rows = [{"q": f"Snippet {i}: {text}", "p": text} for i, text in enumerate(CODE_TEXTS)]
    write_lines(tmp_path / "code.jsonl", json_lines(rows))
    write_lines(tmp_path / "papers.jsonl", json_lines([ARXIV_0704_0215]))
    config = CurateConfig.model_validate({
        "output_dir": str(tmp_path / "out"), "workers": 1,
        "sources": [{"type": "generic", "paths": [str(tmp_path / "code.jsonl")], "options": {"query_column": "q", "passage_column": "p"}},
                    {"type": "arxiv", "paths": [str(tmp_path / "papers.jsonl")]}],
        "filters": {"language": {"enabled": False}, "length": {"min_passage_words": 1}, "near_dedup": {"enabled": False}},
    })
    report = curate(config)
    assert report["reconciled"]
    assert pairs_of(tmp_path / "out", "generic") == [(row["q"], row["p"]) for row in rows]
    assert pairs_of(tmp_path / "out", "arxiv") == [(ARXIV_0704_0215["title"], ARXIV_0704_0215["abstract"])]
    assert "$x_1<...<x_n$" in ARXIV_0704_0215["abstract"] and "$P_x(\\tau>t)" in ARXIV_0704_0215["abstract"]


@pytest.mark.parametrize("text", CODE_TEXTS + [ARXIV_0704_0215["abstract"], "a &lt; b &amp;lt; c", "<p>not parsed</p>"])
def test_clean_filter_never_decodes(text):
    # Given a plain text with markup-like characters; When cleaned; Then nothing is parsed or unescaped
    assert clean.CleanFilter(clean.Config()).clean(text) == text


def test_clean_applies_only_urls_boilerplate_and_whitespace():
    # Given text with a markdown link, a bare URL, a boilerplate line and ragged spacing
    cleaner = clean.CleanFilter(clean.Config())
    text = "Tea  &amp; <b>health</b>\n\nsee [the study](https://example.org/x) or https://example.org/y now.\nAccept cookies"
    # When cleaned, Then only the documented rules applied: the '&amp;' and '<b>' stay as written
    assert cleaner.clean(text) == "Tea &amp; <b>health</b>\n\nsee the study or now."


@pytest.mark.parametrize("value", [True, False])
def test_strip_html_is_a_config_error_naming_the_field(tmp_path, value):
    # Given a config that still sets the removed filters.clean.strip_html
    write_lines(tmp_path / "n.jsonl", json_lines([{"title": "t", "text": "x"}]))
    base = ["output_dir=" + str(tmp_path / "o"), f"sources=[{{type: news, paths: ['{tmp_path}/n.jsonl']}}]"]
    # Then loading it fails, naming the field and where HTML is handled now
    with pytest.raises(ValueError, match=r"filters\.clean: .*strip_html was removed.*reader"):
        load_config(CurateConfig, None, base + [f"filters.clean.strip_html={str(value).lower()}"])
    with pytest.raises(ValueError, match=r"sources\.0\.filters: .*strip_html was removed"):
        load_config(CurateConfig, None, base + [f"sources.0.filters.clean.strip_html={str(value).lower()}"])


@pytest.mark.shared
def test_shared_arxiv_abstracts_with_angle_brackets_keep_all_their_text(shared_dir):
    """Given the shared arXiv sample, When its abstracts holding '<' before a letter are read and cleaned,
    Then each keeps all its text (9 of these 25 lost text to the old HTML guess)."""
    path = shared_dir / "data" / "raw" / "arxiv" / "title_abstract.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        abstracts = {number: json.loads(line).get("abstract") or "" for number, line in enumerate(handle, start=1)}
    angled = {number for number, abstract in abstracts.items() if re.search(r"<[A-Za-z]", abstract)}
    cleaner = clean.CleanFilter(clean.Config())
    pairs = [pair for pair in arxiv.read([path], arxiv.Options(citations=False), SkipCounter()) if pair.meta["line"] in angled]
    assert len(pairs) == len(angled) == 25
    for pair in pairs:
        # no URL or boilerplate in these: the cleaned passage is the abstract, up to whitespace
        assert cleaner.clean(pair.passage).split() == abstracts[pair.meta["line"]].split(), pair.meta


# ----------------------------------------------------------------------------- property: plain text
_BOILERPLATE = re.compile("|".join(f"(?:{p})" for p in clean.DEFAULT_BOILERPLATE), re.IGNORECASE)
_LINKS = re.compile(r"https?://|ftp://|www\.|\[[^\]]+\]\((?:https?://|/)", re.IGNORECASE)
#: Plain text rich in markup-like pieces: tags, entities, comparisons, math, brackets, odd whitespace.
PLAIN = st.lists(st.sampled_from(list("abcxyz019 <>&;#/=\"'$\\_^{}()[]\t\n\r.:-\u00a0\u200bé") + ["&lt;", "&amp;", "&#39;", "<p>", "</b>", "<br/>", "<script>"]), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=PLAIN)
def test_plain_text_changes_only_by_whitespace(text):
    # Given plain text without URLs or boilerplate (markup-like characters and entities allowed)
    assume(not _LINKS.search(text) and not _BOILERPLATE.search(text))
    cleaned = clean.CleanFilter(clean.Config()).clean(text)
    # Then cleaning equals whitespace normalisation, and no visible character is lost or added
    assert cleaned == normalize_space(text)
    assert "".join(cleaned.split()) == "".join(text.split())


# ----------------------------------------------------------------------------- HTML fields: decoded once
SE_ROWS = [
    {"Id": 1, "PostTypeId": 1, "AcceptedAnswerId": 2, "Score": 3, "Title": "Why does a<b && c>d fail with std::vector<int>?",
     "Body": "<p>My code:</p><pre><code>std::vector&lt;int&gt; v; if (a&lt;b &amp;&amp; c&gt;d) {}</code></pre>"},
    {"Id": 2, "PostTypeId": 2, "ParentId": 1, "Score": 1,
     "Body": "<p>Write <code>&amp;lt;</code> in HTML to show &lt;; the entity &amp;amp; shows &amp;.</p>"},
]


def test_stackexchange_body_html_is_decoded_exactly_once(tmp_path):
    """Given a Posts.xml whose bodies hold HTML with entities and code (XML-escaped once more in the attribute),
    When read, Then the XML unescape and one HTML decode give the visible text: '&lt;int&gt;' in code is '<int>',
    a literal '&amp;lt;' in the HTML is the text '&lt;', and the title is plain text, never HTML-decoded."""
    path = tmp_path / "Posts.xml"
    path.write_bytes(posts_xml(SE_ROWS))
    assert b"&amp;lt;int&amp;gt;" in path.read_bytes() and b"&amp;amp;lt;" in path.read_bytes()
    skips = SkipCounter()
    pairs = list(stackexchange.read([path], stackexchange.Options(), skips))
    assert [(p.query, p.passage) for p in pairs] == [(
        "Why does a<b && c>d fail with std::vector<int>?\nMy code:\n\nstd::vector<int> v; if (a<b && c>d) {}",
        "Write &lt; in HTML to show <; the entity &amp; shows &.",
    )]
    # And curation's clean filter leaves the decoded text alone
    cleaner = clean.CleanFilter(clean.Config())
    assert cleaner.clean(pairs[0].passage) == pairs[0].passage


def test_an_answer_without_visible_text_after_decoding_never_displaces_a_readable_one(tmp_path):
    # Given a question whose accepted, top-scored answer is an image only, and a lower-scored readable answer
    rows = [
        {"Id": 1, "PostTypeId": 1, "AcceptedAnswerId": 2, "Score": 3, "Title": "How do I pour a stout?", "Body": "<p>Any tips?</p>"},
        {"Id": 2, "PostTypeId": 2, "ParentId": 1, "Score": 9, "Body": "<p><img src='pour.png'/></p>"},
        {"Id": 3, "PostTypeId": 2, "ParentId": 1, "Score": 1, "Body": "<p>Tilt the glass at 45 degrees, then straighten it.</p>"},
    ]
    path = tmp_path / "Posts.xml"
    path.write_bytes(posts_xml(rows))
    skips = SkipCounter()
    # When read
    pairs = list(stackexchange.read([path], stackexchange.Options(), skips))
    # Then the readable answer is the passage and the image-only one is a counted skip
    assert [p.passage for p in pairs] == ["Tilt the glass at 45 degrees, then straighten it."]
    assert skips["answer without visible text"] == 1


def test_stackexchange_text_exports_are_not_decoded_again(tmp_path):
    # Given a JSONL extraction whose bodies are already text (as the shared posts.jsonl: HTML stripped, entities decoded)
    records = [
        {"site": "s", "id": 1, "post_type": "question", "accepted_answer_id": 2, "score": 1, "title": "Tags in prose", "body": "Look at this <huge stack of solutions>."},
        {"site": "s", "id": 2, "post_type": "answer", "parent_id": 1, "score": 1, "body": "Write &lt; for < and keep <cool trick> as written."},
    ]
    path = write_lines(tmp_path / "posts.jsonl", json_lines(records))
    pairs = list(stackexchange.read([path], stackexchange.Options(), SkipCounter()))
    # Then nothing is parsed as HTML or unescaped
    assert [(p.query, p.passage) for p in pairs] == [("Tags in prose\nLook at this <huge stack of solutions>.", "Write &lt; for < and keep <cool trick> as written.")]
    # And body_format: html says an extraction holds HTML
    html_pairs = list(stackexchange.read([path], stackexchange.Options(body_format="html"), SkipCounter()))
    assert html_pairs[0].passage == "Write < for < and keep as written."


def test_html_to_text_decodes_references_once():
    assert html_to_text("<pre><code>std::vector&lt;int&gt;</code></pre>") == "std::vector<int>"
    assert html_to_text("<p>&amp;lt; &amp;amp;</p>") == "&lt; &amp;"


def test_reddit_api_escaping_is_undone_once_and_only_for_its_three_characters():
    assert unescape_reddit("a &lt; b &amp;&amp; c &gt; d") == "a < b && c > d"
    assert unescape_reddit("&amp;lt; stays &lt; and &amp;#x200B; stays &#x200B;") == "&lt; stays < and &#x200B; stays &#x200B;"
    assert unescape_reddit("&quot;quoted&quot; &#39;") == "&quot;quoted&quot; &#39;"


def test_news_is_plain_text_unless_the_export_is_known_to_carry_entities(tmp_path):
    # Given an AG News style record with HTML character references
    path = write_lines(tmp_path / "n.jsonl", json_lines([{"title": "Chips &amp; more", "description": "Texas Instruments &lt;TXN.N&gt; said if (a<b) nothing."}]))
    plain = list(news.read([path], news.Options(), SkipCounter()))
    decoded = list(news.read([path], news.Options(unescape_entities=True), SkipCounter()))
    # Then by default the text is used as written, and with unescape_entities decoded once (no tag parsing)
    assert (plain[0].query, plain[0].passage) == ("Chips &amp; more", "Texas Instruments &lt;TXN.N&gt; said if (a<b) nothing.")
    assert (decoded[0].query, decoded[0].passage) == ("Chips & more", "Texas Instruments <TXN.N> said if (a<b) nothing.")


def test_generic_and_arxiv_readers_pass_markup_like_text_through(tmp_path):
    rows = [{"query": text, "passage": f"{text} again"} for text in CODE_TEXTS]
    pairs = list(generic.read([write_lines(tmp_path / "g.jsonl", json_lines(rows))], generic.Options(), SkipCounter()))
    assert [(p.query, p.passage) for p in pairs] == [(r["query"], r["passage"]) for r in rows]
    papers = list(arxiv.read([write_lines(tmp_path / "a.jsonl", json_lines([ARXIV_0704_0215]))], arxiv.Options(), SkipCounter()))
    assert papers[0].passage == ARXIV_0704_0215["abstract"]
    assert clean.CleanFilter(clean.Config()).keep(Pair("q", papers[0].passage)) is True
