"""The training log: one JSON object per optimizer step in ``metrics.jsonl``, and a loss-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from e5kit.textio import AtomicFile, write_text_atomic


class MetricsLog:
    """Append-only JSONL of per-step metrics.

    Args:
        path: The ``metrics.jsonl`` file.
        keep_until_step: On resume, the checkpoint's step: records after it (written by the interrupted
            run past its last checkpoint) are dropped, since the resumed run writes them again.
            None starts a new log.
    """

    def __init__(self, path: Path, keep_until_step: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = [] if keep_until_step is None else [r for r in read_metrics(path) if r.get("step", 0) <= keep_until_step]
        write_text_atomic(path, "".join(json.dumps(record) + "\n" for record in kept))
        self._handle = path.open("a", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics file (an unfinished last line, from a killed run, is ignored)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_loss_curve(metrics_path: Path, png_path: Path) -> Path:
    """Plot training loss (and its running mean) against step into ``png_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_metrics(metrics_path) if "loss" in r]
    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    window = max(1, len(losses) // 20)
    smoothed = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(steps, losses, alpha=0.35, label="loss")
    axis.plot(steps, smoothed, label=f"running mean ({window} steps)")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("InfoNCE loss")
    axis.set_title("contrastive pre-training")
    axis.legend()
    figure.tight_layout()
    with AtomicFile(png_path) as staged:
        figure.savefig(staged.temporary, dpi=100, format="png")
    plt.close(figure)
    return png_path
