"""Embedding stores: blocks on disk equal one in-memory pass, resume block by block, split across
workers (torchrun ranks, Ray actors) into the same bytes, and are searched and ranked block by block
exactly as the in-memory search does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import e5kit.retrieval.store as store_module
from e5kit.retrieval.dense import dense_search, encode_corpus
from e5kit.retrieval.engines import EncoderSpec, embed_store, list_blocks
from e5kit.retrieval.store import (
    EmbeddingStore,
    StoreLayout,
    StoreMismatch,
    embed_blocks,
    open_store,
    own_scores,
    rank_of_own_in_store,
    search_store,
    store_from_vectors,
)

TEXTS = [f"text number {i} about {'cats' if i % 3 else 'the stock market'} and {i * 7 % 11} things" for i in range(23)]
TEXTS[5] = "   "  # no visible text: an all-zero row, never sent to the encoder


def _layout(rows, block_rows=7, dimension=32, dtype="float32", fingerprint="test"):
    return StoreLayout(rows=rows, dimension=dimension, block_rows=block_rows, dtype=dtype, fingerprint=fingerprint)


def _store_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("block-*.npy"))}


def _stored_vectors(store: EmbeddingStore) -> np.ndarray:
    return np.concatenate([vectors for _, vectors in store.blocks()])


def test_blocks_on_disk_equal_one_in_memory_pass(tmp_path, tiny_bert_dir, single_torch_thread):
    # Given 23 texts (one empty) and blocks of 7 rows
    encoder = EncoderSpec(str(tiny_bert_dir)).load()
    store = open_store(tmp_path / "store", _layout(len(TEXTS), dimension=encoder.dimension))
    # When they are embedded block by block
    assert embed_blocks(encoder, list_blocks(TEXTS, 7), store, role="passage") == 4
    # Then the store holds every row, ids in order, equal to one in-memory pass with the empty-passage rule
    ids = np.concatenate([ids for ids, _ in store.blocks()])
    assert ids.tolist() == list(range(len(TEXTS)))
    expected = encode_corpus(encoder, TEXTS, role="passage").embeddings
    np.testing.assert_allclose(_stored_vectors(store), expected, atol=1e-5)
    assert not _stored_vectors(store)[5].any()
    # And float16 storage is read back as float32 within half precision
    half = open_store(tmp_path / "half", _layout(len(TEXTS), dimension=encoder.dimension, dtype="float16"))
    embed_blocks(encoder, list_blocks(TEXTS, 7), half, role="passage")
    assert _stored_vectors(half).dtype == np.float32
    np.testing.assert_allclose(_stored_vectors(half), expected, atol=2e-3)


def test_a_killed_run_resumes_block_by_block_to_the_same_bytes(tmp_path, tiny_bert_dir, single_torch_thread):
    # Given an embedding run killed while reading block 2
    encoder = EncoderSpec(str(tiny_bert_dir)).load()
    layout = _layout(len(TEXTS), dimension=encoder.dimension)
    reference = open_store(tmp_path / "reference", layout)
    embed_blocks(encoder, list_blocks(TEXTS, 7), reference, role="passage")

    def dies_at_block_2(block):
        if block == 2:
            raise KeyboardInterrupt
        return TEXTS[block * 7 : (block + 1) * 7]

    store = open_store(tmp_path / "store", layout)
    with pytest.raises(KeyboardInterrupt):
        embed_blocks(encoder, dies_at_block_2, store, role="passage")
    assert store.missing_blocks() == [2, 3]
    with pytest.raises(ValueError, match="block 2 of 4 has not been embedded yet"):
        next(iter(search_store(np.zeros((1, encoder.dimension), np.float32), store, 3)))
    # When it runs again, Then only the missing blocks are embedded and the store is byte-identical
    assert embed_blocks(encoder, list_blocks(TEXTS, 7), open_store(tmp_path / "store", layout), role="passage") == 2
    assert _store_bytes(tmp_path / "store") == _store_bytes(tmp_path / "reference")
    # And a store of another run is refused rather than mixed
    with pytest.raises(StoreMismatch, match="holds embeddings of another run"):
        open_store(tmp_path / "store", _layout(len(TEXTS), dimension=encoder.dimension, fingerprint="other"))
    # And a source giving a block of the wrong size is named
    with pytest.raises(ValueError, match=r"block 0 should hold rows 0-6 \(7 texts\), got 6"):
        embed_blocks(encoder, lambda block: TEXTS[:6], open_store(tmp_path / "short", layout), role="passage")


def test_two_workers_write_the_bytes_one_process_writes(tmp_path, tiny_bert_dir, single_torch_thread):
    # Given one store written by one process
    encoder = EncoderSpec(str(tiny_bert_dir)).load()
    layout = _layout(len(TEXTS), dimension=encoder.dimension)
    embed_blocks(encoder, list_blocks(TEXTS, 7), open_store(tmp_path / "one", layout), role="passage")
    # When two workers each embed their share (rank 0: blocks 0 and 2, rank 1: blocks 1 and 3)
    shared = open_store(tmp_path / "two", layout)
    assert embed_blocks(encoder, list_blocks(TEXTS, 7), shared, role="passage", rank=0, world_size=2) == 2
    assert shared.missing_blocks() == [1, 3]
    assert embed_blocks(encoder, list_blocks(TEXTS, 7), shared, role="passage", rank=1, world_size=2) == 2
    # Then the store is the same bytes
    assert _store_bytes(tmp_path / "two") == _store_bytes(tmp_path / "one")


TORCHRUN_WORKER = """
import sys
from e5kit.retrieval.engines import EncoderSpec, embed_store, list_blocks
from e5kit.retrieval.store import StoreLayout, open_store
model, folder, texts = sys.argv[1], sys.argv[2], sys.argv[3].split("|")
spec = EncoderSpec(model)
STORES = int(sys.argv[4])
layout = StoreLayout(rows=len(texts), dimension=spec.load().dimension, block_rows=7, dtype="float32", fingerprint="test")
# Several stores in one process, as the filter embeds its two sides: the process group is joined once
for part in range(STORES):
    store = open_store(f"{folder}/{part}", layout)
    done = embed_store(spec, list_blocks(texts, 7), store, role="passage", engine="torchrun")
    print(f"rank done {done} {len(store.missing_blocks())}", flush=True)  # one write: ranks share stdout
