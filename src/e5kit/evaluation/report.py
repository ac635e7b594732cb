"""Comparison report over a results folder: a markdown table and a grouped bar chart (PNG).

One row (one bar per group) per model as measured: results whose model folders share a name but that
differ in backend, precision, export file or weights hash are separate rows, each labelled by the name and
only the qualifiers that tell it apart (``para-ov (torch)``, ``para-ov (openvino)``, ``final (1a2b3c4d)``).
Several results of one such model on one task, data set and split (a rerun, a copied file) show the newest;
a note under the table names the files not shown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from e5kit.evaluation.results import EvalResult, read_result_files


class ModelKey(NamedTuple):
    """The model a result measured, as its file records it: folder (or bundled) name, weights hash, backend
    ("torch" unless ``details.backend`` says otherwise; None for BM25), export file and precision."""

    model: str
    weights_hash: str | None
    backend: str | None
    file: str | None
    dtype: str | None


def model_key(result: EvalResult) -> ModelKey:
    """The :class:`ModelKey` of ``result``."""
    backend = result.details.get("backend") or {}
    default = "torch" if result.weights_hash else None  # only BM25 has no weights
    # An OpenVINO int8 IR's dtype is "int8" at either inference precision: the precision tells the two runs apart.
    dtype = f"{result.dtype}, {backend['precision']}" if backend.get("precision") and backend["precision"] != result.dtype else result.dtype
    return ModelKey(result.model, result.weights_hash, backend.get("name", default), backend.get("file"), dtype)


#: What a label adds to a shared name, in this order, while two of its models still read alike.
QUALIFIERS = (
    lambda key: key.backend,
    lambda key: key.dtype,
    lambda key: key.file,
    lambda key: key.weights_hash and key.weights_hash[:8],
)


def model_labels(keys: Sequence[ModelKey]) -> dict[ModelKey, str]:
    """A row label per distinct key: the plain name where no other key shares it, else the name followed by
    the fewest :data:`QUALIFIERS` (backend, precision, export file, short weights hash) that set the keys of
    that name apart, e.g. ``para-ov (openvino)``."""
    labels = {}
    for name in dict.fromkeys(key.model for key in keys):
        group = list(dict.fromkeys(key for key in keys if key.model == name))
        parts: dict[ModelKey, tuple] = {key: () for key in group}
        for qualifier in QUALIFIERS:
            alike = Counter(parts.values())
            if len({qualifier(key) for key in group if alike[parts[key]] > 1}) > 1:
                parts = {key: (*parts[key], qualifier(key)) for key in group}
        for key in group:
            shown = [str(part) for part in parts[key] if part]
            labels[key] = f"{name} ({', '.join(shown)})" if shown else name
    return labels


def latest_results(results: Sequence[EvalResult], sources: Sequence[str] | None = None) -> tuple[list[EvalResult], list[str]]:
    """The newest result (by ``created_at``) of each model (:class:`ModelKey`), task, data set and split.

    Args:
        results: The results, in the order read (on equal ``created_at``, the later one is kept).
        sources: Where each result came from (its file's name), to name them in the notes.

    Returns:
        (the results kept, in the order first seen; one note per model, task, data set and split that had
        several: which is shown and why, and which are not, each with its score and ``created_at``).
    """
    groups: dict[tuple, list[int]] = {}
    for index, result in enumerate(results):
        groups.setdefault((model_key(result), result.task, result.dataset, result.split), []).append(index)
    labels = model_labels([model_key(result) for result in results])

    def described(index: int) -> str:
        result = results[index]
        return (f"{sources[index]} " if sources is not None else "") + f"({result.main_score:.1f}, created {result.created_at})"

    kept, notes = [], []
    for (key, task, dataset, split), indices in groups.items():
        # created_at is UTC ISO 8601 (results.now), so text order is time order
        newest = max(indices, key=lambda index: (results[index].created_at, index))
        kept.append(results[newest])
        others = [index for index in indices if index != newest]
        if not others:
            continue
        tied = any(results[index].created_at == results[newest].created_at for index in others)
        why = "as new as another, read last" if tied else "the newest"
        notes.append(
            f"{labels[key]} on {dataset}/{split} ({task}): {len(indices)} results of the same model; "
            f"shown ({why}): {described(newest)}; not shown: {'; '.join(map(described, others))}"
        )
    return kept, notes


class _Grid(NamedTuple):
    """What the table and the chart draw: each result's row label, the rows and columns in order, and
    (row label, column) -> score x100."""

    labels: list[str]
    rows: list[str]
    columns: list[str]
    scores: dict[tuple[str, str], float]


def _column_names(results: Sequence[EvalResult]) -> list[str]:
    """Each result's column, ``dataset (task, metric)``; ``dataset/split (task, metric)`` where a data set's
    task was scored on several splits, which would otherwise share a cell."""
    splits = Counter((dataset, task) for dataset, task, _ in {(r.dataset, r.task, r.split) for r in results})
    return [
        f"{r.dataset}/{r.split} ({r.task}, {r.main_metric})" if splits[r.dataset, r.task] > 1 else f"{r.dataset} ({r.task}, {r.main_metric})"
        for r in results
    ]


def _grid(results: Sequence[EvalResult]) -> _Grid:
    keys = [model_key(r) for r in results]
    names = model_labels(keys)
    labels = [names[key] for key in keys]
    columns = _column_names(results)
    return _Grid(
        labels=labels,
        rows=list(dict.fromkeys(labels)),
        columns=sorted(set(columns)),
        scores={(label, column): r.main_score for label, column, r in zip(labels, columns, results, strict=True)},
    )


def markdown_table(results: Sequence[EvalResult], sources: Sequence[str] | None = None) -> str:
    """Models as rows, (dataset, task, headline metric) as columns, scores x100; published figures, where
    known, follow in a second table, and the results not shown (:func:`latest_results`) in a list.

    Args:
        results: The results to tabulate.
        sources: Where each result came from (its file's name), to name the ones not shown.

    Returns:
        The markdown text, ending in a newline.
    """
    results, notes = latest_results(results, sources)
    grid = _grid(results)
    lines = ["| model | " + " | ".join(grid.columns) + " |", "|---|" + "---|" * len(grid.columns)]
    for row in grid.rows:
        cells = [f"{grid.scores[row, c]:.1f}" if (row, c) in grid.scores else "-" for c in grid.columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    published = [(label, r) for label, r in zip(grid.labels, results, strict=True) if r.published]
    if published:
        lines += ["", "| model | data set | measured | published | source |", "|---|---|---|---|---|"]
        for label, r in published:
            score, source = r.published
            lines.append(f"| {label} | {r.dataset} | {r.main_score:.1f} | {score:.1f} | {source} |")
    if notes:
        lines += ["", "Not shown (several results of one model, task, data set and split; the newest is shown):"]
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


#: Width of one bar (inches): its value label ("100.0" at 8 points) fits on it, unrotated.
BAR_INCHES = 0.42
#: Width of one group (inches) at least: room for its label, wrapped at ``LABEL_CHARS``.
GROUP_INCHES = 1.4
LABEL_CHARS = 18


def _group_label(column: str) -> str:
    """A group's label under the axis: the data set, then (task, metric), each wrapped at ``LABEL_CHARS``."""
    import textwrap

    dataset, _, rest = column.partition(" (")
    lines = textwrap.wrap(dataset, LABEL_CHARS, break_long_words=True) + textwrap.wrap(f"({rest}", LABEL_CHARS, break_long_words=True)
    return "\n".join(lines)


def chart_figure(results: Sequence[EvalResult]):
    """Grouped bars: one group per (dataset, task), one bar per model (labelled as :func:`markdown_table`'s
    rows, the newest of a rerun), headline metric x100 written on each.

    The figure grows with the number of groups and models, so that neither the group labels nor the
    values overlap; the legend sits beside the axes, never over a bar.

    Returns:
        The matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    _, models, columns, scores = _grid(latest_results(results)[0])
    group_inches = max(GROUP_INCHES, len(models) * BAR_INCHES / 0.8)  # the bars fill 80% of a group
    figure, axes = plt.subplots(figsize=(len(columns) * group_inches + 3.5, 5.0), layout="constrained")
    positions = np.arange(len(columns))
    width = 0.8 / len(models)
    for offset, model in enumerate(models):
        heights = [scores.get((model, c), np.nan) for c in columns]  # NaN: not evaluated, no bar
        bars = axes.bar(positions + (offset - (len(models) - 1) / 2) * width, heights, width, label=model)
        axes.bar_label(bars, labels=["" if np.isnan(h) else f"{h:.1f}" for h in heights], fontsize=8, padding=2)
    axes.set_xticks(positions, [_group_label(c) for c in columns], fontsize=8)
    axes.set_xlim(-0.5, len(columns) - 0.5)
    axes.set_ylim(0, max(10.0, 1.12 * max(scores.values(), default=0.0)))  # room for the values above the bars
    axes.set_ylabel("score x100 (each group's headline metric)")
    axes.set_title("e5kit evaluation: headline metric per data set and model")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    figure.legend(loc="outside right upper", fontsize=8, title="model", title_fontsize=8)
    return figure


def bar_chart(results: Sequence[EvalResult], path: str | Path) -> Path:
    """Write :func:`chart_figure` of ``results`` to the PNG ``path``; returns ``path``."""
    import matplotlib.pyplot as plt

    figure = chart_figure(results)
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(results_dir: str | Path, output_dir: str | Path | None = None) -> tuple[str, Path, Path]:
    """Write ``report.md`` and ``report.png`` for every result in ``results_dir``: a row per model as measured,
    the newest of a rerun, the files not shown listed under the table (:func:`markdown_table`).

    Returns:
        (markdown text, markdown path, PNG path).

    Raises:
        FileNotFoundError: ``results_dir`` does not exist or holds no result file.
        ValueError: a JSON file in it that is not a result.
    """
    files = read_result_files(results_dir)
    results = [result for _, result in files]
    folder = Path(output_dir or results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown_table(results, [path.name for path, _ in files])
    markdown_path = folder / "report.md"
    markdown_path.write_text(text, encoding="utf-8")
    return text, markdown_path, bar_chart(results, folder / "report.png")
