"""``e5kit pretrain``: contrastive pre-training from a YAML config, every field overridable with --set."""

from __future__ import annotations

from pathlib import Path

import typer

from e5kit.cli.app import RESUME_HELP, app, overrides_option, run_training

#: ``--report-to``, shared with ``e5kit finetune``.
REPORT_TO = typer.Option(
    None, "--report-to", metavar="TARGET", help="Also log the per-step metrics to: tensorboard (repeatable; sets report_to; "
    "event files in {output_dir}/tensorboard or logging_dir).",
)


def report_to_overrides(report_to: list[str] | None) -> list[str]:
    """``--report-to`` values as the ``--set`` override they stand for (none when not given)."""
    return [f"report_to=[{','.join(report_to)}]"] if report_to else []


@app.command()
def pretrain(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config, or a bundled config's name (`e5kit config show pretrain`); optional when --set gives every required field."),
    overrides: list[str] = overrides_option("--set max_steps=100 --set data.paths=[a.parquet,b/] --set data.source_weights={reddit:2,wiki:1}"),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    report_to: list[str] = REPORT_TO,
) -> None:
    """Contrastively pre-train a bi-encoder on (query, passage) shards: InfoNCE with in-batch negatives, GradCache, DDP.

    Required fields: init_model, data.paths, output_dir, max_steps. Defaults: batch_size 1024 (global pairs per
    step), chunk_size 64, tau 0.01, lr 2e-4, warmup_steps 1000, weight_decay 0.01, max_grad_norm 1.0, query/passage
    max length 128, precision fp32, symmetric false, mask_false_negatives true, source_homogeneous false,
    checkpoint_every 500, keep_checkpoints 2, seed 42, gradient_checkpointing false.
    Held-out scores while training: --set eval_data=[heldout/news,beir/scifact] --set eval_every=100 logs
    nDCG@10 and Recall@100 of each folder in metrics.jsonl (and TensorBoard, with --report-to tensorboard).
    Writes {output_dir}/final (sentence-transformers model with a model card), metrics.jsonl, loss_curve.png and
    checkpoints/. For several GPUs: torchrun --nproc_per_node=N $(which e5kit) pretrain --config ...
    """
    from e5kit.training.config import PretrainConfig
    from e5kit.training.trainer import pretrain as run_pretrain

    run_training(PretrainConfig, run_pretrain, config, [*(overrides or []), *report_to_overrides(report_to)], resume)
