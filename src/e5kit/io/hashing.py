"""The one stable 64-bit text hash, the same in every process and run (Python's ``hash`` is salted).

Exact dedup and decontamination key texts by :func:`stable_hash`; mining (copies of a positive) and
GradCache (the same text in two rows of a batch) key them by :func:`text_key_hash`, the hash of
``normalized_text_key``, so the rule "these two texts are the same text" is one rule.
"""

from __future__ import annotations

import hashlib

from e5kit.io.text import normalized_text_key


def stable_hash(text: str) -> int:
    """A signed 64-bit hash of ``text`` (blake2b of its UTF-8 bytes, 8 bytes, little-endian)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def text_key_hash(text: str) -> int:
    """``stable_hash`` of ``normalized_text_key(text)``: equal for texts that count as the same text."""
    return stable_hash(normalized_text_key(text))
