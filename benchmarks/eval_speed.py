"""Wall time of one SciFact evaluation (encode + search + metrics): e5kit vs sentence-transformers.

The same model runs through ``e5kit.evaluation.retrieval.evaluate_beir`` (FAISS exact search,
pytrec_eval) and through sentence-transformers' ``InformationRetrievalEvaluator``, on the same
queries, documents ("title text") and qrels, without any embedding cache. ``--max-docs`` keeps every
judged document plus the first others up to that many, for a quick run.

    .venv/bin/python benchmarks/eval_speed.py --model all-MiniLM-L6-v2 --max-docs 1000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "beir" / "scifact"


def subset(data_dir: Path, max_docs: int | None, folder: Path) -> Path:
    """Write a BEIR folder holding every judged document and others up to ``max_docs`` in total."""
    from e5kit.io.beir import load_beir

    corpus, queries, qrels = load_beir(data_dir)
    judged = {doc_id for docs in qrels.values() for doc_id in docs}
    kept = [d for d in corpus if d in judged]
    kept += [d for d in corpus if d not in judged][: max(0, (max_docs or len(corpus)) - len(kept))]
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as handle:
        for doc_id in kept:
            handle.write(json.dumps({"_id": doc_id, **corpus[doc_id]}) + "\n")
    with (folder / "queries.jsonl").open("w") as handle:
        for query_id in qrels:
            handle.write(json.dumps({"_id": query_id, "text": queries[query_id]}) + "\n")
    rows = "".join(f"{q}\t{d}\t{s}\n" for q, docs in qrels.items() for d, s in docs.items())
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return folder


def time_e5kit(model_name: str, data_dir: Path, batch_size: int, max_length: int | None) -> tuple[float, float]:
    from e5kit.encoder import Encoder
    from e5kit.evaluation.retrieval import evaluate_beir

    encoder = Encoder.load(model_name, device="cpu", max_length=max_length)
    started = time.perf_counter()
    metrics = evaluate_beir(encoder, data_dir, batch_size=batch_size)
    return time.perf_counter() - started, metrics["ndcg_at_10"]


def time_sentence_transformers(model_name: str, data_dir: Path, batch_size: int, max_length: int | None) -> tuple[float, float]:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from e5kit.hub import resolve_model_dir
    from e5kit.io.beir import document_text, load_beir

    corpus, queries, qrels = load_beir(data_dir)
    model = SentenceTransformer(str(resolve_model_dir(model_name)), device="cpu")
    if max_length:
        model.max_seq_length = max_length
    prompts = model.prompts or {}
    evaluator = InformationRetrievalEvaluator(
        queries={q: queries[q] for q in qrels},
        corpus={d: document_text(doc) for d, doc in corpus.items()},
        relevant_docs={q: {d for d, s in docs.items() if s > 0} for q, docs in qrels.items()},
        batch_size=batch_size,
        write_csv=False,
        query_prompt=prompts.get("query") or None,
        corpus_prompt=prompts.get("passage") or None,
    )
    started = time.perf_counter()
    scores = evaluator(model)
    ndcg = next(value for key, value in scores.items() if key.endswith("cosine_ndcg@10"))
    return time.perf_counter() - started, ndcg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="Model directory or bundled name.")
    parser.add_argument("--data", type=Path, default=SCIFACT, help="BEIR folder (default: ../shared SciFact).")
    parser.add_argument("--max-docs", type=int, default=None, help="Keep judged docs plus others up to this many.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=None, help="Token limit (default: the model's own).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = subset(args.data, args.max_docs, Path(tmp) / "beir") if args.max_docs else args.data
        ours = time_e5kit(args.model, data_dir, args.batch_size, args.max_length)
        theirs = time_sentence_transformers(args.model, data_dir, args.batch_size, args.max_length)
    print(f"model {args.model}, data {args.data.name}, documents: {args.max_docs or 'all'}")
    print("| engine | wall s (encode + search + metrics) | nDCG@10 |\n|---|---|---|")
    print(f"| e5kit evaluate_beir | {ours[0]:.1f} | {100 * ours[1]:.2f} |")
    print(f"| sentence-transformers InformationRetrievalEvaluator | {theirs[0]:.1f} | {100 * theirs[1]:.2f} |")
    print(f"| speed-up | {theirs[0] / ours[0]:.2f}x | |")


if __name__ == "__main__":
    main()
