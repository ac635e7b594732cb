"""``e5kit pretrain``: contrastive pre-training from a YAML config, every field overridable with --set."""

from __future__ import annotations

from pathlib import Path

import typer

from e5kit.cli.app import FORCE_OPTION, RESUME_HELP, app, overrides_option, run_training
from e5kit.cli.options import config_option, defaults_sentence
from e5kit.training.config import LoggingSettings, PretrainConfig

#: ``--report-to``, shared with ``e5kit finetune``.
REPORT_TO = config_option(
    LoggingSettings, "report_to", "--report-to", metavar="TARGET", note="Repeatable; event files in {output_dir}/tensorboard or logging_dir.",
)


def report_to_overrides(report_to: list[str] | None) -> list[str]:
    """``--report-to`` values as the ``--set`` override they stand for (none when not given)."""
    return [f"report_to=[{','.join(report_to)}]"] if report_to else []


PRETRAIN_DEFAULTS = (
    "batch_size", "chunk_size", "tau", "lr", "warmup_steps", "weight_decay", "max_grad_norm", "query_max_length", "passage_max_length",
    "precision", "symmetric", "mask_false_negatives", "source_homogeneous", "checkpoint_every", "keep_checkpoints", "seed",
    "gradient_checkpointing",
)


@app.command(help=f"""Contrastively pre-train a bi-encoder on (query, passage) shards: InfoNCE with in-batch negatives, GradCache, DDP.

    Required fields: init_model, data.paths, output_dir, max_steps. {defaults_sentence(PretrainConfig, list(PRETRAIN_DEFAULTS))}
    batch_size is the global number of pairs per step (over all processes).
    Held-out scores while training: --set eval_data=[heldout/news,beir/scifact] --set eval_every=100 logs
    nDCG@10 and Recall@100 of each folder in metrics.jsonl (and TensorBoard, with --report-to tensorboard).
    Writes {{output_dir}}/final (sentence-transformers model with a model card), metrics.jsonl, loss_curve.png and
    checkpoints/, and report.json last: a rerun with the same settings and inputs is skipped, a killed one
    resumes from its newest checkpoint. For several GPUs: torchrun --nproc_per_node=N $(which e5kit) pretrain --config ...
    """)
def pretrain(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config, or a bundled config's name (`e5kit config show pretrain`); optional when --set gives every required field."),
    overrides: list[str] = overrides_option("--set max_steps=100 --set data.paths=[a.parquet,b/] --set data.source_weights={reddit:2,wiki:1}"),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    report_to: list[str] = REPORT_TO,
    force: bool = FORCE_OPTION,
) -> None:
    from e5kit.training.trainer import PretrainStage

    run_training(PretrainStage, config, [*(overrides or []), *report_to_overrides(report_to)], resume, force)
