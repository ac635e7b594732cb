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
    """Print each bundled config's name and its opening comment (what it runs), wrapped to the terminal."""
    import shutil
    import textwrap

    from e5kit.config import bundled_configs

    configs = bundled_configs()
    width = max(map(len, configs)) + 2
    columns = max(shutil.get_terminal_size().columns, width + 30)
    for name, path in configs.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        comment = []
        for line in lines:  # the opening comment, up to a blank or indented (example command) comment line or a setting
            if not line.startswith("#") or not line.strip("# ") or line.startswith("#  "):
                break
            comment.append(line.lstrip("# ").rstrip())
        wrapped = textwrap.wrap(" ".join(comment), columns - width) or [""]
        typer.echo(f"{name:<{width}}{wrapped[0]}")
        for more in wrapped[1:]:
            typer.echo(" " * width + more)


@config_app.command("show")
def show(name: str = typer.Argument(..., help="A name from `e5kit config list` (with or without .yaml).")) -> None:
    """Print a bundled config as it is installed (redirect it to a file to edit your own copy)."""
    from e5kit.config import bundled_configs

    configs = bundled_configs()
    path = configs.get(name.removesuffix(".yaml"))
    if path is None:
        raise fail(f"no bundled config named {name!r}; bundled: {', '.join(configs)}")
    typer.echo(path.read_text(encoding="utf-8"), nl=False)
