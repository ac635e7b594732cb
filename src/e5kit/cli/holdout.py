"""``e5kit holdout``: held-out retrieval splits per source, cut from curated pairs (a thin driver over ``e5kit.data.holdout``)."""

from __future__ import annotations

from pathlib import Path

import typer

from e5kit.cli.app import FORCE_OPTION, app, fail, output_folder, overrides_option
from e5kit.cli.options import config_option
from e5kit.data.holdout import HoldoutConfig


@app.command()
def holdout(
    pairs: list[str] = config_option(HoldoutConfig, "pairs", "--pairs", "-p", note="Repeatable."),
    output_dir: Path = config_option(HoldoutConfig, "output_dir", "--output", "-o"),
    fraction: float = config_option(HoldoutConfig, "fraction"),
    max_queries: int = config_option(HoldoutConfig, "max_queries"),
    min_queries: int = config_option(HoldoutConfig, "min_queries"),
    seed: int = config_option(HoldoutConfig, "seed"),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config of the step (fields of HoldoutConfig)."),
    set_: list[str] = overrides_option("--set ngram=8"),
    force: bool = FORCE_OPTION,
) -> None:
    """Hold out a seeded share of each source's pairs as a BEIR retrieval split (query -> its passage among
    all held-out passages of the source) and remove every training pair that overlaps a held-out text.

    Run it between `e5kit curate` and `e5kit filter consistency`; evaluate with
    `e5kit eval retrieval --data OUTPUT/heldout/<source>`. Rerun: a finished run with the same settings and inputs is kept.
    """
    from e5kit.config import load_config
    from e5kit.data.holdout import HoldoutStage
    from e5kit.io.files import InputFormatError
    from e5kit.io.pairs import ShardError
    from e5kit.stage import run_stage

    given = {"pairs": pairs, "output_dir": output_dir, "fraction": fraction, "max_queries": max_queries, "min_queries": min_queries, "seed": seed}
    try:
        settings = load_config(HoldoutConfig, config, set_, options=given)
    except ValueError as error:
        raise fail(str(error)) from error
    output_folder(settings.output_dir)
    try:
        report = run_stage(HoldoutStage(settings), force=force, log=typer.echo)
    except (ShardError, InputFormatError, OSError) as error:
        raise fail(str(error)) from error
    typer.echo((settings.output_dir / "report.md").read_text(encoding="utf-8"), nl=False)
    typer.echo(f"kept {report['kept']:,} of {report['read']:,} pairs for training; held-out splits: {', '.join(report['eval_dirs']) or 'none'}")
