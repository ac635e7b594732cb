"""Plots a user can read (issue 18, item 7): training curves titled for their stage with units on the
axes, and an evaluation chart whose labels, values and legend do not overlap."""

from __future__ import annotations

import itertools

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from e5kit.evaluation.report import chart_figure
from e5kit.evaluation.results import EvalResult
from e5kit.training.finetune import Distillation
from e5kit.training.metrics import loss_curve_figure, plot_loss_curve
from e5kit.training.trainer import InfoNCE

RECORDS = [{"step": step, "loss": 2.0 / step, "lr": 1e-4, "pairs_per_s": 40.0 + step} for step in range(1, 11)]


@pytest.fixture
def close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize(("objective", "title", "loss", "throughput"), [
    (InfoNCE, "contrastive pre-training", "InfoNCE loss (nats)", "pairs/s"),
    (Distillation, "fine-tuning", "KL + alpha * InfoNCE loss (nats)", "query groups/s"),
])
def test_training_curves_are_titled_for_their_stage_with_units(objective, title, loss, throughput, close_figures):
    # Given ten steps of metrics; When a stage's curves are drawn
    figure = loss_curve_figure(RECORDS, objective.curve)
    loss_axis, speed_axis = figure.axes
    # Then the title names the stage (fine-tuning is not called pre-training) and every axis says its unit
    assert figure._suptitle.get_text() == f"{title}: 10 optimizer steps"
    assert loss_axis.get_ylabel() == loss
    assert speed_axis.get_ylabel() == throughput
    assert speed_axis.get_xlabel() == "optimizer step (steps)"
    # And the throughput panel plots pairs_per_s against step
    assert list(speed_axis.lines[0].get_ydata()) == [r["pairs_per_s"] for r in RECORDS]


def test_plot_loss_curve_writes_a_png(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(f'{{"step": {r["step"]}, "loss": {r["loss"]}, "pairs_per_s": 40.0}}\n' for r in RECORDS))
    png = plot_loss_curve(metrics, tmp_path / "loss_curve.png", Distillation.curve)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def result(model: str, dataset: str, task: str, metric: str, score: float) -> EvalResult:
    return EvalResult(
        model=model, model_path=None, weights_hash=None, task=task, dataset=dataset, data_path=dataset, split="test",
        metrics={metric: score}, main_metric=metric, prefix_policy={}, max_length=None, dtype=None, e5kit_version="0",
        wall_time_s=1.0, created_at="2025-01-01T00:00:00+00:00",
    )


def _overlaps(boxes) -> list[tuple]:
    return [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]


def test_the_eval_chart_has_no_overlapping_labels_values_or_legend(close_figures):
    # Given three models (long names) on five data sets (long names and metrics), one model missing one
    models = ["bm25", "all-MiniLM-L6-v2", "multilingual-e5-small-enpt-q4dq-finetuned-on-scifact"]
    tasks = [("scifact", "retrieval", "ndcg_at_10"), ("stsb", "sts", "spearman"), ("banking77-raw-release", "classification", "accuracy"),
             ("twentynewsgroups-subjects", "clustering", "v_measure"), ("nfcorpus", "retrieval", "ndcg_at_10")]
    results = [result(m, d, t, metric, 0.3 + 0.1 * i + 0.05 * j) for i, m in enumerate(models) for j, (d, t, metric) in enumerate(tasks)
               if (m, d) != ("bm25", "stsb")]
    # When the chart is drawn
    figure = chart_figure(results)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    ticks = [label.get_window_extent(renderer) for label in axes.get_xticklabels()]
    values = [text.get_window_extent(renderer) for text in axes.texts if text.get_text()]
    legend = figure.legends[0].get_window_extent(renderer)
    # Then group labels do not overlap each other, values do not overlap each other, and the legend covers no bar
    assert _overlaps(ticks) == [] and _overlaps(values) == []
    assert len(values) == len(results)
    assert not any(legend.overlaps(bar.get_window_extent(renderer)) for bar in axes.patches)
    # And every text lies inside the figure
    frame = figure.bbox
    for box in [*ticks, *values, legend, axes.title.get_window_extent(renderer)]:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
    assert axes.get_title() == "e5kit evaluation: headline metric per data set and model"
    assert axes.get_ylabel() == "score x100 (each group's headline metric)"
