"""One embedding engine in a process of its own, driven over stdin/stdout: the worker side of ``encode_backends.py``.

Both Pythons run this file, so every engine answers the same protocol: e5kit's environment for the
family "e5kit" (the engine is built by ``encode_backends.load_e5kit_engine``) and the peer
environment for the family "peer" (``peer_models.load_peer``, which does not import e5kit). The
worker loads its engine once, reads the texts once, then serves commands, one JSON object a line:

    worker -> {"ready": true, "description": "..."}  when loaded, or {"error": "..."} and it exits
    {"cmd": "time", "batch": B, "repeats": R}  -> {"rate": texts/s}  best of R passes over all the
                                                  texts at batch size B, after one untimed batch
    {"cmd": "embed", "batch": B, "out": PATH}  -> {"path": PATH}     every text's embedding, float32 .npy
    {"cmd": "quit"}, or the end of stdin       -> exits
    a command that fails                       -> {"error": "..."}

Replies go to a copy of the original stdout; file descriptor 1 itself is pointed at stderr, so what
the libraries print cannot corrupt the protocol. The caller sets the thread environment
(``OMP_NUM_THREADS`` and the like) before the worker starts; ``--threads`` goes to the engine.

    python benchmarks/bench_worker.py --family peer --engine torch-fp32 --model-dir DIR --cache-dir DIR \\
        --threads 2 --texts texts.json [--calibration calibration.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: An engine as the worker drives it: (texts, batch_size) -> (n, dim) float32 embeddings.
Encode = Callable[[list[str], int], Any]


def best_rate(encode: Encode, texts: list[str], batch: int, repeats: int) -> float:
    """Texts per second of the best of ``repeats`` passes over ``texts`` at ``batch``, after one untimed batch."""
    encode(texts[:batch], batch)  # warm-up: thread pools wake, kernels for this shape are picked
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        encode(texts, batch)
        best = min(best, time.perf_counter() - started)
    return len(texts) / best


def serve(encode: Encode, texts: list[str], replies, commands=sys.stdin) -> None:
    """Answer ``commands`` (JSON lines) on ``replies`` until "quit" or the end of input."""
    import numpy as np

    def reply(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    for line in commands:
        if not line.strip():
            continue
        command = json.loads(line)
        try:
            if command["cmd"] == "quit":
                return
            if command["cmd"] == "time":
                reply({"rate": best_rate(encode, texts, int(command["batch"]), int(command.get("repeats", 1)))})
            elif command["cmd"] == "embed":
                np.save(command["out"], np.asarray(encode(texts, int(command["batch"])), dtype=np.float32))
                reply({"path": command["out"]})
            else:
                reply({"error": f"unknown command {command['cmd']!r}"})
        except Exception as error:  # one failed command is reported; the engine stays up for the next
            traceback.print_exc()
            reply({"error": f"{type(error).__name__}: {error}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("e5kit", "peer"), required=True)
    parser.add_argument("--engine", required=True, help="e5kit: a label of encode_backends.E5KIT_ENGINES; peer: one of peer_models.PEER_ENGINES")
    parser.add_argument("--model-dir", required=True, help="e5kit: a model name or folder; peer: a local sentence-transformers folder")
    parser.add_argument("--cache-dir", type=Path, required=True, help="where exports are made once and reused")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--texts", type=Path, required=True, help="JSON list of the texts to encode")
    parser.add_argument("--calibration", type=Path, default=None, help="JSON list of int8 calibration texts (peers)")
    args = parser.parse_args()

    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints go to stderr, never into the replies
    texts = json.loads(args.texts.read_text(encoding="utf-8"))
    try:
        if args.family == "e5kit":
            from encode_backends import load_e5kit_engine

            encode, description = load_e5kit_engine(args.engine, args.model_dir, args.cache_dir, args.threads)
        else:
            from peer_models import load_peer

            calibration = json.loads(args.calibration.read_text(encoding="utf-8")) if args.calibration else []
            encode, description = load_peer(args.engine, args.model_dir, args.cache_dir, calibration, args.threads)
    except Exception as error:
        traceback.print_exc()
        replies.write(json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n")
        replies.flush()
        sys.exit(1)
    replies.write(json.dumps({"ready": True, "description": description}) + "\n")
    replies.flush()
    serve(encode, texts, replies)


if __name__ == "__main__":
    main()