"""
STORES = 6


def test_torchrun_two_processes_write_the_bytes_one_process_writes(tmp_path, tiny_bert_dir, single_torch_thread):
    # Given the store one process writes
    spec = EncoderSpec(str(tiny_bert_dir))
    layout = _layout(len(TEXTS), dimension=spec.load().dimension)
    embed_store(spec, list_blocks(TEXTS, 7), open_store(tmp_path / "one", layout), role="passage")
    # When two gloo processes under torchrun embed the same texts into several stores in turn (re-joining
    # the group per store made gloo's connect fail with "Connection refused" now and then: CI, stop 21)
    worker = tmp_path / "worker.py"
    worker.write_text(TORCHRUN_WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
               str(tiny_bert_dir), str(tmp_path / "two"), "|".join(TEXTS), str(STORES)]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    # Then each rank embedded its half of each, saw the whole store after the barrier, and the bytes are the same
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("rank done 2 0") == 2 * STORES
    for part in range(STORES):
        assert _store_bytes(tmp_path / "two" / str(part)) == _store_bytes(tmp_path / "one")


def test_ray_with_two_actors_writes_the_bytes_one_process_writes(tmp_path, tiny_bert_dir, single_torch_thread):
    pytest.importorskip("ray")
    # Given the store one process writes
    spec = EncoderSpec(str(tiny_bert_dir))
    layout = _layout(len(TEXTS), dimension=spec.load().dimension)
    embed_store(spec, list_blocks(TEXTS, 7), open_store(tmp_path / "one", layout), role="passage")
    # When a local Ray actor pool of two embeds the same texts
    import ray

    try:
        assert embed_store(spec, list_blocks(TEXTS, 7), open_store(tmp_path / "ray", layout), role="passage", engine="ray", workers=2) == 4
    finally:
        ray.shutdown()
    # Then the bytes are the same
    assert _store_bytes(tmp_path / "ray") == _store_bytes(tmp_path / "one")


def _random_store(folder, vectors, block_rows):
    return store_from_vectors(folder, vectors, block_rows)


def test_block_by_block_search_equals_one_exact_search(tmp_path):
    # Given 50 random documents in blocks of 8 and 6 queries
    rng = np.random.default_rng(0)
    documents = rng.standard_normal((50, 16)).astype(np.float32)
    queries = rng.standard_normal((6, 16)).astype(np.float32)
    store = _random_store(tmp_path / "docs", documents, 8)
    # When the store is searched block by block, Then the top 10 equal one exact search over everything
    indices, scores = search_store(queries, store, 10)
    expected_indices, expected_scores = dense_search(queries, documents, 10)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)


@pytest.mark.parametrize("tile", [3, 8192])
def test_ranks_with_a_sharded_pool_equal_brute_force_ranks(tmp_path, monkeypatch, tile):
    # Given 60 pairs whose queries sit near their passages, pairs in groups of 3 sharing a query text,
    # scored against tiles of `tile` candidates (3: a group's members fall on either side of a tile edge)
    monkeypatch.setattr(store_module, "RANK_TILE_CANDIDATES", tile)
    rng = np.random.default_rng(1)
    passages = rng.standard_normal((60, 16)).astype(np.float32)
    queries = (passages + 1.5 * rng.standard_normal((60, 16))).astype(np.float32)
    groups = np.repeat(np.arange(20), 3).astype(np.int64)
    pool = np.sort(rng.choice(60, size=40, replace=False)).astype(np.int64)
    query_store, passage_store = _random_store(tmp_path / "q", queries, 9), _random_store(tmp_path / "p", passages, 9)
    # When the ranks are computed from the stores with the pool read in shards of 7 candidates
    own = own_scores(query_store, passage_store)
    ranks = rank_of_own_in_store(query_store, own, passage_store, pool, groups, max_rank=5, pool_block_rows=7, chunk=4)
    # Then they equal ranks counted from the full score matrix, which cover every rank from 1 to the cap
    own_score = np.einsum("nd,nd->n", queries, passages)
    others_ahead = (queries @ passages[pool].T > own_score[:, None]) & (groups[pool][None, :] != groups[:, None])
    expected = np.minimum(others_ahead.sum(axis=1) + 1, 6)
    np.testing.assert_array_equal(ranks, expected)
    assert {1, 6} <= set(ranks.tolist())
    np.testing.assert_allclose(own, np.einsum("nd,nd->n", queries, passages), rtol=1e-6)


def test_answers_of_the_same_text_scoring_above_the_own_target_do_not_hide_competitors(tmp_path):
    # Given a probe whose two sibling targets (same group) and two other candidates all score above its own target
    probe = np.array([[1.0, 0.0]], dtype=np.float32)
    targets = np.array([[0.5, 0.8], [0.99, 0.1], [0.98, 0.2], [0.9, 0.4], [0.85, 0.5], [0.0, 1.0]], dtype=np.float32)
    groups = np.array([0, 0, 0, 1, 2, 3], dtype=np.int64)
    probes = _random_store(tmp_path / "q", np.repeat(probe, 6, axis=0), 6)
    candidates = _random_store(tmp_path / "p", targets, 6)
    own = own_scores(probes, candidates)
    # When probe 0 is ranked with max_rank 2 against the whole pool (a top-(max_rank + 1) list would hold
    # only the siblings and one competitor)
    ranks = rank_of_own_in_store(probes, own, candidates, np.arange(6), groups, max_rank=2)
    # Then both competitors count: rank 3, i.e. beyond max_rank, so the pair is not kept at k = 2
    assert ranks[0] == 3


def test_a_ranking_stopped_midway_resumes_from_its_kept_counts(tmp_path, monkeypatch):
    # Given 50 probes in blocks of 8 and a pool of 30 read in shards of 11 (3 shards x 7 blocks = 21 counts;
    # chunks of 4 probes: 13 score tiles a shard, 39 in all), and a ranking that fails after its 10th tile
    rng = np.random.default_rng(3)
    passages = rng.standard_normal((50, 8)).astype(np.float32)
    queries = (passages + rng.standard_normal((50, 8))).astype(np.float32)
    probes, candidates = _random_store(tmp_path / "q", queries, 8), _random_store(tmp_path / "p", passages, 8)
    own, pool, groups = own_scores(probes, candidates), np.sort(rng.choice(50, size=30, replace=False)), np.arange(50) // 2
    options = {"max_rank": 50, "pool_block_rows": 11, "chunk": 4}
    expected = rank_of_own_in_store(probes, own, candidates, pool, groups, **options)
    real, calls = store_module._count_ahead, []

    def failing_after(limit):
        def count(*args):
            calls.append(1)
            if len(calls) > limit:
                raise KeyboardInterrupt
            return real(*args)
        return count

    monkeypatch.setattr(store_module, "_count_ahead", failing_after(10))
    with pytest.raises(KeyboardInterrupt):
        rank_of_own_in_store(probes, own, candidates, pool, groups, counts_folder=tmp_path / "counts", **options)
    # When it runs again with the same stores and pool
    calls.clear()
    monkeypatch.setattr(store_module, "_count_ahead", failing_after(10**6))
    resumed = rank_of_own_in_store(probes, own, candidates, pool, groups, counts_folder=tmp_path / "counts", **options)
    # Then it equals the uninterrupted ranking, and the blocks finished before the failure were not scored again
    # (the 10 tiles done finished the first shard's first 5 blocks)
    np.testing.assert_array_equal(resumed, expected)
    assert len(calls) == 39 - 10
    # And counts kept for another pool are not taken up: a new pool's ranking scores every tile again
    calls.clear()
    other_pool = np.sort(rng.choice(50, size=30, replace=False))
    again = rank_of_own_in_store(probes, own, candidates, other_pool, groups, counts_folder=tmp_path / "counts", **options)
    np.testing.assert_array_equal(again, rank_of_own_in_store(probes, own, candidates, other_pool, groups, **options))
    assert len(calls) == 2 * 39
