"""Consistency-filter search throughput at pool 100,000, dim 384, and the fraction of the CPU's FLOP peak.

Work: both directions rank every pair against the pool: 2 x N x P x d multiply-adds (FAISS exact
inner-product search in chunks). Peak: the best of a few large float32 matmuls (numpy / BLAS) in
this same process. Random unit vectors stand in for embeddings (the search cost does not depend on
their values).

    python benchmarks/consistency_throughput.py [--pairs 10000] [--pool 100000] [--dim 384]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def peak_gflops(size: int = 2048, repeats: int = 3) -> float:
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10_000, help="N pairs ranked (the pool is drawn from the pairs; N >= pool)")
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--max-rank", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=4096)
    args = parser.parse_args()

    import faiss

    from e5kit.retrieval.dense import rank_of_own

    rng = np.random.default_rng(0)
    total = max(args.pairs, args.pool)

    def unit(n):
        x = rng.standard_normal((n, args.dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    candidates = unit(args.pool)  # pool vectors (queries or passages of the pool pairs)
    probes, targets = unit(args.pairs), unit(args.pairs)
    pool_ids = np.arange(total - args.pool, total, dtype=np.int64)
    peak = peak_gflops()
    started = time.perf_counter()
    rank_of_own(probes, targets, candidates, pool_ids, args.max_rank, args.chunk)
    one_direction = time.perf_counter() - started
    elapsed = 2 * one_direction  # the passage -> query direction is the same computation
    flops = 2 * 2 * args.pairs * args.pool * args.dim
    achieved = flops / elapsed / 1e9
    print(f"faiss {faiss.__version__}, omp threads {faiss.omp_get_max_threads()}; N={args.pairs:,} pairs, pool P={args.pool:,}, d={args.dim}, max_rank {args.max_rank}")
    print(f"measured peak (numpy float32 matmul 2048^3): {peak:,.1f} GFLOP/s")
    print(f"consistency search, both directions: {elapsed:.2f} s -> {args.pairs / elapsed:,.0f} pairs/s; "
          f"{achieved:,.1f} GFLOP/s = {100 * achieved / peak:.0f}% of the measured peak")


if __name__ == "__main__":
    main()
