"""``e5kit curate``: raw dumps -> filtered pair shards and a report (a thin driver over ``e5kit.data.curation``)."""

from __future__ import annotations

from pathlib import Path

import typer

from e5kit.cli.app import FORCE_OPTION, app, fail, output_folder, overrides_option
from e5kit.cli.options import config_option
from e5kit.data.curation.config import CurateConfig


@app.command()
def curate(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config, or a bundled config's name (`e5kit config show curate`); optional when --set gives everything."),
    set_: list[str] = overrides_option("--set workers=4 --set sources.0.paths=\\[a.jsonl]"),
    engine: str = config_option(CurateConfig, "engine"),
    workers: int = config_option(CurateConfig, "workers"),
    force: bool = FORCE_OPTION,
) -> None:
    """Curate weak (query, passage) pairs from raw dumps; rerun to resume (finished shards are skipped, a
    finished run with the same settings and inputs is kept).

    Writes OUTPUT_DIR/pairs/<source>-<NNNNN>.parquet (query, passage, source, meta), report.json,
    report.md and histograms/*.png. Every record read is either kept or counted under a drop reason.
    """
    from e5kit.config import load_config
    from e5kit.data.curation import CurateStage
    from e5kit.data.curation.planner import check_inputs
    from e5kit.stage import run_stage

    try:
        settings = load_config(CurateConfig, config, set_, options={"engine": engine, "workers": workers})
        check_inputs(settings)  # a missing input is named before the output folder is touched
    except ValueError as error:
        raise fail(str(error)) from error
    output_folder(settings.output_dir)
    try:
        report = run_stage(CurateStage(settings), force=force, log=typer.echo)
    except (RuntimeError, OSError) as error:  # counts that do not reconcile; a disk that fills up
        raise fail(str(error)) from error
    totals = report["totals"]
    typer.echo(
        f"read {totals['read']:,}, kept {totals['kept']:,}, dropped {sum(totals['dropped'].values()):,} "
        f"({report['shards']} shards, {report['resumed_shards']} resumed, {report['elapsed_s']:.1f}s); "
        f"report: {Path(settings.output_dir) / 'report.md'}"
    )

