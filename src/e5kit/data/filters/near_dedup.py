"""Near duplicates: MinHash signatures of word shingles, looked up in a datasketch LSH index.

Signatures are computed per shard (in parallel); the index runs in the global pass, so a passage is
compared with every passage kept before it in any shard.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from e5kit.data.filters.base import FilterConfig, words
from e5kit.io.pairs import Pair

MINHASH_SEED = 1


class Config(FilterConfig):
    """Near-duplicate settings.

    Attributes:
        enabled: Run the filter.
        threshold: Estimated Jaccard similarity of passage shingle sets at which a pair is a duplicate.
        num_perm: MinHash permutations (signature length).
        shingle_words: Words per shingle.
    """

    enabled: bool = True
    threshold: float = 0.8
    num_perm: int = 64
    shingle_words: int = 5


def shingles(text: str, size: int) -> list[bytes]:
    tokens = words(text)
    if len(tokens) <= size:
        return [" ".join(tokens).encode("utf-8")]
    return [" ".join(tokens[i : i + size]).encode("utf-8") for i in range(len(tokens) - size + 1)]


@lru_cache(maxsize=4)
def _template(num_perm: int):
    """A MinHash whose permutations (costly to draw) every signature of this size reuses."""
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=MINHASH_SEED)


def signature(pair: Pair, config: Config) -> np.ndarray:
    """(num_perm,) uint64 MinHash of the passage's shingles."""
    from datasketch import MinHash

    template = _template(config.num_perm)
    minhash = MinHash(num_perm=config.num_perm, seed=MINHASH_SEED, permutations=template.permutations, scheme=template.scheme)
    minhash.update_batch(shingles(pair.passage, config.shingle_words))
    return minhash.hashvalues.astype(np.uint64)


class NearDedup:
    """An LSH index of the signatures kept so far."""

    name = "near_dedup"
    reason = "near duplicate (MinHash)"

    def __init__(self, config: Config) -> None:
        from datasketch import MinHashLSH

        self.config = config
        self.index = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm)
        self.kept: list[np.ndarray] = []

    def is_duplicate(self, hashvalues: np.ndarray) -> bool:
        from datasketch import LeanMinHash

        minhash = LeanMinHash(seed=MINHASH_SEED, hashvalues=hashvalues, scheme=_template(self.config.num_perm).scheme)
        # LSH candidates share a band; confirm with the signature estimate so near-misses are kept.
        for key in self.index.query(minhash):
            if np.mean(self.kept[int(key)] == hashvalues) >= self.config.threshold:
                return True
        self.index.insert(str(len(self.kept)), minhash)
        self.kept.append(hashvalues)
        return False
