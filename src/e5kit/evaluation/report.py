"""Comparison report over a results folder: a markdown table and a grouped bar chart (PNG)."""

from __future__ import annotations

from pathlib import Path

from e5kit.evaluation.results import EvalResult, read_results


def _column(result: EvalResult) -> str:
    return f"{result.dataset} ({result.task}, {result.main_metric})"


def markdown_table(results: list[EvalResult]) -> str:
    """Models as rows, (dataset, task, headline metric) as columns, scores x100; published figures, where
    known, follow in a second table."""
    columns = sorted({_column(r) for r in results})
    models = list(dict.fromkeys(r.model for r in results))
    scores = {(r.model, _column(r)): r.main_score for r in results}
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for model in models:
        cells = [f"{scores[model, c]:.1f}" if (model, c) in scores else "-" for c in columns]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    published = [r for r in results if r.published]
    if published:
        lines += ["", "| model | data set | measured | published | source |", "|---|---|---|---|---|"]
        for r in published:
            score, source = r.published
            lines.append(f"| {r.model} | {r.dataset} | {r.main_score:.1f} | {score:.1f} | {source} |")
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


def chart_figure(results: list[EvalResult]):
    """Grouped bars: one group per (dataset, task), one bar per model, headline metric x100 written on each.

    The figure grows with the number of groups and models, so that neither the group labels nor the
    values overlap; the legend sits beside the axes, never over a bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = sorted({_column(r) for r in results})
    models = list(dict.fromkeys(r.model for r in results))
    scores = {(r.model, _column(r)): r.main_score for r in results}
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


def bar_chart(results: list[EvalResult], path: str | Path) -> Path:
    """Write :func:`chart_figure` of ``results`` to the PNG ``path``."""
    import matplotlib.pyplot as plt

    figure = chart_figure(results)
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(results_dir: str | Path, output_dir: str | Path | None = None) -> tuple[str, Path, Path]:
    """Write ``report.md`` and ``report.png`` for every result in ``results_dir``.

    Returns:
        (markdown text, markdown path, PNG path).
    """
    results = read_results(results_dir)
    folder = Path(output_dir or results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown_table(results)
    markdown_path = folder / "report.md"
    markdown_path.write_text(text, encoding="utf-8")
    return text, markdown_path, bar_chart(results, folder / "report.png")
