"""Index build at scale: docs/s, peak RSS and size on disk of ``VectorIndex.add`` over N synthetic passages.

EMBEDDING IS STUBBED. No model runs: a stub encoder returns seeded random unit vectors of ``--dim``
at almost no cost (1M passages through a real transformer would take hours on a few CPU cores, and
embedding throughput is ``benchmarks/encode_throughput.py``'s subject). Everything else is the real
index path, ``VectorIndex.create(...).add(corpus_documents(corpus.jsonl), segment_chunks=..., embedding=StoreEmbedding(...))``:

- reading the BEIR ``corpus.jsonl`` (``e5kit.io.beir.iter_corpus``), a segment of ``--segment-chunks``
  chunks at a time;
- chunking with the model's real fast tokenizer (``--model``'s tokenizer, prompts and max length;
  its weights are never loaded), and the truncation count that re-tokenises every chunk;
- the on-disk embedding stores (``e5kit.retrieval.engines.embed_texts``, one per segment: the texts'
  fingerprint, blocks of ``--block-rows`` written whole);
- FAISS: training (ivfpq) and the fill block by block, the ``vectors.faiss`` rewrites;
- the SQLite docstore (documents, chunks, the vector journal).

So docs/s here is an upper bound on a real build (add the encoder's time per chunk), and peak RSS is
the index path's own memory, which should follow the segment and block sizes rather than N except for
what the path holds on purpose (a flat or HNSW index's vectors in FAISS, the ids seen in the add).

The stub has exactly what the index path reads from an ``Encoder``: ``tokenizer``, ``max_length``,
``prompts`` / ``prompt_for``, ``prepare`` / ``token_ids`` (the real ``Encoder`` methods, on the real
tokenizer), ``dimension``, ``normalize``, ``similarity_fn_name``, ``fingerprint()`` and ``encode``.

Each size runs in a child process of its own, so its peak RSS (``ru_maxrss``) is its own; the child
writes its corpus (streamed from a seeded RNG: ``--words`` words per passage from a small English
vocabulary, a short title) into a temporary folder first, and that is timed apart from the build.
The parent prints one row per size, a split of the build time by phase, and a last line comparing
peak RSS across the sizes.

    python benchmarks/index_scale.py [--docs 100000 1000000] [--index-type flat] [--dim 384] [--block-rows 65536] [--segment-chunks N]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

# A small vocabulary of common English words: the real tokenizer sees ordinary text (about a token a word).
VOCABULARY = """
the of and to in is was for on that with as by at from his her they this which be are had not have were
one all but new also after first two can more when time into who their other has year years over only
such most some between later used may during under three made since world city before these while many
state known national where team century age life government war part being people would through high
group school system series water house music film game early found north south east west river area
large small public album history number major began line season second work play several power form
family name role land town county village station church market energy light field court member union
council market report study theory design model network data method result process value level change
order policy health centre library museum island coast valley mountain lake forest road bridge port
""".split()

SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi")  # a few rarer words: split into several tokens


def rss_mib(field: str = "VmRSS") -> float:
    """This process's resident (``VmRSS``) or peak resident (``VmHWM``) memory in MiB; 0 where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def write_corpus(path: Path, docs: int, words: tuple[int, int], seed: int) -> None:
    """A BEIR corpus.jsonl of ``docs`` synthetic passages, streamed (a few thousand in memory at a time)."""
    vocabulary = np.array(VOCABULARY + [a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES[:2]])
    rng = np.random.default_rng(seed)
    batch = 4096
    with open(path, "w", encoding="utf-8") as handle:
        for start in range(0, docs, batch):
            count = min(batch, docs - start)
            lengths = rng.integers(words[0], words[1] + 1, size=count)
            picks = rng.integers(0, len(vocabulary), size=int(lengths.sum()))
            titles = rng.integers(0, len(vocabulary), size=(count, 4))
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            lines = []
            for row in range(count):
                text = " ".join(vocabulary[picks[offsets[row] : offsets[row + 1]]]).capitalize() + "."
                title = " ".join(vocabulary[titles[row]]).title()
                lines.append(json.dumps({"_id": f"doc{start + row:08d}", "title": title, "text": text}))
            handle.write("\n".join(lines) + "\n")


