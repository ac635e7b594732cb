"""The filter protocol: each filter keeps a pair (possibly rewritten) or returns the reason it drops it."""

from __future__ import annotations

import re
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from e5kit.io.pairs import Pair

_WORD = re.compile(r"\w+")


class FilterConfig(BaseModel):
    """Base of every filter's settings: unknown keys are an error naming the key."""

    model_config = ConfigDict(extra="forbid")


class PairFilter(Protocol):
    """A per-pair filter. ``name`` prefixes its drop reasons in the curation report."""

    name: str

    def apply(self, pair: Pair) -> Pair | str:
        """Return the (possibly cleaned) pair to keep it, or a short drop reason."""
        ...


def words(text: str) -> list[str]:
    """Lower-cased word tokens, the unit of every length, n-gram and shingle computation."""
    return _WORD.findall(text.lower())
