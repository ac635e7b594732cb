"""The root ``e5kit`` command; each stage module registers its commands on ``app``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
    """Print ``error: <message>`` on one line (line breaks inside, e.g. from a library's message, become
    spaces) for the user, no traceback, and return the exit (code 2) to raise."""
    one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())
    typer.secho(f"error: {one_line}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def output_folder(path: Path, existing: tuple[str, ...] = ()) -> Path:
    """``e5kit.textio.writable_folder`` for a command: call it before loading a model, so an output folder
    that cannot be written is a one-line error (exit 2) naming it, not a traceback after the work."""
    from e5kit.textio import OutputPathError, writable_folder

    try:
        return writable_folder(path, existing)
    except OutputPathError as error:
        raise fail(str(error)) from error


def output_file(path: Path) -> Path:
    """``e5kit.textio.writable_file`` for a command (see :func:`output_folder`)."""
    from e5kit.textio import OutputPathError, writable_file

    try:
        return writable_file(path)
    except OutputPathError as error:
        raise fail(str(error)) from error


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


RESUME_HELP = (
    "Continue from the newest valid checkpoint in {output_dir}/checkpoints (exact data position); "
    "a changed max_steps takes effect at once (the learning-rate schedule is rebuilt for it)."
)


def overrides_option(example: str):
    """The ``--set key=value`` option of a config-driven stage; ``example`` shows typical overrides."""
    return typer.Option(
        None, "--set", help=f"Override a config field: key=value, value parsed as YAML; dots reach nested keys ({example})."
    )


def run_training(load_settings: Callable, train: Callable, config: Path | None, overrides: list[str] | None, resume: bool) -> None:
    """The shared body of ``pretrain`` and ``finetune``: validate the config, check that ``output_dir`` can be
    written, train, say where the outputs are.

    Args:
        load_settings: (config path, overrides) -> validated settings with an ``output_dir``; raises ConfigError naming the field.
        train: (settings, resume=...) -> path of the final model.
    """
    import logging

    from transformers.utils import logging as transformers_logging

    from e5kit.data.shards import ShardError
    from e5kit.model_format import ModelDirectoryError
    from e5kit.textio import InputFormatError
    from e5kit.config import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    transformers_logging.disable_progress_bar()
    try:
        settings = load_settings(config, overrides or [])
    except ConfigError as error:
        raise fail(str(error)) from error
    output_folder(settings.output_dir)
    try:
        final = train(settings, resume=resume)
    except (ConfigError, ShardError, InputFormatError, ModelDirectoryError, FileNotFoundError) as error:
        raise fail(str(error)) from error
    typer.echo(f"final model: {final}")
    typer.echo(f"metrics: {final.parent / 'metrics.jsonl'}; loss curve: {final.parent / 'loss_curve.png'}")
