"""The root ``e5kit`` command; each stage module registers its commands on ``app``."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from enum import Enum
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from e5kit import progress
from e5kit.encoder.model_format import BACKENDS

#: Exit status of a failure the user can fix in the command: bad input, a usage or config error (and click's own usage errors).
EXIT_BAD_INPUT = 2
#: Exit status of a failure while running: out of memory, a model that fails to load for a reason other than its path, a bug.
EXIT_RUNTIME_FAILURE = 1
#: Exit status when the reader of standard output closed it early (128 + SIGPIPE, what a shell reports for
#: a Unix tool stopped that way); nothing is printed.
EXIT_BROKEN_PIPE = 141

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 2 bad input, usage or config (a one-line error naming the file or option); "
    "1 a runtime failure such as out of memory, a model that fails to load for a reason other than its "
    "path, or an unexpected error (a one-line error; -v or --log-level debug adds the traceback); "
    "141 the reader of the output stopped early (e5kit ... | head), nothing printed."
)


#: typer >= 0.29 ships its own copy of click; its usage errors (no such option, a bad value) derive from
#: TyperException, not from click's ClickException, and must reach click's handler too (exit 2).
_TYPER_CLICK_ERRORS: tuple[type[Exception], ...] = (typer.TyperException,) if hasattr(typer, "TyperException") else ()


class _Group(TyperGroup):
    """The root group: an exception that no command turned into a one-line error is a runtime failure."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException, *_TYPER_CLICK_ERRORS):
            raise  # click's own handling: usage errors print the usage and exit 2
        except BrokenPipeError:
            # The reader of our output left (`e5kit search ... | head -1`): stop quietly, as Unix tools do.
            # Python's recipe: point stdout at /dev/null so the interpreter's final flush cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(code=EXIT_BROKEN_PIPE) from None
        except Exception as error:
            raise runtime_failure(error) from error


app = typer.Typer(
    name="e5kit",
    help="E5-style text embeddings: curate weak pairs, pre-train, fine-tune, evaluate against BM25, serve.",
    epilog=EXIT_CODES_HELP,
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help text is printed as written: rich markup would eat examples such as --set data.paths=[a/,b/].
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from e5kit.version import package_version  # read from the installed metadata only when asked for

        typer.echo(f"e5kit {package_version()}")
        raise typer.Exit()


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


#: The level chosen with --log-level / -v / -q; None = the command's own default (see ``configure_logging``).
_chosen_level: int | None = None


def configure_logging(default: int = logging.WARNING) -> None:
    """Send log records of ``default`` level and above (or the level chosen on the command line) to
    standard error, as ``LEVEL logger: message`` lines."""
    level = _chosen_level if _chosen_level is not None else default
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # a no-op where a handler exists already
    logging.getLogger().setLevel(level)
    # faiss reports at info which of its CPU builds it loaded, with a traceback-like line per missing build
    logging.getLogger("faiss").setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    log_level: LogLevel = typer.Option(
        None, "--log-level", help="Log messages shown on standard error, from this level up (default: info for training, else warning).",
        case_sensitive=False, show_default=False,
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v: --log-level info; -vv: debug.", show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="--log-level error: only errors are logged.", show_default=False),
) -> None:
    """E5-style text embeddings: every stage reads and writes files, so stages run, resume and inspect one by one.

    The logging options go before the command: e5kit -q eval sts ..., e5kit --log-level debug serve ...
    """
    global _chosen_level
    chosen = [name for name, given in (("--log-level", log_level is not None), ("-v", verbose > 0), ("-q", quiet)) if given]
    if len(chosen) > 1:
        raise fail(f"{' and '.join(chosen)} each set the log level; give one of them")
    _chosen_level = None
    progress.set_quiet(quiet or log_level == LogLevel.error)
    if not progress.progress_shown():
        # transformers' and the Hub's own bars (loading weights, writing model shards) follow e5kit's rule too
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when they are first imported
        if "huggingface_hub" in sys.modules:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        if "transformers" in sys.modules:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
    if log_level is not None:
        _chosen_level = logging.getLevelName(log_level.value.upper())
    elif verbose:
        _chosen_level = logging.DEBUG if verbose > 1 else logging.INFO
    elif quiet:
        _chosen_level = logging.ERROR
    if _chosen_level is None:
        return
    configure_logging()
    # transformers keeps a level of its own (read from TRANSFORMERS_VERBOSITY when it is first imported); it
    # follows -q and debug, and stays at warning for info, where it would print every model's full config.
    transformers_level = _chosen_level if _chosen_level in (logging.DEBUG, logging.ERROR) else logging.WARNING
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity(transformers_level)
    else:
        os.environ["TRANSFORMERS_VERBOSITY"] = logging.getLevelName(transformers_level).lower()


def _print_error(message: str) -> None:
    """``error: <message>`` on standard error, on one line (line breaks inside, e.g. from a library's message, become spaces)."""
    one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())
    typer.secho(f"error: {one_line}", err=True, fg=typer.colors.RED)


