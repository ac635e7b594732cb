"""``e5kit quickstart``: corpus -> curate -> consistency filter -> pre-train -> evaluate -> index, in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from e5kit.cli.app import app, fail, overrides_option
from e5kit.cli.options import config_option
from e5kit.pipeline import QuickstartConfig


@app.command()
def quickstart(
    workdir: Path = config_option(QuickstartConfig, "workdir"),
    config: Path = typer.Option(None, "--config", "-c", help="YAML (or a bundled config's name, e.g. quickstart_ray): real dumps (sources), hub models, GPUs (nproc_per_node), stage overrides."),
    model: str = config_option(QuickstartConfig, "model"),
    force: bool = typer.Option(False, "--force", help="Redo stages that finished in an earlier run."),
    set_: list[str] = overrides_option("--set pretrain.max_steps=20 --set consistency.k=10"),
) -> None:
    """Run the whole E5 pipeline in one command, offline by default.

    Builds a corpus from the Python standard library's documentation, curates it, filters it for
    consistency, continues contrastive pre-training of the starting model, compares the result with
    its start and BM25 on a held-out split, then exports and indexes the model. With --config, `sources:`
    (real dumps, `e5kit curate` format) replace the built-in corpus: each source then gets a held-out
    split of its own (the holdout stage) and every model is scored on each. Finished stages are skipped
    on a rerun under the same settings; a changed section redoes its stage and the ones after it.
    """
    from e5kit.config import ConfigError, load_config
    from e5kit.pipeline import Quickstart

    try:
        settings = load_config(QuickstartConfig, config, set_, options={"workdir": workdir, "model": model})
    except ConfigError as error:
        raise fail(str(error)) from error
    quickstart = Quickstart(settings, force=force, log=typer.echo)
    try:
        quickstart.check()
    except ValueError as error:
        raise fail(str(error)) from error
    summaries = quickstart.run()
    typer.secho("\nResults (held-out split, x100):", bold=True)
    typer.echo(summaries["evaluate"]["table"])
    commands = summaries["index"]["commands"]
    typer.echo(f"\nSearch the index:  {commands['search']}\nServe the model:   {commands['serve']}")
