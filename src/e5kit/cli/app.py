"""The root ``e5kit`` command; each stage module registers its commands on ``app``."""

from __future__ import annotations

import typer

from e5kit import __version__

app = typer.Typer(
    name="e5kit",
    help="E5-style text embeddings: curate weak pairs, pre-train, fine-tune, evaluate against BM25, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"e5kit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
) -> None:
    """E5-style text embeddings: every stage reads and writes files, so stages run, resume and inspect one by one."""


def fail(message: str) -> typer.Exit:
    """Print an error for the user (no traceback) and return the exit to raise."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def load_encoder(model: str, **options):
    """Load an Encoder for a command, turning a missing or malformed model into a clean error."""
    from transformers.utils import logging as transformers_logging

    from e5kit.encoder import Encoder
    from e5kit.model_format import ModelDirectoryError

    transformers_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise in a CLI
    try:
        return Encoder.load(model, **options)
    except (FileNotFoundError, ModelDirectoryError, ValueError) as error:
        raise fail(str(error)) from error
