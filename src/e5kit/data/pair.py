"""The weak text pair that curation produces and training reads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: Columns of a pair shard (Parquet, all strings); ``meta`` is a JSON object with the pair's provenance.
PAIR_COLUMNS = ("query", "passage", "source", "meta")


@dataclass
class Pair:
    """One (query, passage) pair and where it came from.

    Attributes:
        query: The query-side text (post, title, question, headline...).
        passage: The passage-side text (comment, abstract, answer, body...).
        meta: Provenance: input file, line or record id, and reader-specific fields.
        symmetric: Neither side is naturally the query (e.g. citation pairs); the curation
            pipeline then assigns the query role at random with a seeded, order-free coin.
    """

    query: str
    passage: str
    meta: dict[str, Any] = field(default_factory=dict)
    symmetric: bool = False

    def meta_json(self) -> str:
        return json.dumps(self.meta, ensure_ascii=False, sort_keys=True)
