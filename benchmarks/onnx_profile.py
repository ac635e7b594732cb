"""Where ONNX Runtime spends an e5kit ONNX export's encode time, per operator type, on this CPU.

Encodes the same ~128-token texts as ``encode_backends.py`` through ``Encoder.load(..., backend="onnx")`` with ONNX
Runtime's profiler on, and prints each operator type's share of kernel time. For the int8 dense
layers (``MatMulInteger`` nodes; the static int8 export keeps the feed-forward down-projections in
fp32) it also prints the multiply-accumulates per second and per core, counted from each node's
weight shape and the padded batch shapes, to compare with what the CPU's vector units can do.

    python benchmarks/onnx_profile.py [--onnx-dir /tmp/e5kit-bench-onnx] [--file model_qint8_quantized.onnx] [--texts 256] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from encode_throughput import prose_windows

DENSE_OP = "MatMulInteger"


def kernel_microseconds(trace_file: str) -> Counter:
    """Operator type -> summed kernel time (µs) from an ONNX Runtime profiling trace (then deleted)."""
    totals: Counter = Counter()
    trace = Path(trace_file)
    events = json.loads(trace.read_text())
    trace.unlink()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    return totals


def dense_macs_per_token(onnx_file: Path) -> int:
    """Multiply-accumulates per token of the graph's ``DENSE_OP`` nodes: the sum of their weights' K x N."""
    import onnx

    graph = onnx.load(onnx_file).graph
    shapes = {tensor.name: list(tensor.dims) for tensor in graph.initializer}
    return sum(shapes[node.input[1]][0] * shapes[node.input[1]][1] for node in graph.node
               if node.op_type == DENSE_OP and len(shapes.get(node.input[1], [])) == 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="exported first when --onnx-dir has no export")
    parser.add_argument("--onnx-dir", type=Path, default=Path(tempfile.gettempdir()) / "e5kit-bench-onnx")
    parser.add_argument("--file", default="model_qint8_quantized.onnx")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--words", type=int, default=78)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import numpy as np

    from e5kit.encoder import Encoder
    from e5kit.encoder.onnx_backend import session_for
    from e5kit.export.onnx import export_onnx

    if not (args.onnx_dir / "onnx" / args.file).is_file():
        export_onnx(Encoder.load(args.model, device="cpu"), args.onnx_dir, quantize="int8")
    encoder = Encoder.load(args.onnx_dir, backend="onnx", file_name=args.file)
    backend = encoder.backend
    backend.session = session_for(backend.file, profile=True)
    texts = prose_windows(args.texts, args.words)
    role = "passage" if "passage" in encoder.prompts else None
    # One profiled pass, no warm-up: weights are pre-packed when the session is created, and the
    # first batches' allocations are a small part of 32 batches.
    _, stats = encoder.encode_with_stats(texts, role=role, batch_size=args.batch_size)
    totals = kernel_microseconds(backend.session.end_profiling())
    seconds = sum(totals.values()) / 1e6

    # Padded tokens: batches are length-sorted runs of batch_size texts, each padded to its longest.
    lengths = np.sort(stats.token_counts)[::-1]
    padded_tokens = sum(int(lengths[i]) * len(lengths[i : i + args.batch_size]) for i in range(0, len(lengths), args.batch_size))
    dense_macs = padded_tokens * dense_macs_per_token(backend.file)
    cores = len(os.sched_getaffinity(0))

    print(f"{args.onnx_dir / 'onnx' / args.file} | {len(texts)} texts, {int(stats.token_counts.sum())} tokens "
          f"({padded_tokens} padded) | batch {args.batch_size} | {cores} cores | kernel time {seconds:.2f} s "
          f"({len(texts) / seconds:.1f} texts/s)")
    print(f"{'operator type':<28}{'ms':>10}{'share':>8}")
    for op_type, microseconds in totals.most_common():
        if microseconds / 1e6 / seconds >= 0.005:
            print(f"{op_type:<28}{microseconds / 1e3:>10.1f}{100 * microseconds / 1e6 / seconds:>7.1f}%")
    dense_seconds = totals[DENSE_OP] / 1e6
    if dense_seconds:
        rate = dense_macs / dense_seconds / 1e9
        print(f"{DENSE_OP}: {dense_macs / 1e9:.1f} G multiply-accumulates in {dense_seconds:.2f} s = "
              f"{rate:.1f} GMAC/s, {rate / cores:.1f} GMAC/s per core")


if __name__ == "__main__":
    sys.exit(main())