def fail(message: str) -> typer.Exit:
    """Print ``error: <message>`` for input the user can fix, without a traceback, and return the exit
    (:data:`EXIT_BAD_INPUT`) to raise."""
    _print_error(message)
    return typer.Exit(code=EXIT_BAD_INPUT)


def runtime_failure(error: Exception) -> typer.Exit:
    """Print a failure that is not the input's fault as one ``error:`` line (after the traceback with -v or
    --log-level info/debug) and return the exit (:data:`EXIT_RUNTIME_FAILURE`) to raise."""
    if _chosen_level is not None and _chosen_level <= logging.INFO:
        traceback.print_exception(error)
        hint = ""
    else:
        hint = " (e5kit -v ... shows the traceback)"
    detail = str(error).strip()
    _print_error(f"{type(error).__name__}{': ' + detail if detail else ''}{hint}")
    return typer.Exit(code=EXIT_RUNTIME_FAILURE)


def output_folder(path: Path, existing: tuple[str, ...] = (), replaces: str | None = None) -> Path:
    """``e5kit.io.files.writable_folder`` for a command: call it before loading a model, so an output folder
    that cannot be written is a one-line error (exit 2) naming it, not a traceback after the work."""
    from e5kit.io.files import OutputPathError, writable_folder

    try:
        return writable_folder(path, existing, replaces)
    except OutputPathError as error:
        raise fail(str(error)) from error


def output_file(path: Path) -> Path:
    """``e5kit.io.files.writable_file`` for a command (see :func:`output_folder`)."""
    from e5kit.io.files import OutputPathError, writable_file

    try:
        return writable_file(path)
    except OutputPathError as error:
        raise fail(str(error)) from error


#: The encoder backends a command can load (``e5kit.encoder.model_format.BACKENDS``).
Backend = Enum("Backend", {name: name for name in BACKENDS}, type=str)

BACKEND_HELP = (
    "torch; onnx for a model directory written by `e5kit export onnx`; openvino for one written by "
    "`e5kit export openvino` (or the fp32 graph of an ONNX export), at the precision the export chose; "
    "auto for the backend, file and precision `e5kit export auto` measured fastest on its machine (torch without that record)."
)


def load_encoder(model: str, **options):
    """Load an Encoder for a command, turning a missing or malformed model into a clean error."""
    from transformers.utils import logging as transformers_logging

    from e5kit.encoder import Encoder
    from e5kit.encoder.model_format import ModelDirectoryError

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


#: ``--force`` of every stage command: its output folder's report.json marks a finished run (``e5kit.stage``).
FORCE_OPTION = typer.Option(
    False, "--force", help="Redo the stage even when OUTPUT_DIR/report.json says it finished with the same settings and inputs "
    "(a rerun is otherwise skipped; an unfinished run resumes)."
)


def run_training(stage_class: type, config: Path | None, overrides: list[str] | None, resume: bool, force: bool) -> None:
    """The shared body of ``pretrain`` and ``finetune``: validate the config, check that ``output_dir`` can be
    written, run the training stage (skipped when OUTPUT_DIR/report.json says it finished with the same
    settings and inputs), say where the outputs are.

    Args:
        stage_class: ``PretrainStage`` or ``FinetuneStage``; its config class is read by ``e5kit.config.load_config``.
        resume: ``--resume``: continue from the newest checkpoint whatever settings wrote it.
        force: ``--force``: train again from step 0 (the folder's checkpoints are removed).
    """
    from transformers.utils import logging as transformers_logging

    from e5kit.config import ConfigError, load_config
    from e5kit.encoder.model_format import ModelDirectoryError
    from e5kit.io.files import InputFormatError
    from e5kit.io.pairs import ShardError
    from e5kit.stage import UPSTREAM_ENV, run_stage

    configure_logging(default=logging.INFO)
    transformers_logging.disable_progress_bar()
    try:
        settings = load_config(stage_class.config_class, config, overrides)
    except ConfigError as error:
        raise fail(str(error)) from error
    output_folder(settings.output_dir)
    try:
        evaluator = None
        if settings.eval_data:
            from e5kit.evaluation.retrieval import retrieval_evaluator

            evaluator = retrieval_evaluator(settings.eval_data)
        stage = stage_class(settings, evaluator, resume=resume and not force, restart=force)
        report = run_stage(stage, force=force, log=typer.echo, upstream=os.environ.get(UPSTREAM_ENV, ""))
    except (ConfigError, ShardError, InputFormatError, ModelDirectoryError, FileNotFoundError) as error:
        raise fail(str(error)) from error
    if not report:  # a torchrun rank other than 0 trained its share; rank 0 reports
        return
    final = Path(report["model"])
    typer.echo(f"final model: {final}")
    typer.echo(f"metrics: {final.parent / 'metrics.jsonl'}; loss curve: {final.parent / 'loss_curve.png'}")
