"""Dense retrieval shared by every stage: corpus embedding by the empty-passage rule, FAISS indexes.

Empty passages (``e5kit.io.beir``): a passage without visible text is never sent to an encoder and
gets an all-zero row, which scores 0 against any query by dot product or cosine; ``encode_corpus`` is
that rule for evaluation, dense mining, the bi-encoder teacher, the consistency filter and the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from e5kit.io.beir import empty_mask


class EncodedCorpus(NamedTuple):
    """Passage embeddings with the empty passages marked.

    Attributes:
        embeddings: (len(texts), dim) float32; all-zero rows for empty passages.
        empty: (len(texts),) bool, True where the passage had no visible text.
    """

    embeddings: np.ndarray
    empty: np.ndarray

    @property
    def empty_count(self) -> int:
        return int(self.empty.sum())


def encode_corpus(encoder, texts: Sequence[str], role: str | None = "passage", **options) -> EncodedCorpus:
    """Embed corpus passages; empty passages are not sent to ``encoder`` and get all-zero rows.

    The one rule every stage that embeds a corpus follows (evaluation, dense mining, the bi-encoder
    teacher, the index): an all-zero row scores 0 against any query by dot product or cosine, so an
    empty passage stays searchable by id at score 0 without a crash, and callers count ``empty``.

    Args:
        encoder: An ``Encoder`` (or anything with its ``encode``; ``dimension`` is read only when every
            passage is empty).
        texts: The passages.
        role: The role the passages are embedded in.
        **options: Passed to ``encoder.encode`` (batch_size, show_progress, normalize).

    Returns:
        ``EncodedCorpus(embeddings, empty)``. When a passage was embedded, ``encoder.last_stats`` (if
        the encoder keeps it) describes the call over the non-empty passages.
    """
    empty = empty_mask(texts)
    keep = np.flatnonzero(~empty)
    if not len(keep):
        return EncodedCorpus(np.zeros((len(texts), encoder.dimension), dtype=np.float32), empty)
    vectors = encoder.encode([texts[i] for i in keep], role=role, **options)
    if len(keep) == len(texts):
        return EncodedCorpus(np.asarray(vectors, dtype=np.float32), empty)
    embeddings = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
    embeddings[keep] = vectors
    return EncodedCorpus(embeddings, empty)
