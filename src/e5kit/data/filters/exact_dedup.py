"""Exact duplicates: the second and later copies of a pair (or of a passage) are dropped, across all shards."""

from __future__ import annotations

from typing import Literal

from e5kit.data.filters.base import FilterConfig, words
from e5kit.io.pairs import Pair
from e5kit.io.hashing import stable_hash


class Config(FilterConfig):
    """Exact dedup settings.

    Attributes:
        enabled: Run the filter.
        key: What must repeat: the whole pair, the passage, or the query (case and punctuation aside).
    """

    enabled: bool = True
    key: Literal["pair", "passage", "query"] = "pair"


def dedup_key(pair: Pair, key: str) -> int:
    """The hash of the normalised side(s) that define a duplicate."""
    parts = {"pair": (pair.query, pair.passage), "passage": (pair.passage,), "query": (pair.query,)}[key]
    return stable_hash("\t".join(" ".join(words(part)) for part in parts))


class ExactDedup:
    """Remembers the keys seen so far; runs in the global pass over all shards."""

    name = "exact_dedup"
    reason = "exact duplicate"

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def is_duplicate(self, key: int) -> bool:
        if key in self.seen:
            return True
        self.seen.add(key)
        return False
