"""Server throughput and latency under a bounded loopback load: e5kit serve vs a minimal FastAPI app.

The baseline is what people write first: a FastAPI endpoint that calls ``SentenceTransformer.encode``
on each request's texts. Each server runs alone in its own process on a free loopback port; the
same fixed number of requests (one ~128-token text each, ``--concurrency`` in flight) is sent to
each; throughput and p50/p99 latency are printed side by side.

    python benchmarks/serve_load.py [--requests 400] [--concurrency 16] [--onnx-dir /tmp/e5kit-bench-onnx]
"""


import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from encode_throughput import prose_windows


def baseline_app(model: str):
    """A minimal FastAPI app that calls SentenceTransformer.encode per request."""
    from fastapi import FastAPI
    from pydantic import BaseModel
    from sentence_transformers import SentenceTransformer

    from e5kit.hub import resolve_model_dir

    st_model = SentenceTransformer(str(resolve_model_dir(model)), device="cpu")
    app = FastAPI()

    class Request(BaseModel):
        input: list[str]

    @app.post("/v1/embeddings")
    def embeddings(request: Request):
        vectors = st_model.encode(request.input)
        return {"data": [{"index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]}

    @app.get("/health")
    def health():
        return {"status": "ok"}

    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], port: int) -> subprocess.Popen:
    import httpx

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server {' '.join(command)} exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"server {' '.join(command)} did not start")


async def load(port: int, texts: list[str], concurrency: int) -> tuple[float, list[float], int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300, limits=httpx.Limits(max_connections=concurrency)) as http:
        await http.post("/v1/embeddings", json={"input": texts[:4]})  # warm-up

        async def one(text: str) -> None:
            nonlocal errors
            async with semaphore:
                started = time.perf_counter()
                response = await http.post("/v1/embeddings", json={"input": [text]})
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(one(text) for text in texts))
        elapsed = time.perf_counter() - started
    return len(texts) / elapsed, latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--words", type=int, default=78)
    parser.add_argument("--onnx-dir", type=Path, default=None, help="an `e5kit export onnx` directory to also serve with --backend onnx")
    parser.add_argument("--baseline-server", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.baseline_server is not None:
        import uvicorn

        uvicorn.run(baseline_app(args.model), host="127.0.0.1", port=args.baseline_server, log_level="warning")
        return

    texts = prose_windows(args.requests, args.words)
    e5kit = str(Path(sys.executable).with_name("e5kit"))
    servers = {"e5kit serve (torch fp32)": lambda port: [e5kit, "serve", "--model", args.model, "--port", str(port)]}
    if args.onnx_dir is not None:
        servers["e5kit serve (ONNX int8)"] = lambda port: [e5kit, "serve", "--model", str(args.onnx_dir), "--backend", "onnx", "--port", str(port)]
    servers["FastAPI + SentenceTransformer.encode"] = lambda port: [sys.executable, __file__, "--model", args.model, "--baseline-server", str(port)]

    results = {}
    for name, command in servers.items():
        port = free_port()
        process = start(command(port), port)
        try:
            results[name] = asyncio.run(load(port, texts, args.concurrency))
        finally:
            process.terminate()
            process.wait(timeout=30)

    print(f"model {args.model} | {args.requests} requests of 1 text (~{args.words} words) | concurrency {args.concurrency} | cpus {os.cpu_count()}")
    baseline = results["FastAPI + SentenceTransformer.encode"][0]
    print(f"{'server':<40}{'req/s':>9}{'vs baseline':>13}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, (rate, latencies, errors) in results.items():
        p50, p99 = np.percentile(latencies, [50, 99]) * 1000
        print(f"{name:<40}{rate:>9.1f}{rate / baseline:>12.2f}x{p50:>9.0f}{p99:>9.0f}{errors:>8}")


if __name__ == "__main__":
    main()
