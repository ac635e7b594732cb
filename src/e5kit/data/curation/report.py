"""The curation report: per-source totals, ``report.json``, ``report.md`` and the length histograms.

Every unit a reader produces (a candidate pair or a skipped record) ends in exactly one bucket, so per
source ``read == kept + sum(dropped)``; the report checks it. Every drop keeps where it came from: per
reason, the report lists the count per file and the first (file, line) examples (``drop_where``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from e5kit.data.skips import SkipCounter
from e5kit.io.files import AtomicFile

#: Files and examples named per drop reason in report.md (report.json has every file and more examples).
MARKDOWN_LOCATIONS = 3


class SourceTotals:
    """One source's counts over its shards, and the word counts of its kept pairs (arrays, one per batch)."""

    def __init__(self) -> None:
        self.read = 0
        self.kept = 0
        self.dropped = SkipCounter()
        self.shards = 0
        self.resumed = 0
        self.query_words: list[np.ndarray] = []
        self.passage_words: list[np.ndarray] = []


def _words(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def length_summary(parts: list[np.ndarray]) -> dict[str, float]:
    array = _words(parts)
    if not len(array):
        return {}
    return {"mean": round(float(array.mean()), 1), "median": float(np.median(array)), "p95": round(float(np.percentile(array, 95)), 1), "max": int(array.max())}


def histogram(path: Path, name: str, totals: SourceTotals, bins: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for axis, side, values in ((axes[0], "query", _words(totals.query_words)), (axes[1], "passage", _words(totals.passage_words))):
        if len(values):
            axis.hist(values, bins=bins, color="#4c72b0")
        axis.set_title(f"{name}: {side} length ({len(values):,} pairs)")
        axis.set_xlabel("words")
        axis.set_ylabel("pairs")
    figure.tight_layout()
    with AtomicFile(path) as staged:
        figure.savefig(staged.temporary, dpi=80, format="png")
    plt.close(figure)


def source_entry(source_type: str, name: str, total: SourceTotals) -> dict[str, Any]:
    return {
        "type": source_type,
        "shards": total.shards,
        "read": total.read,
        "kept": total.kept,
        "dropped": dict(sorted(total.dropped.items())),
        "drop_where": total.dropped.where(),
        "query_words": length_summary(total.query_words),
        "passage_words": length_summary(total.passage_words),
        "histogram": f"histograms/{name}.png",
    }


def build_report(sources: dict[str, Any], **run: Any) -> dict[str, Any]:
    """The report of ``sources`` (name -> ``source_entry``), with totals and the reconciliation check, then ``run``'s fields."""
    all_dropped: Counter = Counter()
    for entry in sources.values():
        all_dropped.update(entry["dropped"])
    return {
        "sources": sources,
        "totals": {"read": sum(e["read"] for e in sources.values()), "kept": sum(e["kept"] for e in sources.values()), "dropped": dict(sorted(all_dropped.items()))},
        "reconciled": all(e["read"] == e["kept"] + sum(e["dropped"].values()) for e in sources.values()),
        **run,
    }


def _per_file(files: dict[str, int]) -> str:
    """``a.gz: 3, b.gz: 1, and N more files`` (files with most drops first)."""
    named = [f"{_cell(file)}: {count:,}" for file, count in list(files.items())[:MARKDOWN_LOCATIONS]]
    more = len(files) - MARKDOWN_LOCATIONS
    return ", ".join(named) + (f", and {more:,} more files" if more > 0 else "")


def _first_at(examples: list[dict[str, Any]]) -> str:
    """``a.gz:12, a.gz:40`` (a location without a line is the file alone)."""
    return ", ".join(
        _cell(example["file"]) + (f":{example['line']}" if example["line"] is not None else "") for example in examples[:MARKDOWN_LOCATIONS]
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Curation report",
        "",
        f"Engine {report['engine']} with {report['workers']} worker(s); {report['shards']} shard(s), "
        f"{report['resumed_shards']} resumed; {report['elapsed_s']:.1f} s. "
        f"Reconciled (read = kept + dropped, per source): **{report['reconciled']}**.",
        "",
        "| source | read | kept | dropped | kept % |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, entry in [*report["sources"].items(), ("**total**", report["totals"])]:
        dropped = sum(entry["dropped"].values())
        share = 100 * entry["kept"] / entry["read"] if entry["read"] else 0.0
        lines.append(f"| {name} | {entry['read']:,} | {entry['kept']:,} | {dropped:,} | {share:.1f} |")
    for name, entry in report["sources"].items():
        lines += ["", f"## {name}", "", "| drop reason | pairs | per file | first at (file:line) |", "|---|---:|---|---|"]
        for reason, count in sorted(entry["dropped"].items(), key=lambda item: -item[1]):
            where = entry["drop_where"][reason]
            lines.append(f"| {reason} | {count:,} | {_per_file(where['files'])} | {_first_at(where['examples'])} |")
        lines += ["", f"Query words {entry['query_words']}; passage words {entry['passage_words']}.", "", f"![{name} lengths]({entry['histogram']})"]
    return "\n".join(lines) + "\n"
