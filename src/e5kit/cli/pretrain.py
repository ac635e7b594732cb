"""``e5kit pretrain``: contrastive pre-training from a YAML config, every field overridable with --set."""

from __future__ import annotations

from pathlib import Path

import typer

from e5kit.cli.app import app, fail


@app.command()
def pretrain(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config (see configs/pretrain.yaml); optional when --set gives every required field."),
    overrides: list[str] = typer.Option(
        None,
        "--set",
        help="Override a config field: key=value, value parsed as YAML; dots reach nested keys "
        "(--set max_steps=100 --set data.paths=[a.parquet,b/] --set data.source_weights={reddit:2,wiki:1}).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest valid checkpoint in {output_dir}/checkpoints (exact data position)."),
) -> None:
    """Contrastively pre-train a bi-encoder on (query, passage) shards: InfoNCE with in-batch negatives, GradCache, DDP.

    Required fields: init_model, data.paths, output_dir, max_steps. Defaults: batch_size 1024 (global pairs per
    step), chunk_size 64, tau 0.01, lr 2e-4, warmup_steps 1000, weight_decay 0.01, max_grad_norm 1.0, query/passage
    max length 128, precision fp32, symmetric false, mask_false_negatives true, source_homogeneous false,
    checkpoint_every 500, keep_checkpoints 2, seed 42, gradient_checkpointing false.
    Writes {output_dir}/final (sentence-transformers model with a model card), metrics.jsonl, loss_curve.png and
    checkpoints/. For several GPUs: torchrun --nproc_per_node=N $(which e5kit) pretrain --config ...
    """
    import logging

    from transformers.utils import logging as transformers_logging

    from e5kit.data.shards import ShardError
    from e5kit.model_format import ModelDirectoryError
    from e5kit.training.config import ConfigError, load_config
    from e5kit.training.trainer import pretrain as run_pretrain

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    transformers_logging.disable_progress_bar()
    try:
        settings = load_config(config, overrides or [])
        final = run_pretrain(settings, resume=resume)
    except (ConfigError, ShardError, ModelDirectoryError, FileNotFoundError) as error:
        raise fail(str(error)) from error
    typer.echo(f"final model: {final}")
    typer.echo(f"metrics: {final.parent / 'metrics.jsonl'}; loss curve: {final.parent / 'loss_curve.png'}")
