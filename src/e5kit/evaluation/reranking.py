"""Reranking: order each query's candidates by cosine similarity; MAP and MRR@10 (MTEB's protocol).

Data: JSONL records ``{"query": str, "positive": [str, ...], "negative": [str, ...]}``, or other keys
mapped to those fields (FlagEmbedding's ``{"positive": "pos", "negative": "neg"}``). A record
without any positive or without any negative cannot be ranked meaningfully and is skipped, counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from e5kit.evaluation.fields import RERANKING as FIELDS
from e5kit.evaluation.pairs import row_cosines
from e5kit.evaluation.prefix_policy import PrefixPolicy, policy_for
from e5kit.evaluation.results import TaskOutcome
from e5kit.evaluation.tables import column_names, split_file
from e5kit.io.files import InputFormatError
from e5kit.io.tables import iter_jsonl
from e5kit.io.text import has_visible_text

MRR_CUTOFF = 10


def load_reranking(data: str | Path, split: str = "test", columns: Mapping[str, str] | None = None) -> tuple[list[dict], dict[str, int]]:
    """(records, skipped counts by reason); records hold query, positive and negative lists.

    Args:
        columns: Field (``FIELDS``) -> the JSONL key holding it, for files named otherwise.

    Raises:
        InputFormatError: a query without visible text, a candidate list that is not a list of strings
            with visible text (naming file, line and key), or no record with both positives and negatives.
    """
    path = split_file(data, split)
    keys = column_names(FIELDS, columns)
    records, skipped = [], {"no positive": 0, "no negative": 0}
    for line_number, record in iter_jsonl(path):
        query = record.get(keys["query"])
        if not isinstance(query, str) or not has_visible_text(query):
            raise InputFormatError(f"{path}:{line_number}: {keys['query']!r} is missing or has no visible text")
        lists = {}
        for field in ("positive", "negative"):
            values = lists[field] = record.get(keys[field], [])
            if not isinstance(values, list) or not all(isinstance(v, str) and has_visible_text(v) for v in values):
                raise InputFormatError(f"{path}:{line_number}: {keys[field]!r} must be a list of strings with visible text")
        if not lists["positive"]:
            skipped["no positive"] += 1
        elif not lists["negative"]:
            skipped["no negative"] += 1
        else:
            records.append({"query": query, **lists})
    if not records:
        raise InputFormatError(f"{path}: no record with both positives and negatives")
    return records, skipped


def reciprocal_rank(relevant: np.ndarray, scores: np.ndarray, cutoff: int = MRR_CUTOFF) -> float:
    """1 / rank of the first relevant candidate within the top ``cutoff``, else 0."""
    ranked = relevant[np.argsort(-scores, kind="stable")][:cutoff]
    hits = np.flatnonzero(ranked)
    return 1.0 / (hits[0] + 1) if len(hits) else 0.0


def evaluate_reranking(
    model,
    data: str | Path,
    split: str = "test",
    batch_size: int = 32,
    *,
    columns: Mapping[str, str] | None = None,
    policy: PrefixPolicy | None = None,
) -> TaskOutcome:
    """MAP and MRR@10 of cosine ranking (``columns``: see ``load_reranking``); E5's policy embeds queries
    and candidates as queries."""
    from sklearn.metrics import average_precision_score

    policy = policy or policy_for("reranking")
    records, skipped = load_reranking(data, split, columns)
    query_embeddings = model.encode([r["query"] for r in records], role=policy.query_role, batch_size=batch_size)
    candidates = [text for r in records for text in (*r["positive"], *r["negative"])]
    candidate_embeddings = model.encode(candidates, role=policy.passage_role, batch_size=batch_size)
    average_precisions, reciprocal_ranks = [], []
    start = 0
    for query_embedding, record in zip(query_embeddings, records, strict=True):
        count = len(record["positive"]) + len(record["negative"])
        block = candidate_embeddings[start : start + count]  # (candidates, dim)
        start += count
        scores = row_cosines(np.repeat(query_embedding[None], count, axis=0), block)
        relevant = np.array([1] * len(record["positive"]) + [0] * len(record["negative"]))
        average_precisions.append(average_precision_score(relevant, scores))
        reciprocal_ranks.append(reciprocal_rank(relevant, scores))
    metrics = {"map": float(np.mean(average_precisions)), "mrr_at_10": float(np.mean(reciprocal_ranks))}
    return TaskOutcome(metrics, {"queries": len(records), "candidates": len(candidates), "skipped": skipped})
