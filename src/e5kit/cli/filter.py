"""``e5kit filter consistency``: keep pairs a preliminary model can find again (thin driver over ``e5kit.data.consistency``)."""

from __future__ import annotations

from pathlib import Path

import typer

from e5kit.cli.app import app, fail, output_folder, overrides_option

filter_app = typer.Typer(help="Filters over curated pair shards.", no_args_is_help=True)
app.add_typer(filter_app, name="filter")


@filter_app.command()
def consistency(
    pairs: list[str] = typer.Option(None, "--pairs", "-p", help="Pair shards: Parquet files, folders (a curate output works) or globs. Repeatable."),
    model: str = typer.Option(None, "--model", "-m", help="Preliminary model: directory, bundled name (all-MiniLM-L6-v2) or Hub id."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder: pairs/, scores.parquet (per-pair ranks), report.json."),
    k: int = typer.Option(None, min=1, help="Keep a pair when both ranks are <= k [default: 2]."),
    pool_size: int = typer.Option(None, min=1, help="Random pool size P [default: 1,000,000, capped at the number of pairs]."),
    iterations: int = typer.Option(None, min=1, help="Filter -> re-train rounds (re-training calls e5kit pre-training) [default: 1]."),
    reapply: bool = typer.Option(False, "--reapply", help="Apply --k to the ranks already in --output, without re-embedding."),
    engine: str = typer.Option(None, "--engine", help="Who embeds the pairs: local (this process), torchrun (each rank of a torchrun launch embeds its share; rank 0 ranks and writes) or ray (a Ray Data actor pool of --workers) [default: local]."),
    workers: int = typer.Option(None, min=1, help="Ray actors with --engine ray [default: 2]."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config of the stage (fields of ConsistencyConfig)."),
    set_: list[str] = overrides_option("--set max_rank=20 --set train.max_steps=100"),
) -> None:
    """Consistency filter: a pair survives if its query ranks its passage, and its passage ranks its query,
    in the top k among a random pool (E5, section 1)."""
    from e5kit.config import load_config
    from e5kit.data.consistency import ConsistencyConfig, consistency_filter, reapply_k
    from e5kit.training.trainer import pretrain_on

    if reapply:
        if k is None:
            raise fail("--reapply needs --k")
        if output.is_dir():  # a missing one is reapply_k's error: no earlier run there
            output_folder(output)
        try:
            report = reapply_k(output, k)
        except ValueError as error:
            raise fail(str(error)) from error
    else:
        given = {"pairs": pairs, "model": model, "output_dir": output, "k": k, "pool_size": pool_size, "iterations": iterations,
                 "engine": engine, "workers": workers}
        try:
            settings = load_config(ConsistencyConfig, config, set_, options=given)
        except ValueError as error:
            raise fail(str(error)) from error
        output_folder(settings.output_dir)
        try:
            report = consistency_filter(settings, train_fn=pretrain_on)
        except (ValueError, FileNotFoundError) as error:
            raise fail(str(error)) from error
        if not report:  # a torchrun rank other than 0 embedded its share; rank 0 reports
            return
    typer.echo(f"kept {report['kept']:,} of {report['read']:,} pairs at k={report['k']}; dropped {report['dropped']}; wrote {output / 'pairs'}")
