"""The one step protocol of curation: every filter, the dedup ones included, answers ``keep(pair)`` with
True or the short reason it drops the pair.

A filter may rewrite the pair in place before answering True (the clean filter does). The dedup filters
(``exact_dedup``, ``near_dedup``) follow the same protocol, so one can run them pair by pair; curation
splits them for speed and exactness across shards: ``key(pair)`` runs in the shard workers (in parallel)
and gives the value stored in the work shard's ``column``, and ``keep_keys`` runs once in the global pass
over those columns, in the fixed order of all shards (``e5kit.data.curation.dedup``).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from e5kit.data.text import words
from e5kit.io.pairs import Pair

__all__ = ["DedupFilter", "Filter", "FilterConfig", "Verdict", "words"]

#: What ``keep`` answers: True keeps the pair, a string is the drop reason (prefixed with the filter's name in the report).
Verdict = Literal[True] | str


class FilterConfig(BaseModel):
    """Base of every filter's settings: unknown keys are an error naming the key."""

    model_config = ConfigDict(extra="forbid")

    def active(self) -> bool:
        """Whether the filter runs with these settings (``enabled`` where the settings have it)."""
        return bool(getattr(self, "enabled", True))


class Filter(Protocol):
    """A curation step. ``name`` prefixes its drop reasons in the curation report."""

    name: str

    def keep(self, pair: Pair) -> Verdict:
        """True to keep the (possibly rewritten) pair, else a short drop reason."""
        ...


class DedupFilter(Filter, Protocol):
    """A filter whose verdict depends on the pairs kept before it, in every shard.

    ``keep(pair)`` is ``keep_keys([key(pair)])``'s answer for one pair; the global pass stores ``key``
    per pair in ``column`` (of ``arrow_type``) and asks ``keep_keys`` for a batch at once.
    """

    column: str

    def key(self, pair: Pair) -> Any:
        """The value stored for the pair in the work shard's ``column``."""
        ...
