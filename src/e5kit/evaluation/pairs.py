"""Embedding both sides of text pairs and scoring them (shared by STS and pair classification)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from e5kit.evaluation.prefix_policy import PrefixPolicy


def row_cosines(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``first`` with the same row of ``second``; (n,)."""
    first = first / np.maximum(np.linalg.norm(first, axis=1, keepdims=True), 1e-12)  # (n, dim)
    second = second / np.maximum(np.linalg.norm(second, axis=1, keepdims=True), 1e-12)  # (n, dim)
    return np.einsum("nd,nd->n", first, second)


def pair_cosines(
    model, first: Sequence[str], second: Sequence[str], policy: PrefixPolicy, batch_size: int = 32
) -> np.ndarray:
    """Embed ``first`` with ``policy.query_role`` and ``second`` with ``policy.passage_role``; row cosines."""
    first_embeddings = model.encode(list(first), role=policy.query_role, batch_size=batch_size)
    second_embeddings = model.encode(list(second), role=policy.passage_role, batch_size=batch_size)
    return row_cosines(first_embeddings, second_embeddings)
