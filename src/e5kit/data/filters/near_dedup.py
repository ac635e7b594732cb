"""Near duplicates: MinHash signatures of word shingles, looked up in a datasketch LSH index.

Signatures are computed per shard (in parallel); the index runs in the global pass, so a passage is
compared with every passage kept before it in any shard.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa

from e5kit.data.filters.base import FilterConfig, Verdict, words
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
    """An LSH index of the signatures kept so far; sources with the same threshold and size share one."""

    name = "near_dedup"
    column = "minhash"
    reason = "near duplicate (MinHash)"

    def __init__(self, config: Config) -> None:
        from datasketch import MinHashLSH

        self.config = config
        self.index = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm)
        self.kept: list[np.ndarray] = []

    def key(self, pair: Pair) -> bytes:
        return signature(pair, self.config).tobytes()

    def keep(self, pair: Pair) -> Verdict:
        return self.reason if self.is_duplicate(signature(pair, self.config)) else True

    def keep_keys(self, keys: pa.Array, candidates: np.ndarray) -> np.ndarray:
        """(n,) bool for a batch of signatures (binary, ``num_perm`` uint64 each), in order: True where a
        candidate is not a near duplicate of a signature kept before it. Non-candidates are not indexed."""
        keep = np.zeros(len(keys), dtype=bool)
        rows = np.flatnonzero(candidates)
        if not len(rows):
            return keep
        offsets = np.frombuffer(keys.buffers()[1], dtype=np.int32)[keys.offset : keys.offset + len(keys) + 1]
        data = np.frombuffer(keys.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        signatures = data.view(np.uint64).reshape(len(keys), self.config.num_perm).copy()
        for row in rows.tolist():
            keep[row] = not self.is_duplicate(signatures[row])
        return keep

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
