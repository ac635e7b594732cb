"""int8 fidelity on AVX2 kernels, measured on a CPU with VNNI: each OpenVINO int8 IR's mean cosine to
torch fp32, on this CPU's kernels and with OpenVINO's CPU plugin capped to AVX2's (``ONEDNN_MAX_CPU_ISA``).

Without VNNI, uint8 x int8 kernels sum pairs of products in int16, which saturates with 8-bit weights;
e5kit's exports keep weights to 7 bits there (``e5kit.encoder.precision.int8_reduce_range``). Capping
the ISA runs the AVX2 kernels here, so both ranges can be compared on one machine. Only fidelity is
measured: speed under the cap says nothing about a real AVX2 CPU.

    e5kit export openvino --model all-MiniLM-L6-v2 --out DIR8 --full-int8 --no-reduce-range
    e5kit export openvino --model all-MiniLM-L6-v2 --out DIR7 --full-int8 --reduce-range
    python benchmarks/int8_isa_cap.py --model all-MiniLM-L6-v2 DIR8 DIR7
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CAPS = ("", "AVX2")  # this CPU's kernels, then AVX2's


def measure(model: str, folders: list[str], texts: int) -> list[dict]:
    """Each int8 IR of ``folders`` at float32 inference: mean and least cosine to ``model``'s torch fp32 embeddings."""
    from e5kit.encoder import Encoder
    from e5kit.encoder.openvino_backend import INT8_SECTIONS, MANIFEST, OPENVINO_FOLDER
    from e5kit.encoder.precision import mean_cosine
    from e5kit.export.check import check_texts

    sample = check_texts(texts)
    reference = Encoder.load(model).encode(sample, role="passage", batch_size=32)
    rows = []
    for folder in folders:
        manifest = json.loads((Path(folder) / OPENVINO_FOLDER / MANIFEST).read_text())
        for name, section in INT8_SECTIONS.items():
            if name in manifest["files"]:
                got = Encoder.load(folder, backend="openvino", file_name=name, dtype="float32").encode(sample, role="passage", batch_size=32)
                mean, least = mean_cosine(reference, got)
                rows.append({"folder": folder, "file": name, "reduce_range": manifest[section].get("reduce_range", False), "mean": mean, "min": least})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="the source model, for torch fp32 reference embeddings")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("folders", nargs="+", help="e5kit export openvino folders")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.model, args.folders, args.texts)))
        return
    from e5kit.encoder.precision import cpu_description

    print(f"{cpu_description()} | mean (least) cosine to torch fp32 over {args.texts} texts, float32 inference")
    results = {}
    for cap in CAPS:
        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"} | ({"ONEDNN_MAX_CPU_ISA": cap} if cap else {})
        command = [sys.executable, __file__, "--worker", "--model", args.model, "--texts", str(args.texts), *args.folders]
        output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        results[cap] = json.loads(output.strip().splitlines()[-1])
    print(f"{'IR':60} {'weights':>7} {'this CPU':>17} {'capped to AVX2':>17}")
    for native, capped in zip(results[""], results["AVX2"]):
        label = f"{Path(native['folder']).name}/{native['file']}"
        bits = "7-bit" if native["reduce_range"] else "8-bit"
        print(f"{label:60} {bits:>7} {native['mean']:>8.5f} ({native['min']:.5f}) {capped['mean']:>8.5f} ({capped['min']:.5f})")


if __name__ == "__main__":
    main()
