"""``e5kit ablate``: named variants of the pipeline, sharing stages, compared on held-out splits (a thin driver over ``e5kit.ablation``)."""

from __future__ import annotations

from pathlib import Path

import typer

from e5kit.cli.app import app, fail, output_folder, overrides_option


@app.command()
def ablate(
    config: Path = typer.Option(..., "--config", "-c", help="Ablation YAML, or a bundled one's name (ablations/e5_paper)."),
    set_: list[str] = overrides_option("--set workdir=runs/abl --set pretrain.max_steps=20"),
    force: bool = typer.Option(False, "--force", help="Redo steps that finished in an earlier run."),
) -> None:
    """Run named variants of the E5 pipeline and compare them, with BM25 and the start model, on
    per-source held-out splits (and any extra BEIR folders).

    Curation and the held-out split run once; one consistency filter per distinct filter setting and one
    pre-training per distinct training setting; finished steps are skipped on a rerun. Writes
    WORKDIR/results.md (tables, comparisons beside the E5 paper's figures), results.png and results.json.
    """
    from e5kit.ablation import Ablation, AblationConfig
    from e5kit.config import ConfigError, load_config

    try:
        settings = load_config(AblationConfig, config, set_)
    except ConfigError as error:
        raise fail(str(error)) from error
    output_folder(settings.workdir)
    ablation = Ablation(settings, force=force, log=typer.echo)
    try:
        ablation.check()
        ablation.run()
    except ValueError as error:  # an input named by check(), or held-out splits the data cannot give
        raise fail(str(error)) from error
    typer.echo(f"results: {settings.workdir / 'results.md'}, {settings.workdir / 'results.png'}, {settings.workdir / 'results.json'}")
