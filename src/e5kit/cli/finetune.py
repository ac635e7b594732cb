"""``e5kit mine-negatives``, ``e5kit score-teacher`` and ``e5kit finetune``: E5's fine-tuning stage, file to file."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from e5kit.cli.app import RESUME_HELP, app, fail, output_file, overrides_option, run_training
from e5kit.cli.options import config_option
from e5kit.cli.pretrain import REPORT_TO, report_to_overrides
from e5kit.data.mining import MiningConfig
from e5kit.retrieval.engines import StoreEmbedding


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
    queries: Path = typer.Option(..., "--queries", "-q", help="BEIR queries.jsonl[.gz] (_id, text)."),
    corpus: Path = typer.Option(..., "--corpus", "-c", help="BEIR corpus.jsonl[.gz] (_id, title, text)."),
    positives: Path = typer.Option(..., "--positives", "-p", help="Qrels TSV (query-id, corpus-id, score); score > 0 marks a positive; several per query allowed."),
    out: Path = typer.Option(..., "--out", "-o", help="Output FlagEmbedding JSONL {query, pos, neg, query_id, pos_ids, neg_ids}; a report goes to OUT.stats.json."),
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
    config: Path = typer.Option(None, "--config", help="YAML config of the mining settings (fields of MiningConfig)."),
    set_: list[str] = overrides_option("--set negatives=15 --set margin=0.1"),
) -> None:
    """Mine hard negatives for every query of a qrels file.

    Never a negative (each rejection counted): a positive, the query's own id, an empty passage (no visible
    text), a copy of a positive (same text after NFKC, case folding and whitespace collapsing).
    """
    from e5kit.config import load_config
    from e5kit.data.mining import mine_hard_negatives
    from e5kit.io.files import InputFormatError

    output_file(out)
    given = {
        "model": model, "negatives": negatives, "depth": depth, "skip_top": skip_top, "margin": margin, "relative_margin": relative_margin,
        "sampling": sampling and sampling.value, "backfill": backfill, "batch_size": batch_size,
        "max_length": max_length, "device": device, "seed": seed, "similarity_fn_name": similarity_fn_name and similarity_fn_name.value,
        "engine": engine, "workers": workers, "block_rows": block_rows,
    }
    try:
        settings = load_config(MiningConfig, config, set_, options=given)
        encoder = None
        if settings.model != "bm25":
            from e5kit.cli.app import load_encoder

            encoder = load_encoder(settings.model, max_length=settings.max_length, similarity_fn_name=settings.similarity_fn_name, device=settings.device)
        report = mine_hard_negatives(settings, queries, corpus, positives, out, encoder=encoder)
    except (ValueError, FileNotFoundError, InputFormatError) as error:
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
    teacher: str = typer.Option(..., "--teacher", "-t", help="Cross-encoder (sequence-classification checkpoint) or bi-encoder model directory."),
    in_path: Path = typer.Option(..., "--in", "-i", help="FlagEmbedding JSONL {query, pos, neg, ...} (e.g. from mine-negatives)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL: the input records with pos_scores and neg_scores added."),
    kind: TeacherKind = typer.Option(TeacherKind.auto, help="auto: cross-encoder when the checkpoint is *ForSequenceClassification, else bi-encoder (cosine)."),
    batch_size: int = typer.Option(32, min=1, help="Pairs (cross-encoder) or texts (bi-encoder) per forward pass."),
    max_length: int = typer.Option(None, min=8, help="Token limit (default: 512 for a cross-encoder pair, the model's own for a bi-encoder)."),
    device: str = typer.Option(None, help="Torch device (default: cuda when present)."),
    resume: bool = typer.Option(True, help="Keep the records already written (OUT.partial left by a killed run, else OUT), checked against the input, and score only the rest."),
    similarity_fn_name: Similarity = typer.Option(Similarity.cosine, help="Bi-encoder score: cosine (E5, whatever the model ships) or dot (raw dot products)."),
    engine: str = config_option(
        StoreEmbedding, "engine", note="A cross-encoder scores on torchrun's ranks (each its share of the record blocks), never with ray. Rank 0 writes."
    ),
    workers: int = config_option(StoreEmbedding, "workers", note="With --engine ray."),
    block_rows: int = config_option(StoreEmbedding, "block_rows", note="Bi-encoder: its texts, in OUT.work/ until OUT is written."),
) -> None:
    """Score every (query, candidate) of a mined file with a teacher, batched and resumable.

    Records are written to OUT.partial, renamed to OUT once all are scored: OUT is always a finished file.
    """
    from transformers.utils import logging as transformers_logging

    from e5kit.config import load_config
    from e5kit.data.teacher import load_teacher, score_file
    from e5kit.encoder.model_format import ModelDirectoryError
    from e5kit.io.files import InputFormatError

    transformers_logging.disable_progress_bar()
    output_file(out)
    try:
        embedding = load_config(StoreEmbedding, options={"engine": engine, "workers": workers, "block_rows": block_rows})
        scorer = load_teacher(
            teacher, kind.value, batch_size=batch_size, max_length=max_length, device=device, similarity_fn_name=similarity_fn_name.value
        )
        report = score_file(scorer, in_path, out, resume=resume, embedding=embedding)
    except (ValueError, FileNotFoundError, InputFormatError, ModelDirectoryError, OSError) as error:
        raise fail(str(error)) from error
    if not report:  # a torchrun rank other than 0 embedded its share; rank 0 reports
        return
    typer.echo(f"wrote {out}: {json.dumps(report)}")


@app.command()
def finetune(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config, or a bundled config's name (`e5kit config show finetune`); optional when --set gives every required field."),
    overrides: list[str] = overrides_option("--set batch_size=32 --set 'data.datasets=[{name: scifact, format: flag, path: mined.jsonl}]'"),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    report_to: list[str] = REPORT_TO,
) -> None:
    """Fine-tune a bi-encoder: KL(teacher || student) over positive + hard negatives + alpha * InfoNCE (E5 section 3).

    Required fields: init_model, output_dir, data.datasets (each: name, format flag|beir|msmarco|nli, path; optional
    weight 1.0, split train). Defaults (the paper's): batch_size 256 queries, hard_negatives 7, alpha 0.2, tau 0.01,
    teacher_temperature 1.0, lr 2e-5, warmup_steps 400, query/passage max length 192, epochs 3 (max_steps null =
    derived from epochs), chunk_size 32, similarity_fn_name cosine, prompts null (the model's own), mask_false_negatives true.
    Groups without teacher scores (or with too few hard negatives) train on InfoNCE alone. The loop, GradCache,
    torchrun/DDP, checkpoints and --resume are the pre-training engine's. Writes {output_dir}/final with a model card.
    eval_data/eval_every score BEIR folders while training, as in `e5kit pretrain`.
    """
    from e5kit.training.config import FinetuneConfig
    from e5kit.training.finetune import finetune as run_finetune

    run_training(FinetuneConfig, run_finetune, config, [*(overrides or []), *report_to_overrides(report_to)], resume)
