"""The consistency filter's ranking at scale: pairs/s, peak RSS and the fraction of the CPU's FLOP peak.

Each size runs in a child process of its own (so its peak RSS is its own) through the filter's real
path: both sides' embeddings in on-disk stores (``e5kit.retrieval.store``, blocks of ``--block-rows``),
ranked in both directions against a pool read in shards of ``--pool-block-rows``
(``e5kit.data.consistency.consistency_ranks``). Random unit vectors stand in for embeddings (the cost
does not depend on their values), so no model is run: embedding throughput is the encoders'
benchmark (``benchmarks/encode_throughput.py``).

Work: 2 directions x N pairs x P pool x d multiply-adds. Peak: the best of a few 2048^3 float32
matmuls in the same child (numpy / BLAS; with ``--device cuda``, torch on the GPU). Memory should follow the block sizes and the pool, not N:
the last line compares peak RSS across the pair counts run at one pool size. ``--probes S`` ranks only
the first S pairs (both sides) against the full pool, for pools too large to rank every pair of on 2
cores in one sitting (1M x 1M is ~1.5 PFLOP).

    python benchmarks/consistency_scale.py [--pairs 100000 1000000] [--pool 100000 1000000] [--dim 384] [--probes S]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_gflops(device: str = "cpu", size: int = 2048, repeats: int = 3) -> float:
    """Best float32 matmul rate: numpy's BLAS on the CPU, torch on a GPU (``size``^3 multiply-adds, 2 FLOP each)."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    if device == "cpu":
        multiply = lambda: a @ b  # noqa: E731
    else:
        import torch

        on_device = [torch.from_numpy(x).to(device) for x in (a, b)]
        multiply = lambda: (on_device[0] @ on_device[1], torch.cuda.synchronize(device))  # noqa: E731
    multiply()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        multiply()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def synthetic_store(folder: Path, pairs: int, dim: int, block_rows: int, seed: int, near=None):
    """A store of ``pairs`` random unit vectors written block by block (``near``: a store to stay close to)."""
    from e5kit.retrieval.store import StoreLayout, open_store, put_block

    store = open_store(folder, StoreLayout(rows=pairs, dimension=dim, block_rows=block_rows, dtype="float32", fingerprint=f"synthetic-{seed}"))
    for block in range(store.layout.blocks):
        start, stop = store.layout.block_range(block)
        vectors = np.random.default_rng([seed, block]).standard_normal((stop - start, dim), dtype=np.float32)
        if near is not None:
            vectors = near.block(block)[1] + 0.8 * vectors / np.sqrt(dim)
        put_block(store, block, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return store


def run_one(pairs: int, pool: int, dim: int, block_rows: int, pool_block_rows: int, max_rank: int, probes: int, device: str, workdir: Path) -> dict:
    from e5kit.data.consistency import consistency_ranks
    from e5kit.retrieval.store import RANK_TILE_PROBES, own_scores, rank_of_own_in_store, store_from_vectors

    peak = peak_gflops(device)
    started = time.perf_counter()
    passages = synthetic_store(workdir / "passage", pairs, dim, block_rows, seed=1)
    queries = synthetic_store(workdir / "query", pairs, dim, block_rows, seed=2, near=passages)
    drawn = np.sort(np.random.default_rng(0).choice(pairs, size=min(pool, pairs), replace=False)).astype(np.int64)
    ranked_pairs = min(probes or pairs, pairs)
    first = np.arange(ranked_pairs)
    # --probes: the first pairs probe (both sides) against the whole pool of all the pairs, as the filter would
    probe_queries, probe_passages = (store_from_vectors(workdir / f"{side}-probes", store.rows(first), block_rows) if ranked_pairs < pairs else store
                                     for side, store in (("query", queries), ("passage", passages)))
    written = time.perf_counter()
    if ranked_pairs < pairs:
        own, groups = own_scores(probe_queries, probe_passages), np.arange(pairs)
        common = {"max_rank": max_rank, "pool_block_rows": pool_block_rows, "chunk": RANK_TILE_PROBES, "device": device}
        ranks = {"query_rank": rank_of_own_in_store(probe_queries, own, passages, drawn, groups, **common),
                 "passage_rank": rank_of_own_in_store(probe_passages, own, queries, drawn, groups, **common)}
    else:
        ranks = consistency_ranks(queries, passages, drawn, max_rank, RANK_TILE_PROBES, pool_block_rows=pool_block_rows, device=device)
    ranked = time.perf_counter()
    seconds = ranked - written
    flops = 2 * 2 * ranked_pairs * len(drawn) * dim
    return {
        "pairs": pairs, "ranked_pairs": ranked_pairs, "pool": len(drawn), "dim": dim, "write_s": round(written - started, 1), "rank_s": round(seconds, 1),
        "pairs_per_s": ranked_pairs / seconds, "gflops": flops / seconds / 1e9, "peak_gflops": peak,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "kept_at_k2": int(((ranks["query_rank"] <= 2) & (ranks["passage_rank"] <= 2)).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[100_000, 1_000_000], help="pair counts N to run (each with every pool size <= N)")
    parser.add_argument("--pool", type=int, nargs="+", default=[100_000, 1_000_000], help="pool sizes P")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--block-rows", type=int, default=65_536)
    parser.add_argument("--pool-block-rows", type=int, default=262_144)
    parser.add_argument("--max-rank", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="torch device the ranking runs on (e.g. cuda); its peak is then torch's matmul there")
    parser.add_argument("--probes", type=int, default=0,
                        help="rank only the first PROBES pairs (both sides) against the full pool: the ranking's cost is linear in the "
                             "pairs ranked (P x d each), so pairs/s and GFLOP/s carry over; 0 = all pairs")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one size, JSON out
    args = parser.parse_args()

    if args.one:
        with tempfile.TemporaryDirectory() as workdir:
            result = run_one(args.pairs[0], args.pool[0], args.dim, args.block_rows, args.pool_block_rows, args.max_rank, args.probes,
                             args.device, Path(workdir))
        print(json.dumps(result))
        return

    import torch

    from e5kit.encoder.precision import cpu_description

    print(cpu_description())
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, ranking on {args.device} ({where}); d={args.dim}, blocks of {args.block_rows:,} rows, "
          f"pool read in shards of {args.pool_block_rows:,}, max_rank {args.max_rank}")
    print("| pairs N | pool P | pairs ranked | rank s | pairs/s | GFLOP/s | % of measured peak | peak RSS MiB | store write s |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for pool in args.pool:
        for pairs in args.pairs:
            if pool > pairs:
                continue
            command = [sys.executable, __file__, "--one", "--pairs", str(pairs), "--pool", str(pool), "--dim", str(args.dim),
                       "--block-rows", str(args.block_rows), "--pool-block-rows", str(args.pool_block_rows), "--max-rank", str(args.max_rank),
                       "--probes", str(args.probes), "--device", args.device]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(result)
            print(f"| {pairs:,} | {result['pool']:,} | {result['ranked_pairs']:,} | {result['rank_s']:.1f} | {result['pairs_per_s']:,.0f} | {result['gflops']:,.1f} | "
                  f"{100 * result['gflops'] / result['peak_gflops']:.0f}% of {result['peak_gflops']:,.0f} | {result['peak_rss_mib']:,.0f} | {result['write_s']:.1f} |", flush=True)
    for pool in args.pool:
        runs = sorted((r for r in results if r["pool"] == pool), key=lambda r: r["pairs"])
        if len(runs) > 1:
            print(f"pool {pool:,}: peak RSS {runs[0]['peak_rss_mib']:,.0f} MiB at {runs[0]['pairs']:,} pairs -> {runs[-1]['peak_rss_mib']:,.0f} MiB at "
                  f"{runs[-1]['pairs']:,} pairs ({runs[-1]['pairs'] / runs[0]['pairs']:.0f}x pairs, {runs[-1]['peak_rss_mib'] / runs[0]['peak_rss_mib']:.2f}x memory)")


if __name__ == "__main__":
    main()
