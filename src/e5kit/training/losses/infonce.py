"""InfoNCE over cosine / tau with in-batch negatives (E5 section 2), memory-bounded at any batch size.

Every query scores against every passage of the global batch; its own passage is the positive.
The score matrix is computed in row blocks under activation checkpointing, so memory grows with
``block rows x batch`` rather than ``batch x batch`` (4 GB of fp32 scores at E5's 32k batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from e5kit.training.losses.similarity import scoring_embeddings

#: Score-matrix elements computed at once (16 MiB in fp32); bounds the loss's memory at large batches.
SCORE_BLOCK_ELEMENTS = 1 << 22


def info_nce_loss(
    queries: torch.Tensor,
    passages: torch.Tensor,
    all_queries: torch.Tensor,
    all_passages: torch.Tensor,
    *,
    offset: int = 0,
    tau: float = 0.01,
    similarity_fn_name: str = "cosine",
    symmetric: bool = False,
    query_keys: torch.Tensor | None = None,
    passage_keys: torch.Tensor | None = None,
    block_rows: int | None = None,
) -> torch.Tensor:
    """Mean InfoNCE loss of the local rows of a (possibly cross-process) batch.

    In one process, pass the same tensors as local and global (``offset=0``). Under DDP, pass this
    process's rows as ``queries``/``passages`` and the all-gathered batch as ``all_*``; the result is
    the mean over local rows, so averaging gradients over processes gives the global-batch gradient.
    With ``offset=0`` and local = global tensors it equals sentence-transformers'
    ``MultipleNegativesRankingLoss(scale=1 / tau)`` (cosine) on the same embeddings.

    Args:
        queries: (b, dim) local query embeddings (normalised here for cosine).
        passages: (b, dim) local passage embeddings; row i is the positive of query i.
        all_queries: (B, dim) queries of the global batch (only read when ``symmetric``).
        all_passages: (B, dim) passages of the global batch.
        offset: Global index of local row 0.
        tau: Temperature; scores are similarity / tau.
        similarity_fn_name: "cosine" (E5) or "dot" (raw dot products, only when a config asks).
        symmetric: Average with the passage->query loss (each passage against all queries).
        query_keys: (B,) integer ids of the query texts (equal text = equal id); with ``passage_keys``
            masks in-batch false negatives: column j is ignored for row i when query j equals query i
            or passage j equals passage i (j != i).
        passage_keys: (B,) integer ids of the passage texts.
        block_rows: Rows per score block; None sizes blocks to ``SCORE_BLOCK_ELEMENTS``.

    Returns:
        Scalar loss (float32, or float64 for float64 inputs).
    """
    queries, passages, all_queries, all_passages = (
        scoring_embeddings(x, similarity_fn_name) for x in (queries, passages, all_queries, all_passages)
    )
    local_rows = queries.shape[0]
    targets = torch.arange(offset, offset + local_rows, device=queries.device)  # (b,) global positives
    block_rows = block_rows or max(1, SCORE_BLOCK_ELEMENTS // max(1, all_passages.shape[0]))
    keys = (query_keys, passage_keys) if query_keys is not None and passage_keys is not None else None
    total = _blocked_cross_entropy(queries, all_passages, targets, tau, keys, block_rows)
    if symmetric:
        total = total + _blocked_cross_entropy(passages, all_queries, targets, tau, keys, block_rows)
        return total / (2 * local_rows)
    return total / local_rows


def _blocked_cross_entropy(
    rows: torch.Tensor,
    columns: torch.Tensor,
    targets: torch.Tensor,
    tau: float,
    keys: tuple[torch.Tensor, torch.Tensor] | None,
    block_rows: int,
) -> torch.Tensor:
    """Summed cross-entropy of ``rows @ columns.T / tau`` against ``targets``, one row block at a time."""
    if rows.shape[0] <= block_rows:
        return _block_cross_entropy(rows, columns, targets, tau, keys)
    total = rows.new_zeros((), dtype=torch.promote_types(rows.dtype, torch.float32))
    for start in range(0, rows.shape[0], block_rows):
        stop = start + block_rows
        total = total + checkpoint(_block_cross_entropy, rows[start:stop], columns, targets[start:stop], tau, keys, use_reentrant=False)
    return total


def _block_cross_entropy(
    rows: torch.Tensor,
    columns: torch.Tensor,
    targets: torch.Tensor,
    tau: float,
    keys: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    dtype = torch.promote_types(rows.dtype, torch.float32)  # half-precision embeddings: score in fp32
    scores = rows.to(dtype) @ columns.to(dtype).T / tau  # (rows, B)
    if keys is not None:
        query_keys, passage_keys = keys
        same_query = query_keys[None, :] == query_keys[targets][:, None]  # (rows, B)
        same_passage = passage_keys[None, :] == passage_keys[targets][:, None]  # (rows, B)
        is_positive = torch.arange(columns.shape[0], device=rows.device)[None, :] == targets[:, None]
        false_negative = (same_query | same_passage) & ~is_positive
        scores = scores.masked_fill(false_negative, torch.finfo(scores.dtype).min)
    return F.cross_entropy(scores, targets, reduction="sum")
