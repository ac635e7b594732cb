"""Fine-tuning throughput (query groups/s): e5kit's finetune stage vs sentence-transformers' trainer.

Same model, data, batch, token limit and step count: SciFact train queries with BM25-mined hard
negatives (1 positive + ``--negatives`` negatives per query), InfoNCE over in-batch and hard
negatives (no teacher scores, so e5kit's loss is InfoNCE alone: the same objective as
sentence-transformers' MultipleNegativesRankingLoss). sentence-transformers runs both its plain
MultipleNegativesRankingLoss and its GradCache loss (CachedMultipleNegativesRankingLoss with
mini-batches of ``--chunk-size``, e5kit's chunk size). Each run is timed over its training steps
only (after model and data loading); the figure is groups (queries) per second.

    python benchmarks/finetune_throughput.py [--steps 6] [--batch-size 32] [--negatives 3] [--max-length 128]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def mined_groups(data: Path, folder: Path, negatives: int) -> list[dict]:
    from e5kit.data.mining import MiningConfig, mine_hard_negatives

    out = folder / "mined.jsonl"
    config = MiningConfig(negatives=negatives, depth=100, margin=0.0)
    mine_hard_negatives(config, data / "queries.jsonl.gz", data / "corpus.jsonl.gz", data / "qrels" / "train.tsv", out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return [{"query": r["query"], "pos": r["pos"][:1], "neg": r["neg"][:negatives]} for r in records]


def e5kit_rate(model: str, groups_file: Path, folder: Path, args) -> float:
    from e5kit.training.finetune import FinetuneConfig, finetuner

    config = FinetuneConfig(
        init_model=model,
        output_dir=folder / "e5kit-run",
        data={"datasets": [{"name": "scifact", "format": "flag", "path": str(groups_file)}]},
        max_steps=args.steps,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        hard_negatives=args.negatives,
        query_max_length=args.max_length,
        passage_max_length=args.max_length,
        warmup_steps=1,
        checkpoint_every=0,
        mask_false_negatives=False,
        device="cpu",
    )
    trainer = finetuner(config, show_progress=False)
    started = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
    return args.steps * args.batch_size / (time.perf_counter() - started)


def st_rate(model: str, groups: list[dict], folder: Path, args, cached: bool) -> float:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss

    st_model = SentenceTransformer(model, device="cpu")
    st_model.max_seq_length = args.max_length
    columns = {"anchor": [g["query"] for g in groups], "positive": [g["pos"][0] for g in groups]}
    for k in range(args.negatives):
        columns[f"negative_{k + 1}"] = [g["neg"][k] for g in groups]
    loss = (
        CachedMultipleNegativesRankingLoss(st_model, scale=100.0, mini_batch_size=args.chunk_size)
        if cached
        else MultipleNegativesRankingLoss(st_model, scale=100.0)
    )
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(folder / f"st-run-{cached}"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=2e-5,
        warmup_steps=1,
        save_strategy="no",
        report_to=[],
        logging_steps=1000,
        disable_tqdm=True,
        use_cpu=True,
        dataloader_drop_last=True,
    )
    trainer = SentenceTransformerTrainer(model=st_model, args=training_args, train_dataset=Dataset.from_dict(columns), loss=loss)
    started = time.perf_counter()
    trainer.train()
    return args.steps * args.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED / "data" / "beir" / "scifact"))
    parser.add_argument("--model", default=str(SHARED / "models" / "paraphrase-MiniLM-L3-v2"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        groups = mined_groups(Path(args.data), folder, args.negatives)
        groups_file = folder / "groups.jsonl"
        groups_file.write_text("".join(json.dumps(g) + "\n" for g in groups), encoding="utf-8")
        rates = {
            "e5kit finetune (GradCache)": e5kit_rate(args.model, groups_file, folder, args),
            "ST CachedMNRL (GradCache)": st_rate(args.model, groups, folder, args, cached=True),
            "ST MNRL (plain)": st_rate(args.model, groups, folder, args, cached=False),
        }
    reference = rates["ST CachedMNRL (GradCache)"]
    print(
        f"{args.steps} steps x {args.batch_size} queries, 1 positive + {args.negatives} hard negatives each, "
        f"max length {args.max_length}, chunk {args.chunk_size}"
    )
    print(f"{'trainer':30s} {'groups/s':>9s} {'vs ST cached':>13s}")
    for trainer, rate in rates.items():
        print(f"{trainer:30s} {rate:9.2f} {rate / reference:12.2f}x")


if __name__ == "__main__":
    main()
