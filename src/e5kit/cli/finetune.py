"""``e5kit mine-negatives``, ``e5kit score-teacher`` and ``e5kit finetune``: E5's fine-tuning stage, file to file."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from e5kit.cli.app import FORCE_OPTION, RESUME_HELP, app, fail, output_file, overrides_option, run_training
from e5kit.cli.options import config_option, defaults_sentence
from e5kit.cli.pretrain import REPORT_TO, report_to_overrides
from e5kit.data.mining import MiningConfig
from e5kit.data.teacher import TeacherConfig
from e5kit.training.config import FinetuneConfig


class TeacherKind(str, Enum):
    auto = "auto"
    cross_encoder = "cross-encoder"
    bi_encoder = "bi-encoder"


class Sampling(str, Enum):
    top = "top"
    random = "random"


class Similarity(str, Enum):
    """sentence-transformers' similarity_fn_name values e5kit scores with."""

    cosine = "cosine"
    dot = "dot"


@app.command("mine-negatives")
def mine_negatives(
    model: str = config_option(MiningConfig, "model", "--model", "-m", note="BM25 is bm25s with Lucene's k1=1.5 b=0.75, stemmed."),
    queries: Path = config_option(MiningConfig, "queries", "--queries", "-q", note="Required."),
    corpus: Path = config_option(MiningConfig, "corpus", "--corpus", "-c", note="Required."),
    positives: Path = config_option(MiningConfig, "positives", "--positives", "-p", note="Required."),
    out: Path = config_option(MiningConfig, "out", "--out", "-o", note="Required."),
    negatives: int = config_option(MiningConfig, "negatives", note="E5: 7."),
    depth: int = config_option(MiningConfig, "depth"),
    skip_top: int = config_option(MiningConfig, "skip_top"),
    margin: float = config_option(MiningConfig, "margin"),
    relative_margin: float = config_option(MiningConfig, "relative_margin"),
    sampling: Sampling = config_option(MiningConfig, "sampling"),
    backfill: bool = config_option(MiningConfig, "backfill", "--backfill/--no-backfill"),
    engine: str = config_option(MiningConfig, "engine", note="Under torchrun: torchrun --nproc_per_node N -m e5kit mine-negatives --engine torchrun ..."),
    workers: int = config_option(MiningConfig, "workers", note="With --engine ray."),
    block_rows: int = config_option(MiningConfig, "block_rows"),
    batch_size: int = config_option(MiningConfig, "batch_size"),
    max_length: int = config_option(MiningConfig, "max_length"),
    device: str = config_option(MiningConfig, "device"),
    seed: int = config_option(MiningConfig, "seed"),
    similarity_fn_name: Similarity = config_option(MiningConfig, "similarity_fn_name"),
    config: Path = typer.Option(None, "--config", help="YAML config of the mining settings and files (fields of MiningConfig)."),
    set_: list[str] = overrides_option("--set negatives=15 --set margin=0.1"),
    force: bool = FORCE_OPTION,
) -> None:
    """Mine hard negatives for every query of a qrels file.

    Never a negative (each rejection counted): a positive, the query's own id, an empty passage (no visible
    text), a copy of a positive (same text after NFKC, case folding and whitespace collapsing). OUT.stats.json,
    written last, marks a finished run: a rerun with the same settings and input files is skipped; a killed
    dense run resumes its embedding blocks.
    """
    from e5kit.config import load_config
    from e5kit.data.mining import MiningStage
    from e5kit.encoder.model_format import ModelDirectoryError
    from e5kit.io.files import InputFormatError
    from e5kit.stage import run_stage

    given = {
        "model": model, "negatives": negatives, "depth": depth, "skip_top": skip_top, "margin": margin, "relative_margin": relative_margin,
        "sampling": sampling and sampling.value, "backfill": backfill, "batch_size": batch_size,
        "max_length": max_length, "device": device, "seed": seed, "similarity_fn_name": similarity_fn_name and similarity_fn_name.value,
        "engine": engine, "workers": workers, "block_rows": block_rows, "queries": queries, "corpus": corpus, "positives": positives, "out": out,
    }
    try:
        settings = load_config(MiningConfig, config, set_, options=given)
        stage = MiningStage(settings)
    except ValueError as error:
        raise fail(str(error)) from error
    out = output_file(settings.out)
    try:
        report = run_stage(stage, force=force, log=typer.echo)
    except (ValueError, FileNotFoundError, InputFormatError, ModelDirectoryError) as error:
        raise fail(str(error)) from error
    if not report:  # a torchrun rank other than 0 embedded its share; rank 0 reports
        return
    skipped = sum(reason["count"] for reason in report["skipped"].values())
    typer.echo(
        f"wrote {out}: {report['queries']} queries, {report['negatives_retrieved']} mined + {report['negatives_backfilled']} random negatives "
        f"({report['queries_per_s']} queries/s); rejected candidates {report['candidates_rejected']}; "
        f"empty documents (kept, never negatives): {report['empty_documents']}; skipped records: {skipped} (see {out}.stats.json)"
    )


