"""The training log: one JSON object per optimizer step in ``metrics.jsonl`` (mirrored to TensorBoard when
asked), and a loss-curve PNG."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e5kit.data.skips import SkipCounter
from e5kit.io.files import AtomicFile, write_text_atomic
from e5kit.io.tables import iter_jsonl


class MetricsLog:
    """Append-only JSONL of per-step metrics, optionally mirrored as TensorBoard scalars.

    Args:
        path: The ``metrics.jsonl`` file.
        keep_until_step: On resume, the checkpoint's step: records after it (written by the interrupted
            run past its last checkpoint) are dropped, since the resumed run writes them again.
            None starts a new log.
        tensorboard_dir: Also write every numeric field of each record to TensorBoard event files here
            (see ``scalars``); None writes none.

    Raises:
        ImportError: ``tensorboard_dir`` is given and the ``tensorboard`` package is missing, in one line
            saying how to install it.
    """

    def __init__(self, path: Path, keep_until_step: int | None = None, tensorboard_dir: Path | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tensorboard = None if tensorboard_dir is None else tensorboard_writer(tensorboard_dir, keep_until_step)
        kept = [] if keep_until_step is None else [r for r in read_metrics(path) if r.get("step", 0) <= keep_until_step]
        write_text_atomic(path, "".join(json.dumps(record) + "\n" for record in kept))
        self._handle = path.open("a", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        if self._tensorboard is not None:
            step = record["step"]  # the x axis, not a curve
            # evaluation scores get a section of their own: eval/<data set>/<metric>, beside train/...
            tags = scalars({key: value for key, value in record.items() if key not in ("step", "eval")})
            tags.update(scalars(record.get("eval", {}), "eval"))
            for tag, value in tags.items():
                self._tensorboard.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        self._handle.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def require_tensorboard() -> None:
    """Check, without importing it, that the ``tensorboard`` package torch's writer needs is installed.

    Raises:
        ImportError: it is not, in one line saying how to install it.
    """
    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError("tensorboard logging needs the tensorboard package: pip install 'e5kit[tensorboard]'")


def tensorboard_writer(folder: Path, keep_until_step: int | None = None):
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``folder``; on resume (``keep_until_step``) TensorBoard
    hides the interrupted run's points after that step, as ``MetricsLog`` drops them from the JSONL.

    Raises:
        ImportError: the ``tensorboard`` package is missing (torch's writer needs it).
    """
    require_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    purge_step = None if keep_until_step is None else keep_until_step + 1
    # a 10 s flush (torch's default is 120 s) so a user watching TensorBoard sees steps as they come
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step, flush_secs=10)


def scalars(record: dict[str, Any], prefix: str = "train") -> dict[str, float]:
    """The TensorBoard tags and values of a metrics record: every number, nested dicts joined with "/", e.g.
    ``{"loss": 0.7, "sources": {"wiki": 60}}`` -> ``{"train/loss": 0.7, "train/sources/wiki": 60.0}``;
    strings and lists are skipped."""
    found: dict[str, float] = {}
    for key, value in record.items():
        tag = f"{prefix}/{key}"
        if isinstance(value, dict):
            found.update(scalars(value, tag))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[tag] = float(value)
    return found


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics file; [] when there is none. An unfinished last line (from a killed run)
    is passed over: the table reader's counted mode, whose count nobody needs here."""
    if not path.is_file():
        return []
    return [record for _, record in iter_jsonl(path, SkipCounter())]


@dataclass(frozen=True)
class CurveLabels:
    """What a training stage's curves show: the figure's title, the loss's name and what a throughput unit is."""

    title: str
    loss: str
    throughput: str


def loss_curve_figure(records: list[dict[str, Any]], labels: CurveLabels):
    """The figure of ``metrics.jsonl`` records: loss (and its running mean) above throughput, both against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in records if "loss" in r]
    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    window = max(1, len(losses) // 20)
    smoothed = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
    figure, (loss_axis, speed_axis) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(2, 1))
    figure.suptitle(f"{labels.title}: {len(steps):,} optimizer steps")
    loss_axis.plot(steps, losses, alpha=0.35, label="loss per step")
    loss_axis.plot(steps, smoothed, label=f"running mean ({window} steps)")
    loss_axis.set_ylabel(f"{labels.loss} (nats)")
    loss_axis.set_title("training loss", fontsize=10)
    loss_axis.legend()
    loss_axis.grid(alpha=0.3)
    speed_axis.plot(steps, [r.get("pairs_per_s", float("nan")) for r in records], color="tab:green")
    speed_axis.set_ylabel(labels.throughput)
    speed_axis.set_title(f"throughput ({labels.throughput})", fontsize=10)
    speed_axis.set_xlabel("optimizer step (steps)")
    speed_axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_loss_curve(metrics_path: Path, png_path: Path, labels: CurveLabels) -> Path:
    """Write :func:`loss_curve_figure` of the records in ``metrics_path`` to ``png_path``."""
    import matplotlib.pyplot as plt

    figure = loss_curve_figure(read_metrics(metrics_path), labels)
    with AtomicFile(png_path) as staged:
        figure.savefig(staged.temporary, dpi=100, format="png")
    plt.close(figure)
    return png_path
