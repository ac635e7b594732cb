"""Threads under contention (issue 17, item 4): e5kit's backends at 1..N threads, quiet and under a
fixed synthetic background load, and ONNX Runtime with and without its spinning thread pool.

An inference runtime whose threads busy-wait for each other (ONNX Runtime's default intra-op pool
spins; OpenMP's does too) can collapse when another process takes one of the cores: a thread that
waits for a descheduled sibling burns the core the sibling needs. This prints, for every engine
and thread count, texts/s quiet and under ``background_load`` and the ratio, so a setting that
collapses shows as a ratio far below the load's share of the cores.

    python benchmarks/contention.py [--export-dir /tmp/e5kit-bench-auto] [--texts 128] [--rounds 3] [--load-processes 1]

The export folder is made with ``e5kit.export.auto.export_auto`` when missing (ONNX and OpenVINO
files of the model). Each engine loads once; engines take turns within each round.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from background_load import background_load
from encode_throughput import prose_windows

from e5kit.encoder.precision import cpu_description


def onnx_session_engine(encoder, threads: int, spinning: bool):
    """An encode function running the export's int8 graph in a session built here, with ONNX Runtime's
    intra-op spinning on or off (``session.intra_op.allow_spinning``)."""
    import numpy as np
    import onnxruntime

    from e5kit.encoder.onnx_backend import OUTPUT_NAME, SLOWER_FUSIONS

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = onnxruntime.InferenceSession(str(encoder.backend.file), options, providers=["CPUExecutionProvider"], disabled_optimizers=SLOWER_FUSIONS)

    def encode(texts: list[str], batch_size: int) -> np.ndarray:
        ids = encoder.token_ids(encoder.prepare(texts, None))
        return np.concatenate([session.run([OUTPUT_NAME], dict(zip(("input_ids", "attention_mask"), encoder.pad(ids[i : i + batch_size]))))[0]
                               for i in range(0, len(ids), batch_size)])

    return encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--export-dir", type=Path, default=Path(tempfile.gettempdir()) / "e5kit-bench-auto")
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--words", type=int, default=78, help="words per text (78 words ~ 128 tokens)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument("--load-processes", type=int, default=1)
    args = parser.parse_args()

    import torch

    from e5kit.encoder import NO_PROMPT, Encoder
    from e5kit.encoder.model_format import BACKEND_RECORD
    from e5kit.encoder.onnx_backend import INT8_FILE
    from e5kit.encoder.openvino_backend import INT8_XML_FILE, XML_FILE

    if not (args.export_dir / BACKEND_RECORD).is_file():
        from e5kit.export.auto import export_auto

        export_auto(Encoder.load(args.model, device="cpu"), args.export_dir, rounds=1)
    texts = prose_windows(args.texts, args.words)
    engines = {}

    def raw_text_engine(encoder):
        """``encode(batch, batch_size)`` of the texts as they are (no prompt: the same strings for every engine)."""
        return lambda batch, batch_size: encoder.encode(batch, role=NO_PROMPT, batch_size=batch_size)

    for threads in args.threads:
        onnx = Encoder.load(args.export_dir, backend="onnx", file_name=INT8_FILE, threads=threads)
        engines[f"onnx int8, spinning (ORT default) | {threads}"] = onnx_session_engine(onnx, threads, spinning=True)
        engines[f"onnx int8, no spinning | {threads}"] = onnx_session_engine(onnx, threads, spinning=False)
        engines[f"e5kit onnx int8 (as shipped) | {threads}"] = raw_text_engine(onnx)
        for name, dtype in ((INT8_XML_FILE, "float32"), (XML_FILE, "bfloat16")):
            openvino = Encoder.load(args.export_dir, backend="openvino", file_name=name, dtype=dtype, threads=threads)
            engines[f"e5kit openvino {openvino.dtype} ({dtype}) | {threads}"] = raw_text_engine(openvino)
    torch_encoder = Encoder.load(args.export_dir, device="cpu")

    def torch_engine(threads: int):
        def encode(batch: list[str], batch_size: int):
            torch.set_num_threads(threads)  # torch's pool is process-wide: set before each timed call
            return torch_encoder.encode(batch, role=NO_PROMPT, batch_size=batch_size)
        return encode

    for threads in args.threads:
        engines[f"e5kit torch fp32 | {threads}"] = torch_engine(threads)

    def measure() -> dict[str, float]:
        best = dict.fromkeys(engines, float("inf"))
        for encode in engines.values():
            encode(texts[:16], args.batch_size)  # warm-up: allocation, kernel selection
        for _ in range(args.rounds):
            for name, encode in engines.items():
                started = time.perf_counter()
                encode(texts, args.batch_size)
                best[name] = min(best[name], time.perf_counter() - started)
        return {name: len(texts) / seconds for name, seconds in best.items()}

    quiet = measure()
    with background_load(args.load_processes) as load:
        loaded = measure()
    print(cpu_description())
    print(f"model {args.model} | {len(texts)} texts of ~{args.words} words | batch {args.batch_size} | best of {args.rounds} interleaved rounds | texts/s")
    print(load.describe())
    print(f"{'engine':<46}{'threads':>8}{'quiet':>9}{'loaded':>9}{'loaded/quiet':>14}")
    for name in engines:
        engine, threads = name.rsplit(" | ", 1)
        print(f"{engine:<46}{threads:>8}{quiet[name]:>9.1f}{loaded[name]:>9.1f}{loaded[name] / quiet[name]:>13.2f}x")


if __name__ == "__main__":
    sys.exit(main())
