"""Encode throughput by backend: e5kit torch fp32, ONNX fp32, ONNX int8 vs sentence-transformers.

Same model, same ~128-token texts (built by ``encode_throughput.prose_windows``), same CPU. Every
engine runs at every batch size given (throughput on a small CPU peaks at different batch sizes per
engine), in interleaved rounds so a burst of load from other processes hits all of them alike; the
best round is reported, and the ratios are given both at one shared batch size and best against best. sentence-transformers' own ONNX int8 backend needs ``optimum``,
which pins an older transformers than e5kit's environment; it runs in a separate Python given with
``--st-onnx-python`` (e.g. a venv with ``pip install torch==2.13.0 "sentence-transformers[onnx]"``).

    python benchmarks/encode_backends.py [--texts 256] [--batch-sizes 8 32] [--rounds 2] [--st-onnx-python /tmp/st-onnx-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from encode_throughput import best_rate, prose_windows

from e5kit.encoder.precision import cpu_description

# Runs inside the separate sentence-transformers[onnx] environment; prints texts/s.
ST_ONNX_SCRIPT = r"""
import json, shutil, sys, time
from pathlib import Path
from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
model_dir, work, texts_file, batches, rounds, config = sys.argv[1:7]
texts = json.loads(Path(texts_file).read_text())
work = Path(work)
if not list(work.glob(f"onnx/model_q*8_{config}.onnx")):
    shutil.copytree(model_dir, work, dirs_exist_ok=True)
    fp32 = SentenceTransformer(str(work), backend="onnx", device="cpu")
    fp32.save_pretrained(str(work))
    export_dynamic_quantized_onnx_model(fp32, config, str(work))
file_name = next(work.glob(f"onnx/model_q*8_{config}.onnx")).relative_to(work)
model = SentenceTransformer(str(work), backend="onnx", device="cpu", model_kwargs={"file_name": str(file_name)})
model.encode(texts[:64])
rates = {}
for batch in map(int, batches.split(",")):
    best = float("inf")
    for _ in range(int(rounds)):
        started = time.perf_counter()
        model.encode(texts, batch_size=batch)
        best = min(best, time.perf_counter() - started)
    rates[batch] = len(texts) / best
print(json.dumps({"rates": rates, "file": str(file_name)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--words", type=int, default=78, help="words per text (78 words ~ 128 tokens)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32], help="the first is the shared batch size of the same-batch ratios")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--onnx-dir", type=Path, default=Path(tempfile.gettempdir()) / "e5kit-bench-onnx", help="where the e5kit export is kept (reused)")
    parser.add_argument("--st-onnx-python", default=None, help="Python of an environment with sentence-transformers[onnx]")
    parser.add_argument("--st-quantization", default="avx2", help="sentence-transformers quantisation config (avx2, avx512, avx512_vnni, arm64)")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from e5kit.encoder import Encoder
    from e5kit.hub import resolve_model_dir
    from e5kit.encoder.onnx_backend import FP32_FILE, INT8_FILE
    from e5kit.export.onnx import export_onnx, mean_cosine

    texts = prose_windows(args.texts, args.words)
    encoder = Encoder.load(args.model, device="cpu")
    if not (args.onnx_dir / "onnx" / INT8_FILE).is_file():
        export_onnx(encoder, args.onnx_dir, quantize="int8")
    onnx_fp32 = Encoder.load(args.onnx_dir, backend="onnx", file_name=FP32_FILE)
    onnx_int8 = Encoder.load(args.onnx_dir, backend="onnx", file_name=INT8_FILE)
    st_model = SentenceTransformer(str(resolve_model_dir(args.model)), device="cpu")
    st_model.max_seq_length = encoder.max_length
    role = "passage" if "passage" in encoder.prompts else None
    engines = {
        "e5kit torch fp32": lambda batch, size: encoder.encode(batch, role=role, batch_size=size),
        "e5kit ONNX fp32": lambda batch, size: onnx_fp32.encode(batch, role=role, batch_size=size),
        "e5kit ONNX int8": lambda batch, size: onnx_int8.encode(batch, role=role, batch_size=size),
        "sentence-transformers torch fp32": lambda batch, size: st_model.encode(batch, prompt_name=role, batch_size=size),
    }
    rates = {name: dict.fromkeys(args.batch_sizes, 0.0) for name in engines}
    for _ in range(args.rounds):
        for size in args.batch_sizes:
            for name, encode in engines.items():
                rates[name][size] = max(rates[name][size], best_rate(lambda batch: encode(batch, size), texts, 1))
    reference = encoder.encode(texts, role=role)
    fidelity = {"e5kit ONNX fp32": mean_cosine(reference, onnx_fp32.encode(texts, role=role))[0],
                "e5kit ONNX int8": mean_cosine(reference, onnx_int8.encode(texts, role=role))[0]}

    st_onnx_name = f"sentence-transformers ONNX int8 ({args.st_quantization})"
    st_onnx_note = "not run (pass --st-onnx-python)"
    if args.st_onnx_python:
        with tempfile.TemporaryDirectory() as scratch:
            texts_file = Path(scratch) / "texts.json"
            texts_file.write_text(json.dumps(texts))
            work = Path(tempfile.gettempdir()) / f"st-onnx-{args.st_quantization}"
            completed = subprocess.run(
                [args.st_onnx_python, "-c", ST_ONNX_SCRIPT, str(resolve_model_dir(args.model)), str(work), str(texts_file),
                 ",".join(map(str, args.batch_sizes)), str(args.rounds), args.st_quantization],
                capture_output=True, text=True,
            )
        if completed.returncode == 0:
            measured = json.loads(completed.stdout.strip().splitlines()[-1])["rates"]
            rates[st_onnx_name] = {int(size): rate for size, rate in measured.items()}
        else:
            st_onnx_note = f"failed: {completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else completed.returncode}"

    shared = args.batch_sizes[0]
    best = {name: max(by_size.values()) for name, by_size in rates.items()}
    st_fp32 = "sentence-transformers torch fp32"
    print(cpu_description())
    print(f"model {args.model} | cpu threads {torch.get_num_threads()} | {len(texts)} texts of ~{args.words} words "
          f"(max length {encoder.max_length}) | best of {args.rounds} interleaved rounds | texts/s per batch size")
    header = "".join(f"{f'batch {size}':>11}" for size in args.batch_sizes)
    print(f"{'engine':<44}{header}{'best':>9}{'best vs ST fp32 best':>22}{'cos vs fp32':>13}")
    for name, by_size in rates.items():
        cells = "".join(f"{by_size[size]:>11.1f}" for size in args.batch_sizes)
        cosine = f"{fidelity[name]:.4f}" if name in fidelity else ""
        print(f"{name:<44}{cells}{best[name]:>9.1f}{best[name] / best[st_fp32]:>21.2f}x{cosine:>13}")
    e5kit_best = max((n for n in rates if n.startswith("e5kit")), key=best.get)
    targets = [(st_fp32, 2.5)] + ([(st_onnx_name, 1.1)] if st_onnx_name in rates else [])
    for peer, target in targets:
        print(f"e5kit best ({e5kit_best}) vs {peer} (target >= {target}x): "
              f"{rates[e5kit_best][shared] / rates[peer][shared]:.2f}x both at batch {shared}, "
              f"{best[e5kit_best] / best[peer]:.2f}x best vs best")
    if st_onnx_name not in rates:
        print(f"sentence-transformers ONNX int8: {st_onnx_note}")


if __name__ == "__main__":
    sys.exit(main())
