"""Hard-negative mining throughput (queries/s) on SciFact train: e5kit BM25 and dense vs sentence-transformers.

Both libraries mine 7 negatives per query from ranks 0-100 with the "below the positive" margin
(absolute margin 0) for the 809 SciFact train queries over the 5,183-document corpus, embedding
with the same model, batch size and token limit. sentence-transformers' ``mine_hard_negatives``
is dense only (it has no BM25), so BM25 is printed beside its dense figure. Timings include
embedding the corpus and the queries, and writing/returning the result.

    python benchmarks/mining_throughput.py [--model ../shared/models/paraphrase-MiniLM-L3-v2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED / "data" / "beir" / "scifact"))
    parser.add_argument("--model", default=str(SHARED / "models" / "paraphrase-MiniLM-L3-v2"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--depth", type=int, default=100)
    args = parser.parse_args()

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives as st_mine

    from e5kit.data.mining import MiningConfig, mine_hard_negatives
    from e5kit.encoder import Encoder
    from e5kit.io.beir import document_text, load_beir

    data = Path(args.data)
    files = (data / "queries.jsonl.gz", data / "corpus.jsonl.gz", data / "qrels" / "train.tsv")
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, model in (("bm25", "bm25"), ("dense", args.model)):
            encoder = None if model == "bm25" else Encoder.load(model, device="cpu")
            config = MiningConfig(model=model, negatives=args.negatives, depth=args.depth, margin=0.0, batch_size=args.batch_size)
            started = time.perf_counter()
            report = mine_hard_negatives(config, *files, Path(folder) / f"{name}.jsonl", encoder=encoder)
            rates[f"e5kit {name}"] = report["queries"] / (time.perf_counter() - started)
        queries_count = report["queries"]

    corpus, queries, qrels = load_beir(data, "train")
    anchors, positives = [], []
    for query_id, judged in qrels.items():
        for doc_id, score in judged.items():
            if score > 0:
                anchors.append(queries[query_id])
                positives.append(document_text(corpus[doc_id]))
    st_model = SentenceTransformer(args.model, device="cpu")
    started = time.perf_counter()
    st_mine(
        Dataset.from_dict({"query": anchors, "passage": positives}),
        st_model,
        corpus=[document_text(document) for document in corpus.values()],
        range_max=args.depth,
        absolute_margin=0.0,
        num_negatives=args.negatives,
        sampling_strategy="top",
        batch_size=args.batch_size,
        use_faiss=True,
        verbose=False,
    )
    rates["sentence-transformers dense"] = queries_count / (time.perf_counter() - started)

    reference = rates["sentence-transformers dense"]
    print(f"SciFact train: {queries_count} queries, {len(corpus)} documents, {args.negatives} negatives from ranks 0-{args.depth}")
    print(f"{'miner':32s} {'queries/s':>10s} {'vs ST dense':>12s}")
    for name, rate in rates.items():
        print(f"{name:32s} {rate:10.1f} {rate / reference:11.2f}x")


if __name__ == "__main__":
    main()
