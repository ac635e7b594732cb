"""Classification: logistic regression on frozen embeddings, scored by test accuracy (MTEB's protocol).

Data: ``<data>/<train_split>`` and ``<data>/<split>`` files (TSV with header or JSONL) with ``text``
and ``label``, or other column names mapped to those fields (``{"text": "utterance", "label":
"intent"}``). As in MTEB, each of ``experiments`` runs trains on ``samples_per_label`` random
examples per label (seeded), and scores are averaged; ``samples_per_label=None`` trains once on the
whole train split. E5 classifies unnormalised embeddings, so ``normalize`` defaults to False.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from e5kit.evaluation.fields import CLASSIFICATION as FIELDS
from e5kit.evaluation.prefix_policy import PrefixPolicy, policy_for
from e5kit.evaluation.results import TaskOutcome
from e5kit.evaluation.tables import read_fields, split_file


def load_labelled(data: str | Path, split: str, columns: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(texts, labels as strings) of ``data/<split>.tsv[.gz]|.jsonl[.gz]``.

    Args:
        columns: Field (``FIELDS``) -> the file's column holding it, for files named otherwise.

    Raises:
        InputFormatError: a missing column or an empty value, naming file and line.
    """
    table = read_fields(split_file(data, split), FIELDS, columns)
    return table["text"], [str(label) for label in table["label"]]


def undersample(labels: list[str], samples_per_label: int, order: list[int], seed: int) -> list[int]:
    """MTEB's undersampling: shuffle ``order`` in place with ``RandomState(seed)``, then keep the first
    ``samples_per_label`` positions of each label. ``order`` carries over between experiments."""
    np.random.RandomState(seed).shuffle(order)
    taken: dict[str, int] = defaultdict(int)
    chosen = []
    for position in order:
        if taken[labels[position]] < samples_per_label:
            chosen.append(position)
            taken[labels[position]] += 1
    return chosen


def evaluate_classification(
    model,
    data: str | Path,
    split: str = "test",
    batch_size: int = 32,
    *,
    train_split: str = "train",
    samples_per_label: int | None = 8,
    experiments: int = 10,
    seed: int = 42,
    max_iter: int = 100,
    normalize: bool = False,
    columns: Mapping[str, str] | None = None,
    policy: PrefixPolicy | None = None,
) -> TaskOutcome:
    """Mean accuracy and macro-F1 of logistic regressions trained on ``model``'s embeddings.

    Args:
        model: An ``Encoder`` or ``CachedEncoder``.
        data: Folder with the train and test files.
        split: Split scored.
        batch_size: Texts per forward pass.
        train_split: Split the classifier is trained on.
        samples_per_label: Training examples per label per experiment (MTEB: 8); None = all, one run.
        experiments: Runs averaged (ignored when ``samples_per_label`` is None).
        seed: Seed of the undersampling.
        max_iter: Logistic-regression iterations (MTEB: 100).
        normalize: L2-normalise the features (E5: no).
        columns: Field -> column of both splits' files (see ``load_labelled``).
        policy: Prefix policy; every text takes ``policy.query_role``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    policy = policy or policy_for("classification")
    train_texts, train_labels = load_labelled(data, train_split, columns)
    test_texts, test_labels = load_labelled(data, split, columns)
    order = list(range(len(train_texts)))
    if samples_per_label is None:
        runs = [order]
    else:
        runs = [undersample(train_labels, samples_per_label, order, seed) for _ in range(experiments)]
    needed = sorted(set().union(*runs))
    train_embeddings = model.encode(
        [train_texts[i] for i in needed], role=policy.query_role, batch_size=batch_size, normalize=normalize
    )
    row_of = {position: row for row, position in enumerate(needed)}
    test_embeddings = model.encode(test_texts, role=policy.query_role, batch_size=batch_size, normalize=normalize)
    accuracies, f1s = [], []
    for chosen in runs:
        classifier = LogisticRegression(max_iter=max_iter)
        classifier.fit(train_embeddings[[row_of[i] for i in chosen]], [train_labels[i] for i in chosen])
        predicted = classifier.predict(test_embeddings)
        accuracies.append(accuracy_score(test_labels, predicted))
        f1s.append(f1_score(test_labels, predicted, average="macro"))
    metrics = {"accuracy": float(np.mean(accuracies)), "f1": float(np.mean(f1s)), "accuracy_std": float(np.std(accuracies))}
    details = {
        "train_texts": len(train_texts),
        "test_texts": len(test_texts),
        "labels": len(set(train_labels)),
        "experiments": len(runs),
        "samples_per_label": samples_per_label,
        "normalized_features": normalize,
    }
    return TaskOutcome(metrics, details)
