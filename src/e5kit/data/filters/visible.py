"""Curation's use of the shared "no visible text" rule (``e5kit.io.text.has_visible_text``).

A pair whose query or passage has no visible text (empty, whitespace, or only control/format
characters such as U+200B, U+2060, U+00AD, U+FEFF) cannot be trained on: every such text embeds to
the same vector. The curation pipeline always runs this check right after cleaning (whether or not
cleaning is enabled), so such a pair is dropped with a counted reason, never written.
"""

from __future__ import annotations

from e5kit.data.filters.base import Verdict
from e5kit.io.pairs import Pair
from e5kit.io.text import has_visible_text

QUERY_INVISIBLE = "query has no visible text"
PASSAGE_INVISIBLE = "passage has no visible text"


class VisibleTextFilter:
    """Drop a pair whose query or passage has no visible text."""

    name = "visible_text"

    def keep(self, pair: Pair) -> Verdict:
        if not has_visible_text(pair.query):
            return QUERY_INVISIBLE
        if not has_visible_text(pair.passage):
            return PASSAGE_INVISIBLE
        return True