@app.command("score-teacher")
def score_teacher(
    teacher: str = config_option(TeacherConfig, "teacher", "--teacher", "-t", note="Required."),
    input: Path = config_option(TeacherConfig, "input", "--in", "-i", note="Required."),
    out: Path = config_option(TeacherConfig, "out", "--out", "-o", note="Required."),
    kind: TeacherKind = config_option(TeacherConfig, "kind"),
    batch_size: int = config_option(TeacherConfig, "batch_size"),
    max_length: int = config_option(TeacherConfig, "max_length"),
    device: str = config_option(TeacherConfig, "device"),
    similarity_fn_name: Similarity = config_option(TeacherConfig, "similarity_fn_name"),
    engine: str = config_option(
        TeacherConfig, "engine", note="A cross-encoder scores on torchrun's ranks (each its share of the record blocks), never with ray. Rank 0 writes."
    ),
    workers: int = config_option(TeacherConfig, "workers", note="With --engine ray."),
    block_rows: int = config_option(TeacherConfig, "block_rows", note="Bi-encoder: its texts, in OUT.work/ until OUT is written."),
    config: Path = typer.Option(None, "--config", help="YAML config of the scoring settings and files (fields of TeacherConfig)."),
    set_: list[str] = overrides_option("--set batch_size=64 --set kind=cross-encoder"),
    force: bool = FORCE_OPTION,
) -> None:
    """Score every (query, candidate) of a mined file with a teacher, batched and resumable.

    Records are written to OUT.partial, renamed to OUT once all are scored: OUT is always a finished file.
    OUT.stats.json, written last, marks a finished run: a rerun with the same settings and input is skipped;
    a killed run resumes OUT.partial block by block.
    """
    from transformers.utils import logging as transformers_logging

    from e5kit.config import load_config
    from e5kit.data.teacher import TeacherStage
    from e5kit.encoder.model_format import ModelDirectoryError
    from e5kit.io.files import InputFormatError
    from e5kit.stage import run_stage

    transformers_logging.disable_progress_bar()
    given = {
        "teacher": teacher, "input": input, "out": out, "kind": kind and kind.value, "batch_size": batch_size, "max_length": max_length,
        "device": device, "similarity_fn_name": similarity_fn_name and similarity_fn_name.value, "engine": engine, "workers": workers,
        "block_rows": block_rows,
    }
    try:
        settings = load_config(TeacherConfig, config, set_, options=given)
    except ValueError as error:
        raise fail(str(error)) from error
    out = output_file(settings.out)
    try:
        report = run_stage(TeacherStage(settings), force=force, log=typer.echo)
    except (ValueError, FileNotFoundError, InputFormatError, ModelDirectoryError, OSError) as error:
        raise fail(str(error)) from error
    if not report:  # a torchrun rank other than 0 embedded its share; rank 0 reports
        return
    typer.echo(f"wrote {out}: {json.dumps(report)}")


FINETUNE_DEFAULTS = (
    "batch_size", "hard_negatives", "alpha", "tau", "teacher_temperature", "lr", "warmup_steps", "query_max_length",
    "passage_max_length", "epochs", "max_steps", "chunk_size", "similarity_fn_name", "prompts", "mask_false_negatives",
)


@app.command(help=f"""Fine-tune a bi-encoder: KL(teacher || student) over positive + hard negatives + alpha * InfoNCE (E5 section 3).

    Required fields: init_model, output_dir, data.datasets (each: name, format flag|beir|msmarco|nli, path; optional
    weight 1.0, split train). {defaults_sentence(FinetuneConfig, list(FINETUNE_DEFAULTS))} These are the paper's;
    batch_size counts queries; max_steps unset = derived from epochs; prompts unset = the model's own.
    Groups without teacher scores (or with too few hard negatives) train on InfoNCE alone. The loop, GradCache,
    torchrun/DDP, checkpoints and --resume are the pre-training engine's. Writes {{output_dir}}/final with a model card,
    and report.json last: a rerun with the same settings and inputs is skipped, a killed one resumes from its newest
    checkpoint. eval_data/eval_every score BEIR folders while training, as in `e5kit pretrain`.
    """)
def finetune(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config, or a bundled config's name (`e5kit config show finetune`); optional when --set gives every required field."),
    overrides: list[str] = overrides_option("--set batch_size=32 --set 'data.datasets=[{name: scifact, format: flag, path: mined.jsonl}]'"),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    report_to: list[str] = REPORT_TO,
    force: bool = FORCE_OPTION,
) -> None:
    from e5kit.training.finetune import FinetuneStage

    run_training(FinetuneStage, config, [*(overrides or []), *report_to_overrides(report_to)], resume, force)
