"""An on-disk embedding cache, so re-running an evaluation does not re-encode.

Entries are keyed by (the backend's fingerprint -- torch: the weights hash, ONNX: the graph file's
hash --, hash of the exact text embedded -- prefix included --, role, max length, normalisation) in one SQLite file per cache folder.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Environment variable that moves the cache folder.
CACHE_ENV = "E5KIT_CACHE_DIR"
_LOOKUP_CHUNK = 500


def default_cache_dir() -> Path:
    """``$E5KIT_CACHE_DIR`` or ``~/.cache/e5kit/embeddings``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "e5kit" / "embeddings").expanduser()


def weights_hash(encoder) -> str:
    """The encoder's backend fingerprint (``Encoder.fingerprint``), which cache entries and results key on.

    Torch: SHA-256 over the pooling and the parameters' names, dtypes, shapes and bytes (hashing the
    tensors, not files, works for models built in memory and ignores irrelevant file differences such
    as safetensors metadata). ONNX: SHA-256 of the graph file. The name stays: results record it as
    ``weights_hash``.
    """
    return encoder.fingerprint()


def text_hash(text: str) -> bytes:
    """16-byte digest of one text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class EmbeddingCache:
    """Stores float32 vectors in ``<folder>/embeddings.sqlite``.

    Args:
        folder: Cache folder (created).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "embeddings.sqlite"
        self._db = sqlite3.connect(self.path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (model TEXT, role TEXT, max_length INTEGER, normalize INTEGER,"
            " text_hash BLOB, vector BLOB, PRIMARY KEY (model, role, max_length, normalize, text_hash))"
        )

    def get(self, key: tuple[str, str, int, bool], hashes: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """The stored vectors among ``hashes`` for ``key`` = (model hash, role, max length, normalize)."""
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(hashes), _LOOKUP_CHUNK):
            chunk = list(hashes[start : start + _LOOKUP_CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT text_hash, vector FROM embeddings WHERE model=? AND role=? AND max_length=? AND normalize=?"
                f" AND text_hash IN ({marks})",
                (key[0], key[1], key[2], int(key[3]), *chunk),
            )
            found.update((digest, np.frombuffer(vector, dtype=np.float32)) for digest, vector in rows)
        return found

    def put(self, key: tuple[str, str, int, bool], hashes: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` under ``hashes[i]``."""
        rows = (
            (key[0], key[1], key[2], int(key[3]), digest, np.ascontiguousarray(vector, dtype=np.float32).tobytes())
            for digest, vector in zip(hashes, vectors, strict=True)
        )
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()


class CachedEncoder:
    """An ``Encoder`` whose ``encode`` looks texts up in an ``EmbeddingCache`` and embeds only the misses.

    It has the same ``encode`` signature as ``Encoder``, so evaluators take either.

    Args:
        encoder: The ``e5kit.encoder.Encoder`` to wrap.
        cache: Where vectors are kept.

    Attributes:
        hits, misses: Texts served from the cache and texts embedded, over this object's life.
    """

    def __init__(self, encoder, cache: EmbeddingCache) -> None:
        self.encoder = encoder
        self.cache = cache
        self.model_hash = weights_hash(encoder)
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name: str):
        return getattr(self.encoder, name)

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = None,
        *,
        batch_size: int | None = None,
        normalize: bool | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """``Encoder.encode`` through the cache; identical texts in one call are embedded once."""
        prepared = self.encoder.prepare(texts, role)  # the prefix is part of what is hashed
        normalize = self.encoder.normalize if normalize is None else normalize
        key = (self.model_hash, str(role), self.encoder.max_length, normalize)
        hashes = [text_hash(text) for text in prepared]
        stored = self.cache.get(key, list(set(hashes)))
        missing: dict[bytes, str] = {}
        for digest, text in zip(hashes, prepared, strict=True):
            if digest not in stored:
                missing.setdefault(digest, text)
        if missing:
            # Prepared texts already carry the prefix, which the encoder then does not add again.
            vectors = self.encoder.encode(
                list(missing.values()), role=role, batch_size=batch_size, normalize=normalize, show_progress=show_progress
            )
            self.cache.put(key, list(missing), vectors)
            stored.update(zip(missing, vectors, strict=True))
        self.hits += len(hashes) - len(missing)
        self.misses += len(missing)
        output = np.empty((len(prepared), self.encoder.dimension), dtype=np.float32)
        for row, digest in enumerate(hashes):
            output[row] = stored[digest]
        return output