class StubEncoder:
    """What ``VectorIndex`` reads from an ``Encoder``: the real tokenizer, prompts and max length, but
    ``encode`` returns seeded random unit vectors (no model). ``encode_seconds`` is the stub's own time."""

    def __init__(self, model: str, dimension: int, max_length: int | None, seed: int) -> None:
        from transformers import AutoTokenizer

        from e5kit.encoder import model_format
        from e5kit.encoder.encoder import Encoder, EncodeStats
        from e5kit.hub import resolve_model_dir

        for name in ("prompt_for", "prepare", "_prepare", "token_ids"):  # the real methods (imported here: the parent stays light)
            setattr(self, name, types.MethodType(getattr(Encoder, name), self))
        spec = model_format.read_model_dir(resolve_model_dir(model))
        self.tokenizer = AutoTokenizer.from_pretrained(spec.transformer_dir)
        self.prompts = model_format.canonical_prompts({name: text for name, text in spec.prompts.items() if text})
        self.max_length = max_length or spec.max_length or 512
        self.similarity_fn_name = "cosine"
        self.last_stats = EncodeStats()
        self.model = model
        self._dimension = dimension
        self._seed = seed
        self._calls = 0
        self.encode_seconds = 0.0

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def normalize(self) -> bool:
        return True

    def fingerprint(self) -> str:
        return f"stub-random-unit-{self.model}-{self._dimension}-{self._seed}"

    def encode(self, texts, role=None, *, batch_size=None, normalize=None, show_progress=None) -> np.ndarray:
        started = time.perf_counter()
        self.prompt_for(role)  # an unknown role fails as it would on the real encoder
        vectors = np.random.default_rng([self._seed, self._calls]).standard_normal((len(texts), self._dimension), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        self._calls += 1
        self.encode_seconds += time.perf_counter() - started
        return vectors


def timed_phases() -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Wrap the index path's steps (in this child only): (wall seconds per phase, added up; this process's
    peak RSS (``VmHWM``, MiB) when the phase last returned, which shows the step that raised the peak;
    calls per phase)."""
    from e5kit.serving import index as index_module

    seconds: dict[str, float] = {}
    peak_after: dict[str, float] = {}
    calls: dict[str, int] = {}

    def record(phase: str, started: float) -> None:
        seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - started
        peak_after[phase] = rss_mib("VmHWM")

    def wrap(owner, name: str, phase: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            calls[phase] = calls.get(phase, 0) + 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                record(phase, started)

        setattr(owner, name, timed)

    def wrap_generator(owner, name: str, phase: str) -> None:
        # A generator's work happens at each next(), interleaved with the add: time every step.
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            steps = original(*args, **kwargs)
            while True:
                started = time.perf_counter()
                try:
                    item = next(steps)
                except StopIteration:
                    return
                finally:
                    record(phase, started)
                yield item

        setattr(owner, name, timed)

    wrap_generator(index_module, "chunked_documents", "read + chunk")  # read corpus.jsonl + tokenise + window spans
    wrap(index_module, "embed_texts", "store")  # fingerprint + stub encode + block writes, once per segment
    wrap(index_module, "_truncated", "truncation count")  # prefix + re-tokenise every chunk
    wrap(index_module.VectorIndex, "_training_sample", "train sample")
    wrap(index_module.VectorIndex, "_train_if_needed", "train")
    wrap(index_module.VectorIndex, "_add_block", "commit")  # SQLite rows + journal + FAISS add (+ rewrites)
    wrap(index_module.VectorIndex, "_write_vectors", "vectors.faiss writes")
    return seconds, peak_after, calls


def folder_mib(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


def run_one(args: argparse.Namespace, docs: int, workdir: Path) -> dict:
    from e5kit.retrieval.engines import StoreEmbedding
    from e5kit.serving.index import IndexSettings, VectorIndex, corpus_documents

    encoder = StubEncoder(args.model, args.dim, args.max_length, args.seed)
    phases, peak_after, calls = timed_phases()
    imports_rss = rss_mib()
    corpus = workdir / "corpus.jsonl"
    started = time.perf_counter()
    write_corpus(corpus, docs, tuple(args.words), args.seed)
    corpus_s = time.perf_counter() - started

    settings = {"kind": args.index_type}
    if args.ivf_lists is not None:
        settings["ivf_lists"] = args.ivf_lists
    started = time.perf_counter()
    index = VectorIndex.create(workdir / "index", encoder, IndexSettings(**settings), model=f"{args.model} (stub embedding)", backend="stub")
    segments = {} if args.segment_chunks is None else {"segment_chunks": args.segment_chunks}
    report = index.add(corpus_documents(corpus), embedding=StoreEmbedding(block_rows=args.block_rows), **segments)
    chunks = index.num_chunks
    index.close()
    seconds = time.perf_counter() - started
    phases["stub encode"] = encoder.encode_seconds
    return {
        "docs": docs, "chunks": chunks, "added": report.added, "truncated": report.truncated, "window": index.stored.window,
        "corpus_mib": corpus.stat().st_size / 2**20, "corpus_s": corpus_s, "build_s": seconds, "docs_per_s": docs / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "hwm_mib": rss_mib("VmHWM"),
        "imports_rss_mib": imports_rss, "index_mib": folder_mib(workdir / "index"), "phases": phases,
        "peak_after": peak_after, "segments": calls.get("store", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000], help="corpus sizes N to run, each in its own child")
    parser.add_argument("--index-type", choices=["flat", "ivfpq", "hnsw"], default="flat", help="IndexSettings.kind")
    parser.add_argument("--ivf-lists", type=int, default=None, help="ivfpq coarse lists (default: IndexSettings' own)")
    parser.add_argument("--dim", type=int, default=384, help="width of the stub's vectors")
    parser.add_argument("--block-rows", type=int, default=65_536, help="StoreEmbedding.block_rows: chunks per embedding-store block")
    parser.add_argument("--segment-chunks", type=int, default=None, help="VectorIndex.add's segment_chunks (default: its own)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="whose tokenizer, prompts and max length chunk the text (weights not loaded)")
    parser.add_argument("--max-length", type=int, default=None, help="token limit (default: the model's; E5 models use 512)")
    parser.add_argument("--words", type=int, nargs=2, default=[60, 120], metavar=("MIN", "MAX"), help="words per passage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one size, JSON out
    args = parser.parse_args()

    if args.one:
        with tempfile.TemporaryDirectory(prefix="index-scale-") as workdir:
            result = run_one(args, args.docs[0], Path(workdir))
        print(json.dumps(result))
        return

    import faiss

    from e5kit.encoder.precision import cpu_description

    print(cpu_description())
    print(f"faiss {faiss.__version__}, omp threads {faiss.omp_get_max_threads()}, {os.cpu_count()} CPUs; index {args.index_type}, "
          f"d={args.dim}, store blocks of {args.block_rows:,} chunks, segments of {args.segment_chunks or 'the default'} chunks; "
          f"tokenizer {args.model}; {args.words[0]}-{args.words[1]} words a passage")
    print("EMBEDDING IS STUBBED (seeded random unit vectors, no model): measured are corpus reading, chunking, the on-disk "
          "embedding store, FAISS train/add and the SQLite docstore; a real build adds the encoder's time per chunk.")
    print("| docs | chunks | build s | docs/s | chunks/s | peak RSS MiB | RSS after imports MiB | index on disk MiB | corpus MiB (written in s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for docs in args.docs:
        command = [sys.executable, __file__, "--one", "--docs", str(docs), "--index-type", args.index_type, "--dim", str(args.dim),
                   "--block-rows", str(args.block_rows), "--model", args.model, "--words", *map(str, args.words), "--seed", str(args.seed)]
        if args.max_length is not None:
            command += ["--max-length", str(args.max_length)]
        if args.ivf_lists is not None:
            command += ["--ivf-lists", str(args.ivf_lists)]
        if args.segment_chunks is not None:
            command += ["--segment-chunks", str(args.segment_chunks)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {docs:,} | failed: exit {done.returncode} (killed for memory?) {done.stderr.strip()[-400:]!r} |||||||||", flush=True)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"| {docs:,} | {result['chunks']:,} | {result['build_s']:,.1f} | {result['docs_per_s']:,.0f} | {result['chunks'] / result['build_s']:,.0f} | "
              f"{result['peak_rss_mib']:,.0f} | {result['imports_rss_mib']:,.0f} | {result['index_mib']:,.1f} | "
              f"{result['corpus_mib']:,.1f} ({result['corpus_s']:.1f}) |", flush=True)
    for result in results:
        phases = ", ".join(f"{name} {value:,.1f}" for name, value in result["phases"].items())
        peaks = ", ".join(f"{name} {value:,.0f}" for name, value in result["peak_after"].items())
        print(f"{result['docs']:,} docs in {result['segments']} segments (window {result['window']} tokens, {result['truncated']:,} chunks truncated): seconds by phase "
              f"(commit includes the vectors.faiss rewrites made during the add): {phases}")
        print(f"{result['docs']:,} docs: peak RSS (VmHWM, MiB) when each phase last returned: {peaks}; at the end {result['hwm_mib']:,.0f}")
    if len(results) > 1:
        small, large = min(results, key=lambda r: r["docs"]), max(results, key=lambda r: r["docs"])
        print(f"peak RSS {small['peak_rss_mib']:,.0f} MiB at {small['docs']:,} docs -> {large['peak_rss_mib']:,.0f} MiB at {large['docs']:,} docs "
              f"({large['docs'] / small['docs']:.0f}x docs, {large['peak_rss_mib'] / small['peak_rss_mib']:.2f}x memory; "
              f"above the imports: {(large['peak_rss_mib'] - large['imports_rss_mib']) / max(small['peak_rss_mib'] - small['imports_rss_mib'], 1):.2f}x)")


if __name__ == "__main__":
    main()
