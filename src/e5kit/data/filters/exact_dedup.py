"""Exact duplicates: the second and later copies of a pair (or of a passage) are dropped, across all shards."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa

from e5kit.data.filters.base import FilterConfig, Verdict, words
from e5kit.io.hashing import stable_hash
from e5kit.io.pairs import Pair

REASON = "exact duplicate"


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
    """Keeps the first pair of every key; all the sources of a run share one set of keys seen."""

    name = "exact_dedup"
    column = "dedup_key"
    reason = REASON

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self.seen: set[int] = set()

    def key(self, pair: Pair) -> int:
        return dedup_key(pair, self.config.key)

    def keep(self, pair: Pair) -> Verdict:
        return self.reason if self.is_duplicate(self.key(pair)) else True

    def keep_keys(self, keys: pa.Array, candidates: np.ndarray) -> np.ndarray:
        """(n,) bool for a batch of keys, in order: True where a candidate's key was not seen before (in
        this batch or an earlier one). Non-candidates are neither kept nor remembered."""
        rows = np.flatnonzero(candidates)
        unique, first = np.unique(keys.to_numpy()[rows], return_index=True)
        fresh = np.fromiter((key not in self.seen for key in unique.tolist()), dtype=bool, count=len(unique))
        self.seen.update(unique[fresh].tolist())
        keep = np.zeros(len(keys), dtype=bool)
        keep[rows[first[fresh]]] = True
        return keep

    def is_duplicate(self, key: int) -> bool:
        if key in self.seen:
            return True
        self.seen.add(key)
        return False
