"""News: (headline, article text or description) from JSON lines (AG News, news-please, CC-News exports).

Texts are plain text and are used as they are: a ``<`` or ``&`` in a headline is text. Exports known
to carry HTML character references in their text (AG News: ``&lt;TXN.N&gt;``, ``&amp;``) set
``unescape_entities`` to decode them once, here; no news text is ever parsed as HTML.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from e5kit.data.readers.base import ReaderOptions, file_meta, text_field
from e5kit.data.skips import SkipCounter
from e5kit.data.text import unescape_entities
from e5kit.io.pairs import Pair
from e5kit.io.tables import iter_jsonl


class Options(ReaderOptions):
    """News reader options.

    Attributes:
        title_fields: Fields tried in order for the headline.
        text_fields: Fields tried in order for the passage.
        unescape_entities: Decode HTML character references (``&lt;``, ``&amp;``, ``&#39;``) in the headline
            and passage once, for exports that carry them (AG News); off by default (plain text).
    """

    title_fields: list[str] = ["title", "headline"]
    text_fields: list[str] = ["maintext", "text", "body", "content", "description"]
    unescape_entities: bool = False


def read(paths: list[Path], options: Options, skips: SkipCounter) -> Iterator[Pair]:
    """Stream (headline, passage) pairs."""
    for path in paths:
        for line, record in iter_jsonl(path, skips):
            title, text = text_field(record, *options.title_fields), text_field(record, *options.text_fields)
            if title is None or text is None:
                skips.add("article without headline or text", path, line)
                continue
            if options.unescape_entities:
                title, text = unescape_entities(title), unescape_entities(text)
            label = record.get("label") or record.get("category")
            yield Pair(title, text, file_meta(path, line=line, id=record.get("id"), label=label, url=record.get("url")))
