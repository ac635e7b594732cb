"""URL and boilerplate stripping with whitespace normalisation: rewrites both sides of a pair, never drops one.

The cleaner never parses HTML and never decodes character references: decoding is the job of the
reader of a field that carries markup (``e5kit.data.text``), done once there. Text reaching this
filter is plain text, so ``if (a<b && c>d)``, ``std::vector<int>`` and ``$x_1<...<x_n$`` pass unchanged.
A pair left with no visible text is dropped afterwards by the visible-text rule
(``e5kit.data.filters.visible``), whether or not cleaning runs.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import model_validator

from e5kit.data.filters.base import FilterConfig
from e5kit.data.text import normalize_space
from e5kit.io.pairs import Pair

__all__ = ["Config", "CleanFilter", "DEFAULT_BOILERPLATE", "normalize_space"]

_URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
_MARKDOWN_LINK = re.compile(r"\[([^\]]+)\]\((?:https?://|/)[^)]*\)")

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

STRIP_HTML_REMOVED = (
    "strip_html was removed: the clean filter no longer parses HTML or decodes entities (it mangled plain "
    "text such as 'if (a<b && c>d)'); HTML is decoded once by the reader of an HTML field (stackexchange "
    "option body_format, warc pages; reddit option api_escaped, news option unescape_entities): remove the key"
)


class Config(FilterConfig):
    """Cleaning settings. The documented rules, applied in this order, are the only changes made to a text:

    1. ``strip_urls``: a markdown link ``[anchor](http...)`` becomes its anchor; bare URLs are removed.
    2. ``remove_boilerplate``: lines of at most ``boilerplate_max_words`` words matching a pattern are removed.
    3. Always: whitespace normalisation (:func:`normalize_space`): runs of spaces, tabs and no-break
       spaces become one space, lines are trimmed, runs of blank lines become one blank line.

    HTML is not handled here. The former ``strip_html`` key is rejected with an error naming it:
    HTML-carrying fields are decoded by their reader (see ``e5kit.data.text``).

    Attributes:
        enabled: Run the cleaner.
        strip_urls: Remove URLs (markdown links keep their anchor text).
        remove_boilerplate: Drop short lines matching ``boilerplate_patterns`` (cookie banners, "sign in").
        boilerplate_patterns: Case-insensitive regular expressions of boilerplate lines.
        boilerplate_max_words: Only lines up to this many words can be boilerplate.
    """

    enabled: bool = True
    strip_urls: bool = True
    remove_boilerplate: bool = True
    boilerplate_patterns: list[str] = DEFAULT_BOILERPLATE
    boilerplate_max_words: int = 15

    @model_validator(mode="before")
    @classmethod
    def _no_strip_html(cls, data: Any) -> Any:
        if isinstance(data, dict) and "strip_html" in data:
            raise ValueError(STRIP_HTML_REMOVED)
        return data


class CleanFilter:
    """Strip URLs and boilerplate lines from both sides of a pair and normalise whitespace."""

    name = "clean"

    def __init__(self, config: Config) -> None:
        self.config = config
        self._boilerplate = re.compile("|".join(f"(?:{p})" for p in config.boilerplate_patterns), re.IGNORECASE) if config.boilerplate_patterns else None

    def clean(self, text: str) -> str:
        if self.config.strip_urls:
            text = _URL.sub("", _MARKDOWN_LINK.sub(r"\1", text))
        if self.config.remove_boilerplate and self._boilerplate is not None:
            text = "\n".join(line for line in text.split("\n") if not self._is_boilerplate(line))
        return normalize_space(text)

    def _is_boilerplate(self, line: str) -> bool:
        return len(line.split()) <= self.config.boilerplate_max_words and bool(self._boilerplate.search(line))

    def keep(self, pair: Pair) -> bool:
        """Rewrite both sides in place; never drops (an emptied side is the visible-text rule's drop)."""
        pair.query, pair.passage = self.clean(pair.query), self.clean(pair.passage)
        return True
