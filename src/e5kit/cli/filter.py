"""``e5kit filter consistency``: keep pairs a preliminary model can find again (thin driver over ``e5kit.data.consistency``)."""

from __future__ import annotations

from pathlib import Path

import typer

from e5kit.cli.app import app, fail

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
    config: Path = typer.Option(None, "--config", "-c", help="YAML config of the stage (fields of ConsistencyConfig)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a config field, e.g. --set max_rank=20 --set train.max_steps=100. Repeatable."),
) -> None:
    """Consistency filter: a pair survives if its query ranks its passage, and its passage ranks its query,
    in the top k among a random pool (E5, section 1)."""
    from pydantic import ValidationError

    from e5kit.data.consistency import ConsistencyConfig, consistency_filter, reapply_k
    from e5kit.data.curate import load_config_data

    if reapply:
        if k is None:
            raise fail("--reapply needs --k")
        try:
            report = reapply_k(output, k)
        except ValueError as error:
            raise fail(str(error)) from error
    else:
        overrides = list(set_ or [])
        given = {"model": model, "output_dir": output, "k": k, "pool_size": pool_size, "iterations": iterations}
        overrides += [f"{key}={value}" for key, value in given.items() if value is not None]
        try:
            data = load_config_data(config, overrides)
            if pairs:
                data["pairs"] = list(pairs)
            settings = ConsistencyConfig.model_validate(data)
            report = consistency_filter(settings)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in error.errors())
            raise fail(f"invalid consistency config: {problems}") from error
        except (ValueError, FileNotFoundError) as error:
            raise fail(str(error)) from error
    typer.echo(f"kept {report['kept']:,} of {report['read']:,} pairs at k={report['k']}; dropped {report['dropped']}; wrote {output / 'pairs'}")
