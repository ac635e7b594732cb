"""Curation throughput: pairs/s per core through the heuristic stage (read, clean, length, language,
decontamination, MinHash, dedup, write), local engine on 1 worker, and Ray Data on 2 workers when installed.

Input: the real samples in ../shared/data/raw when present, else the standard library's docs.

    python benchmarks/curate_throughput.py [--workers 1] [--no-ray]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

SHARED_RAW = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw"


def sources() -> list[dict]:
    if SHARED_RAW.is_dir():
        return [
            {"type": "stackexchange", "paths": [str(SHARED_RAW / "stackexchange" / "question_answer_pairs.jsonl.gz")]},
            {"type": "arxiv", "paths": [str(SHARED_RAW / "arxiv" / "title_abstract.jsonl.gz")]},
            {"type": "news", "paths": [str(SHARED_RAW / "news" / "ag_news_test.jsonl.gz")]},
            {"type": "wikipedia", "paths": [str(SHARED_RAW / "wikipedia" / "wikitext2_test_paragraphs.jsonl.gz")]},
        ]
    return [{"type": "pydoc"}]


def run(engine: str, workers: int) -> tuple[float, dict]:
    from e5kit.data.curation import CurateConfig, curate

    output = Path(tempfile.mkdtemp(prefix="curate-bench-"))
    try:
        report = curate(CurateConfig.model_validate({"output_dir": str(output), "engine": engine, "workers": workers, "sources": sources()}))
    finally:
        shutil.rmtree(output, ignore_errors=True)
    return report["elapsed_s"], report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()

    elapsed, report = run("local", args.workers)
    units = report["totals"]["read"]
    print(f"input: {'../shared/data/raw samples' if SHARED_RAW.is_dir() else 'stdlib docs'}; {report['shards']} shards; "
          f"{units:,} units read, {report['totals']['kept']:,} pairs kept")
    print(f"local engine, {args.workers} worker(s): {elapsed:.1f} s -> {units / elapsed / args.workers:,.0f} units/s per core "
          f"({units / elapsed:,.0f} units/s total)")
    if args.no_ray:
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        print("ray: not installed (pip install 'e5kit[ray]'); Ray measurement skipped")
        return
    elapsed, report = run("ray", 2)
    print(f"ray engine, 2 workers: {elapsed:.1f} s (includes Ray start-up) -> {units / elapsed / 2:,.0f} units/s per core "
          f"({units / elapsed:,.0f} units/s total)")


if __name__ == "__main__":
    main()
