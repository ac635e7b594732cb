"""Peak memory of a pre-training step against the global batch size, at a fixed GradCache chunk size.

Each batch size runs in a fresh subprocess (peak RSS is per process): load the model, run the steps,
report peak RSS on CPU (``ru_maxrss``) or ``torch.cuda.max_memory_allocated`` on a GPU. GradCache is
meant to keep the peak within 1.2x of the batch-64 figure.

    .venv/bin/python benchmarks/pretrain_memory.py                       # 64 256 1024 4096, chunk 32
    .venv/bin/python benchmarks/pretrain_memory.py --batch-sizes 64 256 --chunk-size 16
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

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEFAULT_MODEL = SHARED / "models" / "paraphrase-MiniLM-L3-v2"
ARXIV = SHARED / "data" / "raw" / "arxiv" / "title_abstract.jsonl.gz"


def write_arxiv_shard(folder: Path) -> Path:
    """arXiv (title -> abstract) pairs as a Parquet pair shard."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    with gzip.open(ARXIV, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    rows = [r for r in rows if r.get("title") and r.get("abstract")]
    path = folder / "arxiv.parquet"
    pq.write_table(
        pa.table({"query": [r["title"] for r in rows], "passage": [r["abstract"] for r in rows], "source": ["arxiv"] * len(rows), "meta": ["{}"] * len(rows)}),
        path,
    )
    return path


def measure(args: argparse.Namespace) -> None:
    """Child process: one run at one batch size; prints a JSON line."""
    import torch

    from e5kit.training.config import coerce_config
    from e5kit.training.trainer import pretrainer

    with tempfile.TemporaryDirectory() as run_dir:
        config = coerce_config(
            {
                "init_model": str(args.model),
                "data": {"paths": [str(args.data)]},
                "output_dir": run_dir,
                "max_steps": args.steps,
                "batch_size": args.child,
                "chunk_size": args.chunk_size,
                "query_max_length": args.max_length,
                "passage_max_length": args.max_length,
                "warmup_steps": 0,
                "checkpoint_every": 0,
            }
        )
        trainer = pretrainer(config, show_progress=False)
        loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        losses = [trainer.train_step()["loss"] for _ in range(args.steps)]
        elapsed = time.perf_counter() - started
    result = {
        "batch_size": args.child,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mib": loaded_rss / 1024,
        "seconds": elapsed,
        "loss": losses[-1],
    }
    if torch.cuda.is_available():
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=32, help="Token limit of queries and passages (memory per chunk).")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, help="Pair shard(s); default: arXiv title->abstract from ../shared.")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args)
        return
    with tempfile.TemporaryDirectory() as folder:
        data = args.data or write_arxiv_shard(Path(folder))
        results = []
        for batch_size in args.batch_sizes:
            command = [sys.executable, __file__, "--child", str(batch_size), "--chunk-size", str(args.chunk_size),
                       "--max-length", str(args.max_length), "--steps", str(args.steps), "--model", str(args.model), "--data", str(data)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"batch {batch_size}: done in {results[-1]['seconds']:.1f}s", file=sys.stderr)
    base = results[0]
    device_key = "cuda_max_allocated_mib" if "cuda_max_allocated_mib" in base else "peak_rss_mib"
    print(f"\nmodel {args.model.name}, chunk {args.chunk_size}, max length {args.max_length}, {args.steps} step(s); memory = {device_key}")
    print(f"{'global batch':>12} | {'peak MiB':>9} | {'x batch-64':>10} | {'RSS after load MiB':>18} | {'step s':>7}")
    for result in results:
        ratio = result[device_key] / base[device_key]
        print(f"{result['batch_size']:>12} | {result[device_key]:>9.0f} | {ratio:>10.3f} | {result['rss_after_load_mib']:>18.0f} | {result['seconds'] / args.steps:>7.1f}")


if __name__ == "__main__":
    main()
