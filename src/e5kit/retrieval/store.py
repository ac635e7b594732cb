"""Embeddings of a large text collection, streamed in bounded blocks to disk and searched block by block.

Every stage that embeds many texts (the consistency filter's pairs and pool, an index's corpus) writes
an :class:`EmbeddingStore`: a folder of blocks, ``block-00000.npy`` ((rows, dim) float16 or float32)
with ``block-00000.ids.npy`` ((rows,) int64 global row ids), and ``store.json`` naming the layout and
the fingerprint of what was embedded (encoder, role, texts). Block ``b`` holds rows
``[b * block_rows, (b + 1) * block_rows)``, so:

- memory follows ``block_rows``, never the number of texts: no stage holds every embedding;
- a killed run resumes block by block (each block file is written whole or not at all);
- data-parallel workers split the blocks (block ``b`` goes to worker ``b % world_size``) and the
  store they write together is byte-identical to one process's, whatever the engine (torchrun ranks,
  Ray actors: ``e5kit.retrieval.engines``).

Search is per block (exact FAISS inner product) with the blocks' top-k merged (``merge_top_k``), and
:func:`rank_of_own_in_store` ranks each pair's own target against a pool that is itself read in
bounded shards, so a 1M-passage pool never needs one process's memory: it counts the candidates
scoring above the own target, tile by tile (a matmul and a comparison, no top-k list).

Empty texts follow ``encode_corpus``'s rule: an all-zero row, never sent to the encoder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from e5kit.io.files import AtomicFile, remove_stale_temporaries, write_text_atomic
from e5kit.io.hashing import stable_hash
from e5kit.progress import progress_bar
from e5kit.retrieval.dense import SEARCH_CHUNK, encode_corpus, exact_index, merge_top_k

STORE_FILE = "store.json"
#: Rows per block by default: 65,536 x 384 float32 = 96 MiB per block in memory at once.
DEFAULT_BLOCK_ROWS = 65_536

#: Score tile of the pool ranking: probes x candidates scored by one matmul and compared at once. The
#: fastest of the shapes timed on a 2-core Xeon (larger tiles were slower: their scores leave the cache
#: before the comparison reads them); the ranking then ran at 141 GFLOP/s against the 38.8 of the FAISS
#: top-k search it replaced (benchmarks/consistency_scale.py, 100,000 pairs, pool 100,000).
RANK_TILE_PROBES = 256
RANK_TILE_CANDIDATES = 8192

#: Block b -> its texts (rows [b * block_rows, (b + 1) * block_rows)).
ReadBlock = Callable[[int], Sequence[str]]


class StoreMismatch(ValueError):
    """A store folder holds embeddings of something else (another encoder, role, texts or layout)."""


@dataclass(frozen=True)
class StoreLayout:
    """What a store holds.

    Attributes:
        rows: Texts embedded (rows over all blocks).
        dimension: Embedding width.
        block_rows: Rows per block (the last block may hold fewer).
        dtype: "float16" or "float32" on disk; blocks are read back as float32.
        fingerprint: Identity of what was embedded (encoder fingerprint, role, texts); a resumed run
            with another fingerprint is refused rather than mixing blocks of two runs.
    """

    rows: int
    dimension: int
    block_rows: int
    dtype: Literal["float16", "float32"]
    fingerprint: str

    @property
    def blocks(self) -> int:
        return -(-self.rows // self.block_rows)

    def block_range(self, block: int) -> tuple[int, int]:
        """[start, stop) global rows of ``block``."""
        return block * self.block_rows, min((block + 1) * self.block_rows, self.rows)


class EmbeddingStore:
    """A folder of embedding blocks (see the module docstring).

    Raises:
        FileNotFoundError: when ``folder`` holds no ``store.json``.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest = self.folder / STORE_FILE
        if not manifest.is_file():
            raise FileNotFoundError(f"{self.folder}: no {STORE_FILE}; not an embedding store")
        self.layout = StoreLayout(**json.loads(manifest.read_text(encoding="utf-8")))

    def vectors_path(self, block: int) -> Path:
        return self.folder / f"block-{block:05d}.npy"

    def ids_path(self, block: int) -> Path:
        return self.folder / f"block-{block:05d}.ids.npy"

    def finished(self, block: int) -> bool:
        # The ids file is written after the vectors, so its presence means the block is whole.
        return self.ids_path(block).is_file()

    def missing_blocks(self) -> list[int]:
        return [block for block in range(self.layout.blocks) if not self.finished(block)]

    def block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (n,) int64, vectors (n, dim) float32) of one finished block."""
        ids = np.load(self.ids_path(block))
        vectors = np.load(self.vectors_path(block)).astype(np.float32, copy=False)
        return ids, vectors

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every block in row order, one in memory at a time.

        Raises:
            ValueError: naming the first block a run has not written yet.
        """
        missing = self.missing_blocks()
        if missing:
            raise ValueError(f"{self.folder}: block {missing[0]} of {self.layout.blocks} has not been embedded yet; run the embedding again to finish it")
        for block in range(self.layout.blocks):
            yield self.block(block)

    def rows(self, wanted: np.ndarray) -> np.ndarray:
        """(len(wanted), dim) float32 vectors of the sorted global rows ``wanted``, read block by block."""
        out = np.empty((len(wanted), self.layout.dimension), dtype=np.float32)
        for block in np.unique(wanted // self.layout.block_rows):
            start, _ = self.layout.block_range(int(block))
            selected = np.flatnonzero(wanted // self.layout.block_rows == block)
            out[selected] = self.block(int(block))[1][wanted[selected] - start]
        return out


def open_store(folder: str | Path, layout: StoreLayout) -> EmbeddingStore:
    """Create the store folder for ``layout``, or reopen the same store to resume it.

    Raises:
        StoreMismatch: when ``folder`` already holds a store of another layout or fingerprint.
    """
    folder = Path(folder)
    manifest = folder / STORE_FILE
    if manifest.is_file():
        existing = EmbeddingStore(folder)
        if existing.layout != layout:
            raise StoreMismatch(
                f"{folder}: holds embeddings of another run ({existing.layout}); remove the folder or choose another one"
            )
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(manifest, json.dumps(asdict(layout), indent=2))
    return EmbeddingStore(folder)


def store_fingerprint(identity: dict) -> str:
    """16 hex digits naming what a store embeds; ``identity`` is JSON-able (encoder fingerprint, role, inputs)."""
    return f"{stable_hash(json.dumps(identity, sort_keys=True)) & (2**64 - 1):016x}"


def open_or_replace_store(folder: str | Path, layout: StoreLayout) -> EmbeddingStore:
    """``open_store``, except that a store of another run in ``folder`` (other inputs or another model) is
    removed first: a stage's own working store is replaced, never mixed in, never an error."""
    try:
        return open_store(folder, layout)
    except StoreMismatch:
        shutil.rmtree(folder)
        return open_store(folder, layout)


def embed_blocks(
    encoder,
    read_block: ReadBlock,
    store: EmbeddingStore,
    *,
    role: str | None,
    blocks: Sequence[int] | None = None,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int | None = None,
    show_progress: bool | None = None,
) -> int:
    """Embed this worker's unfinished blocks (of ``blocks``, default all, those with ``block % world_size == rank``) into ``store``.

    Args:
        encoder: An ``e5kit.encoder.Encoder`` (anything with its ``encode`` and ``dimension``).
        read_block: Block index -> its texts, in row order.
        store: The store (``open_store``) the blocks go to.
        role: The role the texts are embedded in ("query", "passage").
        blocks: The blocks to consider (a Ray actor's share); None: every block.
        rank, world_size: This worker's share of the blocks.
        batch_size: Texts per forward pass.
        show_progress: Passed to the encoder.

    Returns:
        Blocks embedded by this call (finished blocks of an earlier run are skipped).

    Raises:
        ValueError: when ``read_block`` returns another number of texts than the block's rows.
    """
    layout = store.layout
    remove_stale_temporaries(store.folder)
    candidates = range(layout.blocks) if blocks is None else blocks
    mine = [block for block in candidates if block % world_size == rank and not store.finished(block)]
    with progress_bar(total=len(mine), desc=f"embedding blocks ({store.folder.name})", unit="block") as progress:
        for block in mine:
            start, stop = layout.block_range(block)
            texts = list(read_block(block))
            if len(texts) != stop - start:
                raise ValueError(f"{store.folder}: block {block} should hold rows {start}-{stop - 1} ({stop - start} texts), got {len(texts)}")
            put_block(store, block, encode_corpus(encoder, texts, role=role, batch_size=batch_size, show_progress=show_progress).embeddings)
            progress.update(1)
    return len(mine)


def put_block(store: EmbeddingStore, block: int, vectors: np.ndarray) -> None:
    """Write one block's (rows, dim) vectors, whole or not at all (the ids file last: it marks the block done).

    Raises:
        ValueError: when ``vectors`` is not the block's (rows, dim).
    """
    start, stop = store.layout.block_range(block)
    if vectors.shape != (stop - start, store.layout.dimension):
        raise ValueError(f"{store.folder}: block {block} takes ({stop - start}, {store.layout.dimension}) vectors, got {vectors.shape}")
    with AtomicFile(store.vectors_path(block)) as staged, open(staged.temporary, "wb") as handle:
        np.save(handle, vectors.astype(np.dtype(store.layout.dtype)))
    with AtomicFile(store.ids_path(block)) as staged, open(staged.temporary, "wb") as handle:
        np.save(handle, np.arange(start, stop, dtype=np.int64))


def store_from_vectors(folder: str | Path, vectors: np.ndarray, block_rows: int, dtype: str = "float32") -> EmbeddingStore:
    """A store holding given (rows, dim) vectors (e.g. to rank embeddings computed elsewhere)."""
    layout = StoreLayout(rows=len(vectors), dimension=vectors.shape[1], block_rows=block_rows, dtype=dtype, fingerprint="vectors")  # type: ignore[arg-type]
    store = open_store(folder, layout)
    for block in range(layout.blocks):
        start, stop = layout.block_range(block)
        put_block(store, block, vectors[start:stop])
    return store


def search_store(queries: np.ndarray, store: EmbeddingStore, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over every block, the blocks' results merged.

    Queries go to FAISS in chunks of ``SEARCH_CHUNK``, as ``dense_search`` sends them: FAISS scores a
    short chunk without BLAS, so the same chunking keeps a one-block store's scores bit-identical to it.

    Args:
        queries: (q, dim) float32.
        store: A finished store.
        top_k: Results per query (capped at the store's rows).

    Returns:
        (indices, scores), both (q, k), best first; indices are global row ids.
    """
    k = min(top_k, store.layout.rows)
    indices = np.full((len(queries), 0), -1, dtype=np.int64)
    scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    for ids, vectors in store.blocks():
        index = exact_index(vectors)
        depth = min(k, len(vectors))
        block_scores = np.empty((len(queries), depth), dtype=np.float32)
        positions = np.empty((len(queries), depth), dtype=np.int64)
        for start in range(0, len(queries), SEARCH_CHUNK):
            block_scores[start : start + SEARCH_CHUNK], positions[start : start + SEARCH_CHUNK] = index.search(queries[start : start + SEARCH_CHUNK], depth)
        scores, indices = merge_top_k(scores, indices, block_scores, ids[positions], k)
    return indices, scores


def own_scores(probes: EmbeddingStore, targets: EmbeddingStore) -> np.ndarray:
    """(rows,) float32 inner product of each row with the same row of ``targets`` (a pair's own score)."""
    out = np.empty(probes.layout.rows, dtype=np.float32)
    for (ids, probe), (_, target) in zip(probes.blocks(), targets.blocks()):
        out[ids] = np.einsum("nd,nd->n", probe, target)
    return out


def rank_of_own_in_store(
    probes: EmbeddingStore,
    own: np.ndarray,
    candidates: EmbeddingStore,
    pool: np.ndarray,
    groups: np.ndarray,
    max_rank: int,
    *,
    pool_block_rows: int = DEFAULT_BLOCK_ROWS,
    chunk: int = RANK_TILE_PROBES,
    desc: str = "ranking",
    device: str | torch.device = "cpu",
    counts_folder: str | Path | None = None,
) -> np.ndarray:
    """Rank of each row's own target among the pool's candidates, with probes and pool read in bounded blocks.

    Every probe's candidates scoring above its own target are counted (scores computed tile by tile,
    never top-k lists, so nothing limits how many are seen), the pool's shards are disjoint so their
    counts add up, and a candidate of the probe's own group is subtracted with the same score it
    was counted with.

    Args:
        probes: Store of the probing side (row i probes for target i).
        own: (rows,) float32 own-target scores (``own_scores``).
        candidates: Store of the target side; the pool is drawn from its rows.
        pool: (P,) sorted int64 global rows forming the pool.
        groups: (rows,) int64 group of each row; a pool candidate of the probe's own group (its own
            target, or another answer to the same text) is not counted against it.
        max_rank: Ranks deeper than this are returned as max_rank + 1.
        pool_block_rows: Pool candidates held in memory at once.
        chunk: Probes per score tile (memory: chunk x ``RANK_TILE_CANDIDATES`` float32).
        device: Torch device the pool shard and the tiles are scored on (a GPU holds one pool shard).
        counts_folder: Where each (pool shard, probe block)'s counts are kept as they finish, so a killed
            ranking run again counts only the missing ones (counts of another ranking there are removed).
            None: nothing kept.

    Returns:
        (rows,) int32 ranks, 1 = the own target scores highest. Ties count in the pair's favour.
    """
    ahead = np.zeros(probes.layout.rows, dtype=np.int64)
    shards = range(0, len(pool), pool_block_rows)
    if counts_folder is not None:
        counts_folder = _open_counts(Path(counts_folder), probes, own, candidates, pool, groups, pool_block_rows)
    with progress_bar(total=len(shards) * probes.layout.rows, desc=desc, unit="pair") as progress:
        for shard_index, start in enumerate(shards):
            rows = pool[start : start + pool_block_rows]
            shard = members = None  # read when a block of this shard is first counted
            for block, (ids, vectors) in enumerate(probes.blocks()):
                done = None if counts_folder is None else counts_folder / f"shard-{shard_index:05d}-block-{block:05d}.npy"
                if done is not None and done.exists():
                    ahead[ids] += np.load(done)
                    progress.update(len(ids))
                    continue
                if shard is None:
                    shard, members = torch.from_numpy(candidates.rows(rows)).to(device), _GroupMembers(groups[rows])  # (p, d)
                counts = np.zeros(len(ids), dtype=np.int64)
                for offset in range(0, len(ids), chunk):
                    part = ids[offset : offset + chunk]
                    probe = torch.from_numpy(np.array(vectors[offset : offset + chunk], dtype=np.float32)).to(device)  # (c, d)
                    counts[offset : offset + chunk] = _count_ahead(probe, own[part], shard, *members.of(groups[part]))
                    progress.update(len(part))
                if done is not None:
                    with AtomicFile(done) as staged, open(staged.temporary, "wb") as handle:
                        np.save(handle, counts)
                ahead[ids] += counts
    return np.minimum(ahead + 1, max_rank + 1).astype(np.int32)


def _open_counts(folder: Path, probes: EmbeddingStore, own: np.ndarray, candidates: EmbeddingStore, pool: np.ndarray, groups: np.ndarray,
                 pool_block_rows: int) -> Path:
    """``folder`` ready for the counts of this ranking: what its counts depend on is written to ``ranking.json``,
    and a folder holding another ranking's counts (other stores, pool, groups or shards) is emptied first."""
    def digest(array: np.ndarray) -> str:
        return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()

    identity = json.dumps({"probes": asdict(probes.layout), "candidates": asdict(candidates.layout), "own": digest(own), "pool": digest(pool),
                           "groups": digest(groups), "pool_block_rows": pool_block_rows}, sort_keys=True)
    marker = folder / "ranking.json"
    if folder.exists() and (not marker.exists() or marker.read_text(encoding="utf-8") != identity):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    if not marker.exists():
        write_text_atomic(marker, identity)
    return folder


class _GroupMembers:
    """Positions of a pool shard's candidates by group, to find each probe's own group in the shard."""

    def __init__(self, shard_groups: np.ndarray) -> None:
        self.order = np.argsort(shard_groups, kind="stable")
        self.sorted = shard_groups[self.order]

    def of(self, probe_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probe index, shard position) of every candidate sharing a probe's group, both (m,) int64."""
        first = np.searchsorted(self.sorted, probe_groups, side="left")
        counts = np.searchsorted(self.sorted, probe_groups, side="right") - first
        probe = np.repeat(np.arange(len(probe_groups)), counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return probe, self.order[np.repeat(first, counts) + within]


def _count_ahead(probe: torch.Tensor, own: np.ndarray, shard: torch.Tensor, member_probe: np.ndarray, member_position: np.ndarray) -> np.ndarray:
    """(c,) int64 count of the shard's candidates scoring strictly above each probe's own score,
    candidates of the probe's own group (``member_*``, from ``_GroupMembers.of``) left out."""
    threshold = torch.from_numpy(np.ascontiguousarray(own, dtype=np.float32)).to(probe.device)[:, None]  # (c, 1)
    counts = torch.zeros(len(probe), dtype=torch.int64, device=probe.device)
    for start in range(0, len(shard), RANK_TILE_CANDIDATES):
        scores = probe @ shard[start : start + RANK_TILE_CANDIDATES].T  # (c, t)
        counts += torch.count_nonzero(scores > threshold, dim=1)
        inside = (member_position >= start) & (member_position < start + scores.shape[1])
        if inside.any():
            who = torch.from_numpy(member_probe[inside]).to(probe.device)
            above = scores[who, torch.from_numpy(member_position[inside] - start).to(probe.device)] > threshold[who, 0]
            counts.index_add_(0, who[above], torch.full((int(above.sum()),), -1, dtype=torch.int64, device=probe.device))
    return counts.cpu().numpy()
