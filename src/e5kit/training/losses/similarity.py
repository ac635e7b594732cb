"""The score every E5 loss uses: cosine / tau (E5 section 2), or the raw dot product when a config asks.

Losses normalise their inputs themselves, so the score is cosine whether or not the model ends in a
Normalize module (a sentence-transformers model such as paraphrase-MiniLM-L3-v2 has none): tau = 0.01
on raw dot products of unnormalised embeddings gives logits in the thousands.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from e5kit.encoder.model_format import SIMILARITY_FUNCTIONS


def scoring_embeddings(embeddings: torch.Tensor, similarity_fn_name: str) -> torch.Tensor:
    """Embeddings whose dot products are the named similarity.

    Args:
        embeddings: (n, dim) embeddings.
        similarity_fn_name: "cosine" (L2-normalised rows, as sentence-transformers' ``cos_sim``) or
            "dot" (rows unchanged).

    Returns:
        (n, dim) tensor, the same dtype.

    Raises:
        ValueError: an unknown similarity name.
    """
    if similarity_fn_name not in SIMILARITY_FUNCTIONS:
        raise ValueError(f"similarity_fn_name must be one of {', '.join(SIMILARITY_FUNCTIONS)}, got {similarity_fn_name!r}")
    return F.normalize(embeddings, p=2, dim=-1) if similarity_fn_name == "cosine" else embeddings
