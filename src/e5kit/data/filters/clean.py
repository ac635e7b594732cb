"""Markup, URL and boilerplate stripping: rewrites both sides, drops a pair only if a side ends up empty."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from e5kit.data.filters.base import FilterConfig
from e5kit.data.pair import Pair

_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")
_URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
_MARKDOWN_LINK = re.compile(r"\[([^\]]+)\]\((?:https?://|/)[^)]*\)")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_BLOCK_TAGS = {"p", "div", "br", "li", "ul", "ol", "pre", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table", "section", "article", "header", "footer"}
_INVISIBLE_TAGS = {"script", "style", "noscript", "template", "svg", "head"}

DEFAULT_BOILERPLATE = [
    r"\bcookies?\b",
    r"all rights reserved",
    r"\bprivacy policy\b",
    r"\bterms (of|and) (use|service|conditions)\b",
    r"\b(sign|log) (in|up)\b",
    r"\bsubscribe\b",
    r"\bclick here\b",
    r"javascript",
    r"^\s*(share|tweet|advertisement|related articles?|read more)\b",
]


class HTMLText(HTMLParser):
    """Visible text of an HTML document or fragment: block elements become line breaks; scripts are skipped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._hidden = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in _INVISIBLE_TAGS:
            self._hidden += 1
        elif tag == "title":
            self._in_title = True
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in _INVISIBLE_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title.append(data)
        elif not self._hidden:
            self.parts.append(data)

    def text(self) -> str:
        return normalize_space("".join(self.parts))


def html_to_text(markup: str) -> str:
    """Visible text of ``markup`` with block structure kept as paragraphs."""
    parser = HTMLText()
    parser.feed(markup)
    parser.close()
    return parser.text()


def normalize_space(text: str) -> str:
    """Collapse runs of spaces, trim lines, and keep single blank lines between paragraphs."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


class Config(FilterConfig):
    """Cleaning settings.

    Attributes:
        enabled: Run the cleaner.
        strip_html: Remove HTML tags and unescape entities where a text contains markup.
        strip_urls: Remove URLs (markdown links keep their anchor text).
        remove_boilerplate: Drop short lines matching ``boilerplate_patterns`` (cookie banners, "sign in").
        boilerplate_patterns: Case-insensitive regular expressions of boilerplate lines.
        boilerplate_max_words: Only lines up to this many words can be boilerplate.
    """

    enabled: bool = True
    strip_html: bool = True
    strip_urls: bool = True
    remove_boilerplate: bool = True
    boilerplate_patterns: list[str] = DEFAULT_BOILERPLATE
    boilerplate_max_words: int = 15


class CleanFilter:
    """Strip markup, URLs and boilerplate lines from both sides of a pair."""

    name = "clean"

    def __init__(self, config: Config) -> None:
        self.config = config
        self._boilerplate = re.compile("|".join(f"(?:{p})" for p in config.boilerplate_patterns), re.IGNORECASE) if config.boilerplate_patterns else None

    def clean(self, text: str) -> str:
        if self.config.strip_html and ("<" in text or "&" in text):
            text = html_to_text(text) if _TAG.search(text) else html.unescape(text)
        if self.config.strip_urls:
            text = _URL.sub("", _MARKDOWN_LINK.sub(r"\1", text))
        if self.config.remove_boilerplate and self._boilerplate is not None:
            text = "\n".join(line for line in text.split("\n") if not self._is_boilerplate(line))
        return normalize_space(text)

    def _is_boilerplate(self, line: str) -> bool:
        return len(line.split()) <= self.config.boilerplate_max_words and bool(self._boilerplate.search(line))

    def apply(self, pair: Pair) -> Pair | str:
        query, passage = self.clean(pair.query), self.clean(pair.passage)
        if not query:
            return "query empty after cleaning"
        if not passage:
            return "passage empty after cleaning"
        pair.query, pair.passage = query, passage
        return pair
