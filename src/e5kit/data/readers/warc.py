"""Common Crawl: (page title, passage) from WARC responses (HTML) or WET conversion records (plain text).

Read with warcio, record by record. For HTML the title is the ``<title>`` element and the passage the
page's visible text (the page is parsed as HTML once, here: ``e5kit.data.text``); for WET the first
line is the page title (Common Crawl's text extractor writes it there) and the rest the text, which is
plain text and never decoded. The passage is the leading paragraphs up to ``max_passage_words``.

Files are decompressed by ``e5kit.io.files`` like every input (``.warc.gz`` as Common Crawl ships it,
``.bz2``, ``.xz``, ``.zst``), so a cut stream keeps the records before the cut. WARC has no lines: a
pair's ``offset`` and a skip's location give the record's byte offset in the decompressed stream.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

from e5kit.data.readers.base import ReaderOptions, file_meta
from e5kit.data.skips import SkipCounter
from e5kit.data.text import HTMLText, normalize_space
from e5kit.io.files import TRUNCATED, UNREADABLE, CorruptStream, InputPathError, open_binary
from e5kit.io.pairs import Pair
from e5kit.io.text import has_visible_text


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


def _title_and_text(record, payload: bytes, where: tuple[Path, int], options: Options, skips: SkipCounter) -> tuple[str, str] | None:
    """The record's title and text from its ``payload``; None after counting a skip at ``where`` (file, record offset)."""
    if record.rec_type == "response":
        content_type = (record.http_headers.get_header("Content-Type") or "") if record.http_headers else ""
        if "html" not in content_type.lower():
            skips.add("non-HTML response", *where)
            return None
        try:
            markup = payload.decode(_charset(record))
        except (UnicodeDecodeError, LookupError):
            skips.add("undecodable page (charset)", *where)
            return None
        parser = HTMLText()
        parser.feed(markup)
        parser.close()
        return normalize_space(" ".join(parser.title)), parser.text()
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        skips.add("invalid UTF-8", *where)
        return None
    title, _, body = text.strip().partition("\n")
    if len(title) > options.max_title_chars:
        return "", text
    return title.strip(), normalize_space(body)


def _read_file(path: Path, options: Options, skips: SkipCounter) -> Iterator[Pair]:
    """Pairs of one file. Skip locations and pair provenance give the record's byte offset in the
    decompressed stream as ``line`` / ``offset`` (WARC has no lines)."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    offset = None
    try:
        with open_binary(path) as handle:  # e5kit.io.files decompresses; warcio reads gzip members only when given raw .gz
            records = ArchiveIterator(handle)
            for record in records:
                payload = record.content_stream().read()
                offset = records.get_record_offset()  # reads the record to its end: after the payload
                if record.rec_type not in ("response", "conversion"):
                    skips.add("non-content WARC record (warcinfo, request, metadata)", path, offset)
                    continue
                url = record.rec_headers.get_header("WARC-Target-URI")
                extracted = _title_and_text(record, payload, (path, offset), options, skips)
                if extracted is None:
                    continue
                title, text = extracted
                passage = _leading_paragraphs(text, options.max_passage_words)
                if not has_visible_text(title) or not has_visible_text(passage):
                    skips.add("page without title or text", path, offset)
                    continue
                meta = file_meta(path, id=record.rec_headers.get_header("WARC-Record-ID"), url=url, offset=offset)
                yield Pair(title, passage, meta)
    except CorruptStream:
        skips.add(TRUNCATED, path, offset)
    except InputPathError:  # vanished or became unreadable after the up-front check
        skips.add(UNREADABLE, path, offset)
    except (ArchiveLoadFailed, EOFError, zlib.error, ValueError):
        skips.add("malformed or truncated WARC", path, offset)
    except OSError:
        skips.add(UNREADABLE, path, offset)


def read(paths: list[Path], options: Options, skips: SkipCounter) -> Iterator[Pair]:
    """Stream (title, passage) pairs from WARC or WET files (gzip per record, as Common Crawl ships them)."""
    for path in paths:
        yield from _read_file(path, options, skips)
