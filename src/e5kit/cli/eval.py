"""``e5kit eval``: BEIR retrieval (dense or BM25) and MTEB-style tasks on local files, plus reports.

Each command is a thin driver over ``e5kit.evaluation``: it validates a config (defaults < --config
YAML < options < --set key=value), evaluates every --model, writes one result JSON per model into
--results-dir, and prints the scores (x100) next to published figures where known.
"""

import inspect
from pathlib import Path

import typer

from e5kit.cli.app import app, fail, load_encoder, output_file, output_folder, overrides_option
from e5kit.cli.options import config_option
from e5kit.evaluation.config import (
    ClassificationConfig,
    ClusteringConfig,
    EvalConfig,
    MappedColumnsConfig,
    PairClassificationConfig,
    RerankingConfig,
    RetrievalConfig,
    STSConfig,
)

eval_app = typer.Typer(
    help="Evaluate models: BEIR retrieval against BM25, STS, classification, clustering, pair classification, reranking.",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")

MODELS = config_option(EvalConfig, "models", "--model", "-m", note="Repeat for several.")
DATA = config_option(EvalConfig, "data", "--data", "-d", note="Required.")
SPLIT = config_option(EvalConfig, "split")
CONFIG = typer.Option(None, "--config", "-c", help="YAML config, or a bundled config's name (e.g. eval_retrieval; `e5kit config list`); options override it.")
SETS = overrides_option("--set batch_size=64 --set top_k=1000")
BATCH = config_option(EvalConfig, "batch_size")
MAX_LENGTH = config_option(EvalConfig, "max_length")
DTYPE = config_option(EvalConfig, "dtype")
DEVICE = config_option(EvalConfig, "device")
BACKEND = config_option(EvalConfig, "backend")
RESULTS = config_option(EvalConfig, "results_dir")
CACHE = config_option(EvalConfig, "cache", "--cache/--no-cache")
CACHE_DIR = config_option(EvalConfig, "cache_dir")
QUERY_ROLE = config_option(EvalConfig, "query_role")
PASSAGE_ROLE = config_option(EvalConfig, "passage_role")
MTEB_RESULTS = config_option(EvalConfig, "mteb_results")
MTEB_TASK = config_option(EvalConfig, "mteb_task", note="Their languages: --set mteb_languages=[eng-Latn].")
FORCE = typer.Option(
    False, "--force", help="Evaluate again even when RESULTS_DIR/stages/<task>__<dataset>__<split>.json says this run finished "
    "with the same models, data and settings (a rerun is otherwise skipped).",
)


#: (name, type, option) shared by every task command, appended after the task's own options.
COMMON_OPTIONS = [
    ("models", list[str], MODELS), ("data", Path, DATA), ("split", str, SPLIT), ("config", Path, CONFIG),
    ("sets", list[str], SETS), ("batch_size", int, BATCH), ("max_length", int, MAX_LENGTH), ("dtype", str, DTYPE),
    ("device", str, DEVICE), ("backend", str, BACKEND), ("results_dir", Path, RESULTS), ("cache", bool, CACHE), ("cache_dir", Path, CACHE_DIR),
    ("query_role", str, QUERY_ROLE), ("passage_role", str, PASSAGE_ROLE), ("mteb_results", Path, MTEB_RESULTS),
    ("mteb_task", str, MTEB_TASK), ("force", bool, FORCE),
]


def columns_option(schema: type[MappedColumnsConfig], example: str):
    """The ``--columns`` option of a task reading ``schema.FIELDS`` from the user's files."""
    return config_option(
        schema, "columns", "--columns",
        note=f"Its fields: {', '.join(schema.FIELDS)}. On the command line: FIELD=COLUMN,... (e.g. {example}).",
    )


def parse_columns(text: str) -> dict[str, str]:
    """``"sentence1=sentence_A,score=relatedness_score"`` -> ``{"sentence1": "sentence_A", "score": "relatedness_score"}``.

    Raises:
        typer.Exit: (via ``fail``) an item without ``=`` or with an empty side, or a field given twice.
    """
    mapping: dict[str, str] = {}
    for item in text.split(","):
        field, _, column = (part.strip() for part in item.partition("="))
        if not field or not column:
            raise fail(f"--columns {text!r}: expected FIELD=COLUMN pairs separated by commas, got {item!r}")
        if field in mapping:
            raise fail(f"--columns {text!r}: field {field!r} is given twice")
        mapping[field] = column
    return mapping


def _run(task: str, config_path: Path | None, sets: list[str] | None, force: bool = False, **options) -> None:
    from e5kit.config import ConfigError, load_config
    from e5kit.evaluation.report import markdown_table
    from e5kit.evaluation.results import EvalResult
    from e5kit.evaluation.runner import EvalStage, task_spec
    from e5kit.io.files import InputFormatError, check_input_file
    from e5kit.stage import run_stage

    if options.get("columns") is not None:
        options["columns"] = parse_columns(options["columns"])
    try:
        config = load_config(task_spec(task).config_class, config_path, sets, options)
    except ConfigError as error:
        raise fail(str(error)) from error
    output_folder(config.results_dir)
    if not config.data.is_dir():  # a data file is checked before any model loads; a folder's files when read
        try:
            check_input_file(config.data)
        except (FileNotFoundError, InputFormatError) as error:
            raise fail(str(error)) from error

    def load(name: str):
        return load_encoder(name, max_length=config.max_length, backend=config.backend, device=config.device, dtype=config.dtype)

    if config.mteb_results is not None:
        output_folder(config.mteb_results)
    progress: list[str] = []
    try:
        report = run_stage(EvalStage(task, config, load), force=force, log=progress.append)
    except (FileNotFoundError, InputFormatError, ValueError) as error:
        raise fail(str(error)) from error
    for line in progress:  # after the run, to stderr: an error stays one line, stdout the scores and tables
        typer.echo(line, err=True)
    if not report:  # a torchrun rank other than 0: rank 0 reports
        return
    written = [(EvalResult.model_validate_json(Path(path).read_text(encoding="utf-8")), Path(path)) for path in report["results"]]
    for result, path in written:
        scores = ", ".join(f"{name} {100 * value:.2f}" for name, value in result.metrics.items())
        published = f" (published: {result.published[0]:.1f}, {result.published[1]})" if result.published else ""
        typer.echo(f"{result.model} on {result.dataset}/{result.split}: {scores}{published} [{result.wall_time_s:.1f}s] -> {path}")
        if config.mteb_results is not None:
            typer.echo(f"  mteb format -> {_write_mteb(config, result)}")
    typer.echo("\n" + markdown_table([result for result, _ in written]))
    counts = retrieval_counts_table([result for result, _ in written])
    if counts:
        typer.echo(counts)


def _write_mteb(config, result) -> Path:
    from e5kit.evaluation.mteb_results import write_mteb_result

    try:
        return write_mteb_result(config.mteb_results, result, config.mteb_task, data=config.data, languages=config.mteb_languages,
                                 results_dir=config.results_dir)
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from error


def retrieval_counts_table(results) -> str:
    """What the retrieval rules did per result, as a markdown table ("" when no result is a retrieval one)."""
    rows = [r for r in results if r.task == "retrieval" and "queries_without_relevant" in r.details]
    if not rows:
        return ""
    lines = [
        "| model | data set | queries averaged | judged only non-relevant (score <= 0) | self-matches removed | empty documents |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r.details
        lines.append(
            f"| {r.model} | {r.dataset} | {d['queries_evaluated']} | {d['queries_without_relevant']} "
            f"({d['queries_without_relevant_rule']}) | {d['identical_ids_removed']} ({d['ignore_identical_ids']}) | "
            f"{d['empty_documents']} of {d['documents']} (kept, score 0) |"
        )
    return "\n".join(lines) + "\n"


def task_command(task: str):
    """Register ``function`` (whose parameters are the task's own options) as ``e5kit eval <task>``,
    with the options every task shares appended; its docstring is the command's help."""

    def register(function):
        own = list(inspect.signature(function).parameters.values())
        shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                  for name, kind, option in COMMON_OPTIONS]

        def command(**values) -> None:
            _run(task, values.pop("config"), values.pop("sets"), **values)

        command.__signature__ = inspect.Signature(own + shared)
        command.__annotations__ = {parameter.name: parameter.annotation for parameter in own + shared}
        command.__doc__ = function.__doc__
        eval_app.command(task.replace("_", "-"))(command)
        return function

    return register


@task_command("retrieval")
def retrieval(
    top_k: int = config_option(RetrievalConfig, "top_k"),
    ignore_identical_ids: str = config_option(RetrievalConfig, "ignore_identical_ids"),
    exclude_queries_without_relevant: bool = config_option(
        RetrievalConfig, "exclude_queries_without_relevant", "--exclude-queries-without-relevant/--average-queries-without-relevant"
    ),
    corpus_store: bool = config_option(RetrievalConfig, "corpus_store", "--corpus-store/--in-memory-corpus"),
    engine: str = config_option(RetrievalConfig, "engine", note="torchrun: launch this command with torchrun; rank 0 writes the results."),
    workers: int = config_option(RetrievalConfig, "workers", note="With --engine ray."),
    block_rows: int = config_option(RetrievalConfig, "block_rows"),
):
    """BEIR retrieval: nDCG@10, MAP@100, MRR@10, Recall@100 on a BEIR folder.

    The folder holds corpus.jsonl[.gz] (_id, title, text), queries.jsonl[.gz] (_id, text) and
    qrels/<split>.tsv. Use --model bm25 for the BM25 baseline next to dense models. Documents without
    visible text are kept as empty passages (score 0) and counted; the counts table after the scores
    says what each rule did.
    """


@task_command("sts")
def sts(columns: str = columns_option(STSConfig, "sentence1=sentence_A,sentence2=sentence_B,score=relatedness_score for SICK")):
    """STS: Spearman of cosine similarity with gold scores (<split>.tsv[.gz] or .jsonl[.gz] with sentence1, sentence2, score).

    Any score scale works (Spearman compares ranks); --columns reads files whose columns are named otherwise.
    """


@task_command("classification")
def classification(
    train_split: str = config_option(ClassificationConfig, "train_split"),
    samples_per_label: int = config_option(ClassificationConfig, "samples_per_label", note="All: --set samples_per_label=null."),
    experiments: int = config_option(ClassificationConfig, "experiments"),
    columns: str = columns_option(ClassificationConfig, "text=utterance,label=intent"),
):
    """Classification: logistic regression on unnormalised embeddings, test accuracy.

    The folder holds <train-split> and <split> files (.tsv[.gz] with a header, or .jsonl[.gz]) with text and
    label (or the columns --columns names).
    """


@task_command("clustering")
def clustering(
    seeds: int = config_option(ClusteringConfig, "seeds"),
    columns: str = columns_option(ClusteringConfig, "text=subject for 20 Newsgroups"),
):
    """Clustering: mini-batch k-means (k = number of labels), V-measure averaged over seeds.

    The file (.tsv[.gz] with a header, or .jsonl[.gz]) holds text and label (or the columns --columns names).
    """


@task_command("pair_classification")
def pair_classification(columns: str = columns_option(PairClassificationConfig, "label=is_paraphrase")):
    """Pair classification: cosine average precision (and best accuracy/F1) on sentence1, sentence2, 0/1 label."""


@task_command("reranking")
def reranking(columns: str = columns_option(RerankingConfig, "positive=pos,negative=neg")):
    """Reranking: MAP and MRR@10 of cosine ranking over JSONL records {query, positive: [...], negative: [...]}."""


@eval_app.command()
def card(
    model_dir: Path = typer.Argument(..., help="A model folder (e5kit or sentence-transformers); its README.md gets the results."),
    results_dir: Path = typer.Argument(..., help="Folder of result JSON files written by the eval commands."),
) -> None:
    """Write the scores measured on MODEL_DIR into its model card: the model-index of the card's YAML front
    matter (shown by the Hugging Face Hub) and an Evaluation table.

    Results are matched to the model by the hash of its weights, so a result measured on a copy or under
    another name counts; a model without a card gets e5kit's.
    """
    from e5kit.evaluation.cache import weights_hash
    from e5kit.evaluation.results import read_results, results_of_model
    from e5kit.model_card import build_model_card, with_results

    readme = output_file(model_dir / "README.md")
    try:
        results = read_results(results_dir)
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from error
    encoder = load_encoder(str(model_dir), device="cpu")
    measured = results_of_model(results, weights_hash(encoder))
    if not measured:
        raise fail(f"{results_dir}: none of its {len(results)} results was measured on the weights of {model_dir}")
    name = model_dir.resolve().name
    text = readme.read_text(encoding="utf-8") if readme.is_file() else build_model_card(encoder, title="e5kit model", model_name=name)
    readme.write_text(with_results(text, measured, model_name=name), encoding="utf-8")
    typer.echo(f"{readme}: {len(measured)} results in the model-index ({', '.join(sorted({r.task for r in measured}))})")


@eval_app.command()
def report(
    results_dir: Path = typer.Argument(..., help="Folder of result JSON files written by the eval commands."),
    output: Path = typer.Option(None, "--output", "-o", help="Folder for report.md and report.png (default: RESULTS_DIR)."),
) -> None:
    """Render every result in RESULTS_DIR as a markdown comparison table and a bar-chart PNG."""
    from e5kit.evaluation.report import write_report

    try:
        text, markdown_path, png_path = write_report(results_dir, output)
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from error
    typer.echo(text)
    typer.echo(f"wrote {markdown_path} and {png_path}")
