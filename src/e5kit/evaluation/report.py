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


def bar_chart(results: list[EvalResult], path: str | Path) -> Path:
    """Grouped bars: one group per (dataset, task), one bar per model, headline metric x100."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = sorted({_column(r) for r in results})
    models = list(dict.fromkeys(r.model for r in results))
    scores = {(r.model, _column(r)): r.main_score for r in results}
    width = 0.8 / len(models)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.8 * len(columns) + 2), 4.5))
    positions = np.arange(len(columns))
    for offset, model in enumerate(models):
        heights = [scores.get((model, c), np.nan) for c in columns]  # NaN: not evaluated, no bar
        bars = axes.bar(positions + (offset - (len(models) - 1) / 2) * width, heights, width, label=model)
        axes.bar_label(bars, labels=["" if np.isnan(h) else f"{h:.1f}" for h in heights], fontsize=7)
    axes.set_xticks(positions, [c.replace(" (", "\n(") for c in columns], fontsize=8)
    axes.set_ylabel("score x100")
    axes.set_title("e5kit evaluation")
    axes.legend(fontsize=8)
    figure.tight_layout()
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
