"""Length bounds in words on each side, and pairs whose two sides are the same text."""

from __future__ import annotations

from e5kit.data.filters.base import FilterConfig, Verdict, words
from e5kit.io.pairs import Pair


class Config(FilterConfig):
    """Length settings (words are ``\\w+`` tokens).

    Attributes:
        enabled: Run the filter.
        min_query_words / max_query_words: Bounds on the query side.
        min_passage_words / max_passage_words: Bounds on the passage side.
        drop_identical: Drop pairs whose sides are the same text (case and spacing aside).
    """

    enabled: bool = True
    min_query_words: int = 1
    max_query_words: int = 256
    min_passage_words: int = 5
    max_passage_words: int = 2048
    drop_identical: bool = True


class LengthFilter:
    """Keep pairs whose sides are within the configured word counts."""

    name = "length"

    def __init__(self, config: Config) -> None:
        self.config = config

    def keep(self, pair: Pair) -> Verdict:
        config = self.config
        query_words, passage_words = words(pair.query), words(pair.passage)
        for side, count, low, high in (
            ("query", len(query_words), config.min_query_words, config.max_query_words),
            ("passage", len(passage_words), config.min_passage_words, config.max_passage_words),
        ):
            if count < low:
                return f"{side} under {low} words"
            if count > high:
                return f"{side} over {high} words"
        if config.drop_identical and query_words == passage_words:
            return "query and passage are the same text"
        return True
