"""Small, realistic fixtures in the raw dump formats: Pushshift ndjson, Posts.xml, MediaWiki XML, WARC/WET."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

LONG_COMMENT = "x" * 5000


def pushshift_records() -> tuple[list[dict], list[dict]]:
    """Three posts and their comments; the expected pairs are documented in the tests."""
    submissions = [
        {"id": "p1", "title": "How do I learn Python quickly", "selftext": "I know some C already.", "score": 10, "subreddit": "learnpython"},
        {"id": "p2", "title": "[deleted by user]", "selftext": "[removed]", "score": 3, "subreddit": "learnpython"},
        {"id": "p3", "title": "Best hiking trails near Denver", "selftext": "", "score": 5, "subreddit": "hiking"},
    ]
    comments = [
        {"id": "c1", "link_id": "t3_p1", "parent_id": "t3_p1", "score": 5, "body": "Work through the official tutorial and build small projects every day."},
        {"id": "c2", "link_id": "t3_p1", "parent_id": "t3_p1", "score": 12, "body": "Automate boring tasks you already do; you learn fastest when it matters to you."},
        {"id": "c3", "link_id": "t3_p1", "parent_id": "t1_c2", "score": 50, "body": "This reply is not top-level, however many upvotes it has."},
        {"id": "c4", "link_id": "t3_p1", "parent_id": "t3_p1", "score": 99, "body": LONG_COMMENT},
        {"id": "c5", "link_id": "t3_p2", "parent_id": "t3_p2", "score": 4, "body": "A comment on a deleted post."},
        {"id": "c6", "link_id": "t3_p3", "parent_id": "t3_p3", "score": 0, "body": "Score zero: dropped by E5's rule."},
        {"id": "c7", "link_id": "t3_p3", "parent_id": "t3_p3", "score": 2, "body": "[removed]"},
    ]
    return submissions, comments


def write_lines(path: Path, lines: list[bytes]) -> Path:
    """Write lines, compressing by suffix (.gz, .zst, or plain)."""
    data = b"".join(line + b"\n" for line in lines)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def json_lines(records: list[dict]) -> list[bytes]:
    return [json.dumps(record).encode() for record in records]


def posts_xml(rows: list[dict], malformed: int = 0) -> bytes:
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<posts>"]
    for row in rows:
        attributes = " ".join(f"{key}={quoteattr(str(value))}" for key, value in row.items())
        lines.append(f"  <row {attributes} />")
    lines += ['  <row Id="999" PostTypeId="1" Title="unterminated'] * malformed
    lines.append("</posts>")
    return ("\n".join(lines) + "\n").encode()


STACK_ROWS = [
    {"Id": 1, "PostTypeId": 1, "AcceptedAnswerId": 3, "Score": 5, "Title": "What is a citra hop?", "Body": "<p>I saw <b>citra</b> hops on a label.</p>"},
    {"Id": 2, "PostTypeId": 2, "ParentId": 1, "Score": 30, "Body": "<p>A highly voted but not accepted answer about hops.</p>"},
    {"Id": 3, "PostTypeId": 2, "ParentId": 1, "Score": 2, "Body": "<p>Citra is a hop variety with citrus &amp; tropical aromas.</p>"},
    {"Id": 4, "PostTypeId": 1, "Score": 1, "Title": "Why is it called porter?", "Body": "<p>Where does the name come from?</p>"},
    {"Id": 5, "PostTypeId": 2, "ParentId": 4, "Score": 4, "Body": "<p>It was popular with <a href='x'>street porters</a> in London.</p>"},
    {"Id": 6, "PostTypeId": 2, "ParentId": 4, "Score": 1, "Body": "<p>A lower-scored answer.</p>"},
    {"Id": 7, "PostTypeId": 1, "Score": 0, "Title": "Unanswered question", "Body": "<p>Nobody knows.</p>"},
    {"Id": 8, "PostTypeId": 2, "ParentId": 7, "Score": 0, "Body": "<p>A zero-score answer below the threshold.</p>"},
    {"Id": 9, "PostTypeId": 5, "Score": 0, "Body": "<p>Tag wiki excerpt.</p>"},
]


def mediawiki_xml() -> bytes:
    article = (
        "{{Infobox person|name=Alan Turing}}\n"
        "'''Alan Mathison Turing''' was an English [[mathematician]], computer scientist and logician."
        "&lt;ref&gt;A citation that must not appear&lt;/ref&gt;\n"
        "[[File:Turing.jpg|thumb|A caption]]\n\n"
        "== Early life ==\n"
        "Turing was born in [[Maida Vale]], London, while his father was on leave from the Indian Civil Service.\n\n"
        "== References ==\n{{reflist}}\n"
    )
    return (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xml:lang="en">\n'
        "  <siteinfo><sitename>Wikipedia</sitename></siteinfo>\n"
        "  <page>\n    <title>Alan Turing</title>\n    <ns>0</ns>\n    <id>1</id>\n"
        f'    <revision><id>10</id><text xml:space="preserve">{article}</text></revision>\n  </page>\n'
        "  <page>\n    <title>Turing</title>\n    <ns>0</ns>\n    <id>2</id>\n    <redirect title=\"Alan Turing\" />\n"
        '    <revision><id>11</id><text xml:space="preserve">#REDIRECT [[Alan Turing]]</text></revision>\n  </page>\n'
        "  <page>\n    <title>Talk:Alan Turing</title>\n    <ns>1</ns>\n    <id>3</id>\n"
        '    <revision><id>12</id><text xml:space="preserve">Talk page text that is long enough to be a passage.</text></revision>\n  </page>\n'
        "  <page>\n    <title>Broken</title>\n    <ns>0</ns>\n    <revision><text>unclosed <b></text>\n  </page>\n"
        "</mediawiki>\n"
    ).encode()


def write_warc(path: Path, wet: bool) -> Path:
    """A gzipped WARC with a warcinfo record and two pages (HTML responses, or WET conversions)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with path.open("wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "e5kit-tests"}))
        pages = [
            ("https://example.org/tea", "Green tea health benefits", "Green tea contains antioxidants called catechins that may support heart health."),
            ("https://example.org/rust", "Learning Rust ownership", "Ownership rules let Rust manage memory safely without a garbage collector."),
        ]
        for url, title, text in pages:
            if wet:
                payload = f"{title}\n{text}\n".encode()
                record = writer.create_warc_record(url, "conversion", payload=io.BytesIO(payload), warc_content_type="text/plain")
            else:
                html = f"<html><head><title>{title}</title><script>var x = 1;</script></head><body><nav>Sign in</nav><p>{text}</p></body></html>"
                headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
                record = writer.create_warc_record(url, "response", payload=io.BytesIO(html.encode()), http_headers=headers)
            writer.write_record(record)
    return path
