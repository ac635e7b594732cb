"""Wikipedia: (entity name + section title, passage), one pair per paragraph.

Reads MediaWiki XML exports (``pages-articles.xml[.bz2]``; each ``<page>`` is parsed on its own, so a
malformed page costs one record; wikitext is parsed with mwparserfromhell), WikiExtractor JSON lines
(``title``, ``text``) and paragraph exports with ``article``, ``section``, ``text`` (WikiText-style
tokenisation such as `` @-@ `` is undone).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Iterator
from pathlib import Path

from e5kit.data.readers.base import ReaderOptions, file_meta, text_field
from e5kit.data.skips import SkipCounter
from e5kit.io.files import iter_text_lines
from e5kit.io.pairs import Pair
from e5kit.io.tables import iter_jsonl
from e5kit.io.text import has_visible_text

_WIKITEXT_JOINERS = re.compile(r" @([-,.])@ ")
_DROPPED_TAGS = {"ref", "references", "table", "gallery", "math", "timeline", "score", "imagemap"}
_MEDIA_LINK = re.compile(r"^(file|image|category|media):", re.IGNORECASE)


class Options(ReaderOptions):
    """Wikipedia reader options.

    Attributes:
        min_paragraph_words: Shorter paragraphs (captions, list stubs) are not passages.
        skip_sections: Sections whose title is listed (case-insensitive) are not passages.
    """

    min_paragraph_words: int = 8
    skip_sections: list[str] = ["references", "external links", "see also", "further reading", "notes", "bibliography", "sources", "footnotes"]


def _paragraph_pairs(title: str, section: str | None, text: str, meta: dict, options: Options, skips: SkipCounter) -> Iterator[Pair]:
    if section and section.strip().lower() in {name.lower() for name in options.skip_sections}:
        skips.add("reference or navigation section", meta["file"], meta.get("line"))
        return
    query = f"{title} {section}".strip() if section else title
    for index, paragraph in enumerate(p.strip() for p in re.split(r"\n\s*\n|\n", text)):
        if not has_visible_text(paragraph):
            continue
        if len(paragraph.split()) < options.min_paragraph_words:
            skips.add("paragraph under min_paragraph_words", meta["file"], meta.get("line"))
            continue
        yield Pair(query, paragraph, {**meta, "section": section, "paragraph": index})


def _wikitext_sections(wikitext: str) -> Iterator[tuple[str | None, str]]:
    """(section title or None for the lead, plain text) for every section of an article."""
    import mwparserfromhell

    code = mwparserfromhell.parse(wikitext)
    for view in code.get_sections(flat=True, include_lead=True):
        section = mwparserfromhell.parse(str(view))  # sections are views of one node list: edit a copy
        headings = section.filter_headings(recursive=False)
        heading = headings[0].title.strip_code().strip() if headings else None
        for heading_node in headings:
            section.remove(heading_node)
        for tag in section.filter_tags(recursive=True):
            if str(tag.tag).lower() in _DROPPED_TAGS:
                _remove(section, tag)
        for link in section.filter_wikilinks(recursive=True):
            if _MEDIA_LINK.match(str(link.title).strip()):
                _remove(section, link)
        yield heading, section.strip_code(normalize=True, collapse=True)


def _remove(code, node) -> None:
    try:
        code.remove(node)
    except ValueError:  # already removed with an enclosing node
        pass


def _xml_pages(path: Path, skips: SkipCounter) -> Iterator[tuple[int, ElementTree.Element]]:
    buffer: list[str] = []
    start = 0
    for line_number, line in iter_text_lines(path, skips):
        stripped = line.strip()
        if stripped.startswith("<page"):
            if buffer:
                skips.add("malformed XML page", path, start)
            buffer, start = [], line_number
        if buffer or stripped.startswith("<page"):
            buffer.append(line)
        if stripped.endswith("</page>") and buffer:
            try:
                yield start, ElementTree.fromstring("\n".join(buffer))
            except ElementTree.ParseError:
                skips.add("malformed XML page", path, start)
            buffer = []
    if buffer:
        skips.add("malformed XML page", path, start)


def _xml_pairs(path: Path, options: Options, skips: SkipCounter) -> Iterator[Pair]:
    for line, page in _xml_pages(path, skips):
        title, namespace = page.findtext("title"), page.findtext("ns")
        wikitext = page.findtext("revision/text")
        if title is None or not has_visible_text(title) or wikitext is None:
            skips.add("page without title or text", path, line)
        elif namespace not in (None, "0"):
            skips.add("page outside the article namespace", path, line)
        elif page.find("redirect") is not None or wikitext.lstrip().lower().startswith("#redirect"):
            skips.add("redirect page", path, line)
        else:
            meta = file_meta(path, line=line, id=page.findtext("id"), title=title)
            yield from _article_pairs(title, _wikitext_sections(wikitext), meta, options, skips)


def _article_pairs(title: str, sections: Iterable[tuple[str | None, str]], meta: dict, options: Options, skips: SkipCounter) -> Iterator[Pair]:
    """The paragraph pairs of one article; an article giving neither a pair nor a counted skip is counted itself."""
    before, produced = sum(skips.values()), False
    for section, text in sections:
        for pair in _paragraph_pairs(title, section, text, meta, options, skips):
            produced = True
            yield pair
    if not produced and sum(skips.values()) == before:
        skips.add("article without paragraphs", meta["file"], meta.get("line"))


def _json_pairs(path: Path, options: Options, skips: SkipCounter) -> Iterator[Pair]:
    for line, record in iter_jsonl(path, skips):
        title, text = text_field(record, "article", "title"), text_field(record, "text")
        if title is None or text is None:
            skips.add("record without title/article or text", path, line)
            continue
        section = text_field(record, "section")
        title, text = _WIKITEXT_JOINERS.sub(r"\1", title), _WIKITEXT_JOINERS.sub(r"\1", text)
        if section:
            section = _WIKITEXT_JOINERS.sub(r"\1", section)
        paragraphs = [p for p in text.split("\n") if p.strip() != title]  # WikiExtractor repeats the title first
        meta = file_meta(path, line=line, id=record.get("id"))
        yield from _article_pairs(title, [(section, "\n".join(paragraphs))], meta, options, skips)


def read(paths: list[Path], options: Options, skips: SkipCounter) -> Iterator[Pair]:
    """Stream (title [+ section], paragraph) pairs from XML dumps or JSON lines."""
    for path in paths:
        reader = _xml_pairs if ".xml" in path.suffixes else _json_pairs
        yield from reader(path, options, skips)
