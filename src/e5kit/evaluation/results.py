"""Result files: one JSON per (model, task, dataset, split) with the metadata needed to reproduce it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

#: Each task family's headline metric.
MAIN_METRIC = {
    "retrieval": "ndcg_at_10",
    "sts": "cosine_spearman",
    "classification": "accuracy",
    "clustering": "v_measure",
    "pair_classification": "ap",
    "reranking": "map",
}

#: Published scores (x100) for the local data sets, as (model name, dataset) -> (score, source).
PUBLISHED: dict[tuple[str, str], tuple[float, str]] = {
    ("bm25", "scifact"): (68.7, "bm25s (Lucene, k1=1.5, b=0.75, stemmed, stopwords)"),
    ("all-MiniLM-L6-v2", "scifact"): (64.5, "MTEB"),
    ("all-MiniLM-L6-v2", "stsb"): (82.0, "MTEB STSBenchmark"),
    ("all-MiniLM-L6-v2", "banking77"): (80.0, "MTEB Banking77Classification"),
    ("all-MiniLM-L6-v2", "twentynewsgroups"): (46.5, "MTEB TwentyNewsgroupsClustering"),
    ("multilingual-e5-small-enpt-q4dq", "scifact"): (65.9, "same weights through sentence-transformers"),
}


@dataclass
class TaskOutcome:
    """What one task evaluation measured.

    Attributes:
        metrics: Metric name -> fraction in [0, 1] (correlations in [-1, 1]).
        details: Counts, skipped records by reason, phase timings, task settings.
    """

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


class EvalResult(BaseModel):
    """One result file.

    Local paths (``model_path``, ``data_path``, the cache's path in ``details``) are relative to the
    folder of the result file; a bundled model or Hub id is named as given. ``dimension`` and
    ``similarity_fn_name`` are the encoder's (None for BM25, and in files written before they were recorded).
    """

    model: str
    model_path: str | None
    weights_hash: str | None
    task: str
    dataset: str
    data_path: str
    split: str
    metrics: dict[str, float]
    main_metric: str
    prefix_policy: dict[str, str]
    max_length: int | None
    dtype: str | None
    dimension: int | None = None
    similarity_fn_name: str | None = None
    e5kit_version: str
    wall_time_s: float
    created_at: str
    details: dict[str, Any] = {}

    @property
    def main_score(self) -> float:
        """The headline metric x100."""
        return 100 * self.metrics[self.main_metric]

    @property
    def published(self) -> tuple[float, str] | None:
        """The published (score x100, source) for this model and dataset, if known."""
        return PUBLISHED.get((self.model, self.dataset))


def now() -> str:
    """UTC timestamp for ``created_at``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def slug(text: str) -> str:
    """``text`` as a file-name part (runs of other characters -> '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def result_path(results_dir: Path, result: EvalResult) -> Path:
    """``<dir>/<model>[-<hash8>]__<task>__<dataset>__<split>.json``."""
    model = slug(result.model) + (f"-{result.weights_hash[:8]}" if result.weights_hash else "")
    return Path(results_dir) / f"{model}__{result.task}__{slug(result.dataset)}__{slug(result.split)}.json"


def write_result(results_dir: str | Path, result: EvalResult) -> Path:
    """Write ``result`` as JSON (replacing an earlier run of the same model, task, dataset and split)."""
    path = result_path(Path(results_dir), result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def results_of_model(results: list[EvalResult], weights_hash: str) -> list[EvalResult]:
    """The results measured on the model whose weights hash to ``weights_hash``
    (``e5kit.evaluation.cache.weights_hash``), whatever it was called or where it lay then."""
    return [result for result in results if result.weights_hash == weights_hash]


def read_results(results_dir: str | Path) -> list[EvalResult]:
    """Every result file in ``results_dir`` (sorted by name).

    Raises:
        FileNotFoundError: the folder does not exist or holds no result file.
        ValueError: a JSON file that is not a result, naming it and the bad field.
    """
    return [result for _, result in read_result_files(results_dir)]


def read_result_files(results_dir: str | Path) -> list[tuple[Path, EvalResult]]:
    """(file, result) for every result file in ``results_dir`` (sorted by name), for callers that name the file.

    Raises:
        FileNotFoundError: the folder does not exist or holds no result file.
        ValueError: a JSON file that is not a result, naming it and the bad field.
    """
    folder = Path(results_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    results = []
    for path in sorted(folder.glob("*.json")):
        try:
            results.append((path, EvalResult.model_validate(json.loads(path.read_text(encoding="utf-8")))))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: malformed JSON at line {error.lineno}: {error.msg}") from error
        except ValidationError as error:
            first = error.errors()[0]
            raise ValueError(f"{path}: not an e5kit result: field {'.'.join(map(str, first['loc']))}: {first['msg']}") from error
    if not results:
        raise FileNotFoundError(f"{folder}: no result files (*.json)")
    return results
