"""``e5kit filter consistency``: keep pairs a preliminary model can find again (thin driver over ``e5kit.data.consistency``)."""

from __future__ import annotations

from pathlib import Path

import typer

from e5kit.cli.app import FORCE_OPTION, app, fail, output_folder, overrides_option
from e5kit.cli.options import config_option
from e5kit.data.consistency import ConsistencyConfig

filter_app = typer.Typer(help="Filters over curated pair shards.", no_args_is_help=True)
app.add_typer(filter_app, name="filter")


@filter_app.command()
def consistency(
    pairs: list[str] = config_option(ConsistencyConfig, "pairs", "--pairs", "-p", note="Repeatable."),
    model: str = config_option(ConsistencyConfig, "model", "--model", "-m"),
    output_dir: Path = config_option(ConsistencyConfig, "output_dir", "--output", "-o"),
    k: int = config_option(ConsistencyConfig, "k"),
    pool_size: int = config_option(ConsistencyConfig, "pool_size"),
    iterations: int = config_option(ConsistencyConfig, "iterations", note="Re-training calls e5kit pre-training."),
    reapply: bool = typer.Option(False, "--reapply", help="Apply --k to the ranks already in --output, without re-embedding."),
    engine: str = config_option(ConsistencyConfig, "engine"),
    workers: int = config_option(ConsistencyConfig, "workers", note="With --engine ray."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config of the stage (fields of ConsistencyConfig)."),
    set_: list[str] = overrides_option("--set max_rank=20 --set train.max_steps=100"),
    force: bool = FORCE_OPTION,
) -> None:
    """Consistency filter: a pair survives if its query ranks its passage, and its passage ranks its query,
    in the top k among a random pool (E5, section 1). A killed run resumes its embedding blocks; a finished
    run with the same settings and inputs is kept."""
    from e5kit.config import load_config
    from e5kit.data.consistency import ConsistencyStage, reapply_k
    from e5kit.stage import run_stage
    from e5kit.training.trainer import pretrain_on

    if reapply:
        if k is None or output_dir is None:
            raise fail("--reapply needs --k and --output")
        if output_dir.is_dir():  # a missing one is reapply_k's error: no earlier run there
            output_folder(output_dir)
        try:
            report = reapply_k(output_dir, k)
        except ValueError as error:
            raise fail(str(error)) from error
    else:
        given = {"pairs": pairs, "model": model, "output_dir": output_dir, "k": k, "pool_size": pool_size, "iterations": iterations,
                 "engine": engine, "workers": workers}
        try:
            settings = load_config(ConsistencyConfig, config, set_, options=given)
        except ValueError as error:
            raise fail(str(error)) from error
        output_dir = output_folder(settings.output_dir)  # --config may name it
        try:
            report = run_stage(ConsistencyStage(settings, train_fn=pretrain_on), force=force, log=typer.echo)
        except (ValueError, FileNotFoundError) as error:
            raise fail(str(error)) from error
        if not report:  # a torchrun rank other than 0 embedded its share; rank 0 reports
            return
    typer.echo(f"kept {report['kept']:,} of {report['read']:,} pairs at k={report['k']}; dropped {report['dropped']}; "
               f"keep-mask {output_dir / 'mask.json'} (train on it: --set data.paths=[{output_dir}])")
