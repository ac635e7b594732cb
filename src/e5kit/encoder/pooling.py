"""Pooling token vectors into one vector per text: the torch backend's last step, and the ONNX export's
(so the graph pools as the torch backend does). The modes are ``model_format.POOLING_MODES``."""

from __future__ import annotations

import torch


def pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Pool token vectors into one vector per text, ignoring padding.

    Args:
        token_embeddings: (batch, seq_len, dim) last hidden states.
        attention_mask: (batch, seq_len), 1 for real tokens, 0 for padding.
        mode: "mean" (E5), "cls" or "max".

    Returns:
        (batch, dim) pooled embeddings.
    """
    if mode == "cls":
        return token_embeddings[:, 0]
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)  # (batch, seq_len, 1)
    if mode == "max":
        return token_embeddings.masked_fill(mask == 0, torch.finfo(token_embeddings.dtype).min).max(dim=1).values
    summed = (token_embeddings * mask).sum(dim=1)  # (batch, dim)
    counts = mask.sum(dim=1).clamp(min=1e-9)  # (batch, 1)
    return summed / counts
