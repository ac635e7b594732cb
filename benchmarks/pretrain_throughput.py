"""Training pairs/s: e5kit's GradCache trainer against sentence-transformers' trainer with
CachedMultipleNegativesRankingLoss, on the same model, data, global batch, chunk size and max length.

Both run ``--steps`` optimizer steps; the first is a warm-up and is not timed. Same work on both sides:
query->passage InfoNCE at scale 1/tau, "query: "/"passage: " prompts, no false-negative masking.

    .venv/bin/python benchmarks/pretrain_throughput.py                  # batch 64, chunk 16, 4 steps
    .venv/bin/python benchmarks/pretrain_throughput.py --batch-size 256 --chunk-size 32 --steps 6
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from pretrain_memory import ARXIV, DEFAULT_MODEL, write_arxiv_shard

PROMPTS = {"query": "query: ", "passage": "passage: "}


def e5kit_pairs_per_second(args: argparse.Namespace, data: Path, run_dir: Path) -> float:
    from e5kit.training.config import coerce_config
    from e5kit.training.trainer import pretrainer

    config = coerce_config(
        {
            "init_model": str(args.model),
            "prompts": PROMPTS,
            "data": {"paths": [str(data)]},
            "output_dir": str(run_dir),
            "max_steps": args.steps,
            "batch_size": args.batch_size,
            "chunk_size": args.chunk_size,
            "tau": args.tau,
            "lr": 2e-5,
            "warmup_steps": 0,
            "query_max_length": args.max_length,
            "passage_max_length": args.max_length,
            "mask_false_negatives": False,
            "checkpoint_every": 0,
        }
    )
    trainer = pretrainer(config, show_progress=False)
    trainer.train_step()  # warm-up
    started = time.perf_counter()
    for _ in range(args.steps - 1):
        trainer.train_step()
    return args.batch_size * (args.steps - 1) / (time.perf_counter() - started)


def sentence_transformers_pairs_per_second(args: argparse.Namespace, run_dir: Path) -> float:
    import gzip

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import CachedMultipleNegativesRankingLoss
    from transformers import TrainerCallback

    with gzip.open(ARXIV, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    rows = [r for r in rows if r.get("title") and r.get("abstract")][: args.batch_size * args.steps]
    dataset = Dataset.from_dict({"anchor": [r["title"] for r in rows], "positive": [r["abstract"] for r in rows]})
    model = SentenceTransformer(str(args.model), device="cpu")
    model.max_seq_length = args.max_length
    step_ends: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())

    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(run_dir),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=2e-5,
        warmup_steps=0,
        save_strategy="no",
        report_to="none",
        logging_steps=10_000,
        use_cpu=True,
        dataloader_drop_last=True,
        prompts={"anchor": PROMPTS["query"], "positive": PROMPTS["passage"]},
    )
    loss = CachedMultipleNegativesRankingLoss(model, scale=1 / args.tau, mini_batch_size=args.chunk_size)
    SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss, callbacks=[StepTimer()]).train()
    return args.batch_size * (len(step_ends) - 1) / (step_ends[-1] - step_ends[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="Optimizer steps per system (the first is not timed).")
    parser.add_argument("--tau", type=float, default=0.01)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step is a warm-up)")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data = write_arxiv_shard(root)
        ours = e5kit_pairs_per_second(args, data, root / "e5kit")
        theirs = sentence_transformers_pairs_per_second(args, root / "st")
    import sentence_transformers
    import torch

    print(
        f"\nmodel {args.model.name}, arXiv title->abstract, global batch {args.batch_size}, chunk {args.chunk_size}, "
        f"max length {args.max_length}, {args.steps - 1} timed steps, torch threads {torch.get_num_threads()}"
    )
    print(f"{'trainer':<58} | pairs/s")
    print(f"{'e5kit pretrain (GradCache)':<58} | {ours:7.1f}")
    print(f"{f'sentence-transformers {sentence_transformers.__version__} CachedMNRL trainer':<58} | {theirs:7.1f}")
    print(f"{'ratio e5kit / sentence-transformers':<58} | {ours / theirs:7.2f}x")


if __name__ == "__main__":
    main()
