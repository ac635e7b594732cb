"""``e5kit config list`` and ``e5kit config show NAME``: the example configs installed with e5kit.

Every ``--config`` option also takes a bundled config's name (``--config pretrain``), so the
examples work from any folder; ``e5kit config show pretrain > my.yaml`` starts a config of your own.
"""

from __future__ import annotations

import typer

from e5kit.cli.app import app, fail

config_app = typer.Typer(
    help="The example configs installed with e5kit; any --config option also takes their names (--config pretrain).",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")


@config_app.command("list")
def list_configs() -> None:
    """Print each bundled config's name and the first line of its comment (what it runs)."""
    from e5kit.config import bundled_configs

    configs = bundled_configs()
    width = max(map(len, configs))
    for name, path in configs.items():
        first = next((line.lstrip("# ").rstrip() for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")), "")
        typer.echo(f"{name:<{width}}  {first}")


@config_app.command("show")
def show(name: str = typer.Argument(..., help="A name from `e5kit config list` (with or without .yaml).")) -> None:
    """Print a bundled config as it is installed (redirect it to a file to edit your own copy)."""
    from e5kit.config import bundled_configs

    configs = bundled_configs()
    path = configs.get(name.removesuffix(".yaml"))
    if path is None:
        raise fail(f"no bundled config named {name!r}; bundled: {', '.join(configs)}")
    typer.echo(path.read_text(encoding="utf-8"), nl=False)
