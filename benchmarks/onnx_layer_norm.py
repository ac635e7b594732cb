"""ONNX Runtime CPU kernels for a residual layer norm: fused SkipLayerNormalization vs Add + LayerNormalization.

Why e5kit's ONNX export keeps the two apart (``e5kit.export.onnx.fuse_operators``): both graphs
compute ``LayerNorm(x + skip)`` on the same random activations; the script checks they agree and
prints the time per call of each, side by side, for every thread count given.

    python benchmarks/onnx_layer_norm.py [--rows 960] [--hidden 384] [--threads 1 2] [--calls 500]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def residual_layer_norm_graph(fused: bool, rows: int, hidden: int) -> bytes:
    """A one-node (fused) or two-node (Add, LayerNormalization) graph of LayerNorm(x + skip)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(1.0, 0.1, hidden).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.normal(0.0, 0.1, hidden).astype(np.float32), "beta"),
    ]
    if fused:
        nodes = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"], domain="com.microsoft", epsilon=1e-12)]
    else:
        nodes = [
            helper.make_node("Add", ["x", "skip"], ["sum"]),
            helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12),
        ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [rows, hidden]) for name in ("x", "skip")]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, hidden])
    graph = helper.make_graph(nodes, "residual_layer_norm", inputs, [output], weights)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=opsets)).SerializeToString()


def time_per_call(session, feeds: dict, calls: int) -> float:
    """Best-of-3 mean seconds per ``session.run``."""
    for _ in range(10):
        session.run(None, feeds)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            session.run(None, feeds)
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=960, help="tokens in a batch (960 = 8 texts of 120 tokens)")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()

    import onnxruntime

    rng = np.random.default_rng(1)
    feeds = {name: rng.normal(size=(args.rows, args.hidden)).astype(np.float32) for name in ("x", "skip")}
    print(f"onnxruntime {onnxruntime.__version__} | LayerNorm(x + skip) on ({args.rows}, {args.hidden}) float32 | ms per call, best of 3 x {args.calls}")
    print(f"{'threads':>8}{'SkipLayerNormalization':>25}{'Add + LayerNormalization':>27}{'fused / unfused':>18}")
    for threads in args.threads:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        # Load-time fusion would turn the two-node graph back into SkipLayerNormalization.
        sessions = {
            fused: onnxruntime.InferenceSession(
                residual_layer_norm_graph(fused, args.rows, args.hidden), options,
                providers=["CPUExecutionProvider"], disabled_optimizers=["SkipLayerNormFusion"],
            )
            for fused in (True, False)
        }
        outputs = {fused: session.run(None, feeds)[0] for fused, session in sessions.items()}
        np.testing.assert_allclose(outputs[True], outputs[False], atol=1e-4)
        seconds = {fused: time_per_call(session, feeds, args.calls) for fused, session in sessions.items()}
        print(f"{threads:>8}{seconds[True] * 1e3:>25.3f}{seconds[False] * 1e3:>27.3f}{seconds[True] / seconds[False]:>17.2f}x")


if __name__ == "__main__":
    sys.exit(main())
