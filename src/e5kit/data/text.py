"""Curation's text helpers, shared by the readers and the filters: the word split, whitespace
normalisation, and the decoding of encoded fields (HTML, Reddit's escaping). The "no visible text" rule
every stage shares lives one layer down, in ``e5kit.io.text``.

Words: :func:`words` is the one word split of curation (lower-cased ``\\w+`` tokens), the unit of the
length bounds, the exact-dedup key, MinHash shingles and decontamination n-grams. The filters of one
pair ask for the same texts in turn, so the last few splits are remembered: each side of a pair is
tokenised once.

Decoding: a field is decoded exactly once, by the reader of the field that carries the encoding, and
only where the source's format says it is encoded. Whether a field is encoded is a property of the format, never guessed from a text's
content (a ``<`` or ``&`` in plain text such as ``if (a<b && c>d)``, ``std::vector<int>`` or an
arXiv abstract's ``$x_1<...<x_n$`` is text, not markup).

- HTML fields (Stack Exchange bodies, WARC response pages): :func:`html_to_text` parses the markup
  once; character references are decoded in that same pass, so ``&amp;lt;`` in the markup is the
  visible text ``&lt;``.
- Reddit API fields (Pushshift titles, self-texts and comment bodies): the API escapes only ``&``,
  ``<`` and ``>``; :func:`unescape_reddit` undoes exactly those three, once.
- Sources known to carry HTML character references in otherwise plain text (AG News
  descriptions: ``&lt;TXN.N&gt;``) opt in per source with :func:`unescape_entities`.

Everything else (arXiv, news, generic tables, stdlib docs, Wikipedia after mwparserfromhell) is
plain text and is never decoded. The clean filter that runs after the readers only applies its
whitespace, URL and boilerplate rules (``e5kit.data.filters.clean``).
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from html.parser import HTMLParser

_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_BLOCK_TAGS = {"p", "div", "br", "li", "ul", "ol", "pre", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table", "section", "article", "header", "footer"}
_INVISIBLE_TAGS = {"script", "style", "noscript", "template", "svg", "head"}
_REDDIT_ESCAPES = re.compile(r"&(amp|lt|gt);")
_REDDIT_CHARACTERS = {"amp": "&", "lt": "<", "gt": ">"}
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (``\\w+``), the unit of every length, n-gram and shingle computation in curation."""
    return list(_split(text))


@lru_cache(maxsize=8)
def _split(text: str) -> tuple[str, ...]:
    # A pair's filters (length, decontaminate, exact and near dedup keys) split the same two texts in turn.
    return tuple(_WORD.findall(text.lower()))


def normalize_space(text: str) -> str:
    """Collapse runs of spaces, trim lines, and keep single blank lines between paragraphs."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


class HTMLText(HTMLParser):
    """Visible text of an HTML document or fragment: block elements become line breaks; scripts are skipped.

    Character references are decoded by the parser itself (``convert_charrefs``), once.
    """

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
    """Visible text of the HTML ``markup`` (tags removed, references decoded once), paragraphs kept.

    Call it only on a field whose format is HTML; its result is text and must not be decoded again.
    """
    parser = HTMLText()
    parser.feed(markup)
    parser.close()
    return parser.text()


def unescape_reddit(text: str) -> str:
    """Undo the Reddit API's escaping of ``&``, ``<`` and ``>`` (``&amp;``, ``&lt;``, ``&gt;``), in one pass.

    One pass means ``&amp;lt;`` becomes the text ``&lt;`` (what the user typed), not ``<``; other
    references (``&#x200B;``) are what the user typed too and are left alone.
    """
    return _REDDIT_ESCAPES.sub(lambda match: _REDDIT_CHARACTERS[match.group(1)], text)


def unescape_entities(text: str) -> str:
    """Decode HTML character references in a plain-text field that carries them (one pass, no tag parsing)."""
    return html.unescape(text)
