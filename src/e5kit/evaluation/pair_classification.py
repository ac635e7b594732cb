"""Pair classification (e.g. paraphrase detection): how well cosine similarity separates the classes.

Data: a TSV (header row) or JSONL with ``sentence1``, ``sentence2`` and a 0/1 ``label`` (e.g. MRPC),
or other column names mapped to those fields (``{"label": "is_paraphrase"}``).
The headline metric is the average precision of the cosine ranking (MTEB's cosine AP: precision
averaged over every cosine threshold); the best accuracy and F1 over thresholds are reported too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from e5kit.evaluation.fields import PAIR_CLASSIFICATION as FIELDS
from e5kit.evaluation.pairs import pair_cosines
from e5kit.evaluation.prefix_policy import PrefixPolicy, policy_for
from e5kit.evaluation.results import TaskOutcome
from e5kit.evaluation.tables import column_names, read_fields, split_file
from e5kit.io.files import InputFormatError


def load_pairs(data: str | Path, split: str = "test", columns: Mapping[str, str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(sentence1 list, sentence2 list, 0/1 labels) of ``data/<split>.tsv[.gz]`` or a file.

    Args:
        columns: Field (``FIELDS``) -> the file's column holding it, for files named otherwise.

    Raises:
        InputFormatError: a missing column, an empty sentence or a label other than 0/1, naming file and line.
    """
    path = split_file(data, split)
    table = read_fields(path, FIELDS, columns)
    label_column = column_names(FIELDS, columns)["label"]
    labels = []
    for line, value in zip(table["_line"], table["label"], strict=True):
        if str(value).strip() not in ("0", "1"):
            raise InputFormatError(f"{path}:{line}: {label_column} {value!r} is not 0 or 1")
        labels.append(int(value))
    return table["sentence1"], table["sentence2"], np.array(labels)


def best_threshold_scores(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Best accuracy and best F1 over every threshold "score >= t means positive".

    Args:
        scores: (n,) similarities.
        labels: (n,) 0/1.
    """
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    predicted_positive = np.arange(1, len(scores) + 1)  # (n,) positives predicted at each cut
    true_positive = np.cumsum(sorted_labels)  # (n,)
    # A threshold can only fall between distinct scores: keep the last index of each run of ties.
    cut = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    positives, negatives = labels.sum(), len(labels) - labels.sum()
    true_negative = negatives - (predicted_positive - true_positive)  # (n,)
    accuracy = (true_positive + true_negative)[cut] / len(labels)
    f1 = (2 * true_positive / (predicted_positive + positives))[cut]
    return {"accuracy": float(max(accuracy.max(), negatives / len(labels))), "f1": float(f1.max())}


def evaluate_pair_classification(
    model,
    data: str | Path,
    split: str = "test",
    batch_size: int = 32,
    *,
    columns: Mapping[str, str] | None = None,
    policy: PrefixPolicy | None = None,
) -> TaskOutcome:
    """Cosine AP (headline), best accuracy and best F1 of ``model`` on a pair file (``columns``: see ``load_pairs``).

    Raises:
        ValueError: the labels are all of one class (AP is undefined).
    """
    from sklearn.metrics import average_precision_score

    first, second, labels = load_pairs(data, split, columns)
    if labels.min() == labels.max():
        raise ValueError(f"{data}: every pair has label {labels[0]}; average precision needs both classes")
    cosines = pair_cosines(model, first, second, policy or policy_for("pair_classification"), batch_size)
    metrics = {"ap": float(average_precision_score(labels, cosines)), **best_threshold_scores(cosines, labels)}
    return TaskOutcome(metrics, {"pairs": len(labels), "positives": int(labels.sum())})
