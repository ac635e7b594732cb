"""Common Crawl: (page title, passage) from WARC responses (HTML) or WET conversion records (plain text).

Read with warcio, record by record. For HTML the title is the ``<title>`` element and the passage the
page's visible text (the page is parsed as HTML once, here: ``e5kit.data.markup``); for WET the first
line is the page title (Common Crawl's text extractor writes it there) and the rest the text, which is
plain text and never decoded. The passage is the leading paragraphs up to ``max_passage_words``.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from e5kit.data.markup import HTMLText, normalize_space
from e5kit.data.pair import Pair
from e5kit.data.readers.base import ReaderOptions, file_meta
from e5kit.text import has_visible_text


class Options(ReaderOptions):
    """WARC/WET reader options.

    Attributes:
        max_title_chars: A longer first line is not a title.
        max_passage_words: The passage is cut after the paragraph that reaches this many words.
    """

    max_title_chars: int = 200
    max_passage_words: int = 256


def _leading_paragraphs(text: str, max_words: int) -> str:
    kept, count = [], 0
    for paragraph in text.split("\n"):
        if has_visible_text(paragraph):
            kept.append(paragraph.strip())
            count += len(paragraph.split())
            if count >= max_words:
                break
    return "\n".join(kept)


def _charset(record) -> str:
    content_type = (record.http_headers.get_header("Content-Type") if record.http_headers else None) or ""
    for part in content_type.split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            return value.strip("\"' ").lower()
    return "utf-8"


def _title_and_text(record, options: Options, skips: Counter) -> tuple[str, str] | None:
    payload = record.content_stream().read()
    if record.rec_type == "response":
        content_type = (record.http_headers.get_header("Content-Type") or "") if record.http_headers else ""
        if "html" not in content_type.lower():
            skips["non-HTML response"] += 1
            return None
        try:
            markup = payload.decode(_charset(record))
        except (UnicodeDecodeError, LookupError):
            skips["undecodable page (charset)"] += 1
            return None
        parser = HTMLText()
        parser.feed(markup)
        parser.close()
        return normalize_space(" ".join(parser.title)), parser.text()
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        skips["invalid UTF-8"] += 1
        return None
    title, _, body = text.strip().partition("\n")
    if len(title) > options.max_title_chars:
        return "", text
    return title.strip(), normalize_space(body)


def _read_file(path: Path, options: Options, skips: Counter) -> Iterator[Pair]:
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    with path.open("rb") as handle:
        try:
            records = ArchiveIterator(handle)
            for record in records:
                if record.rec_type not in ("response", "conversion"):
                    skips["non-content WARC record (warcinfo, request, metadata)"] += 1
                    continue
                url = record.rec_headers.get_header("WARC-Target-URI")
                extracted = _title_and_text(record, options, skips)
                if extracted is None:
                    continue
                title, text = extracted
                passage = _leading_paragraphs(text, options.max_passage_words)
                if not has_visible_text(title) or not has_visible_text(passage):
                    skips["page without title or text"] += 1
                    continue
                meta = file_meta(path, id=record.rec_headers.get_header("WARC-Record-ID"), url=url, offset=records.get_record_offset())
                yield Pair(title, passage, meta)
        except (ArchiveLoadFailed, EOFError, OSError, zlib.error, ValueError):
            skips["malformed or truncated WARC"] += 1


def read(paths: list[Path], options: Options, skips: Counter) -> Iterator[Pair]:
    """Stream (title, passage) pairs from WARC or WET files (gzip per record, as Common Crawl ships them)."""
    for path in paths:
        yield from _read_file(path, options, skips)
