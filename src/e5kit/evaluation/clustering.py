"""Clustering: mini-batch k-means on embeddings, V-measure against the labels, averaged over seeds.

Data: a TSV (header row) or JSONL with ``text`` and ``label``, or other column names mapped to those
fields: for the local 20 Newsgroups copy ``{"text": "subject"}`` (MTEB clusters post subjects).
Records whose text is empty are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from e5kit.evaluation.fields import CLUSTERING as FIELDS
from e5kit.evaluation.prefix_policy import PrefixPolicy, policy_for
from e5kit.evaluation.results import TaskOutcome
from e5kit.evaluation.tables import column_names, read_fields, split_file
from e5kit.io.text import has_visible_text


def v_measures(embeddings: np.ndarray, labels: list[str], seeds: list[int], kmeans_batch_size: int = 500) -> list[float]:
    """V-measure of MiniBatchKMeans (k = number of labels, MTEB's settings) for each seed."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import v_measure_score

    clusters = len(set(labels))
    scores = []
    for seed in seeds:
        kmeans = MiniBatchKMeans(n_clusters=clusters, batch_size=kmeans_batch_size, n_init="auto", random_state=seed)
        scores.append(float(v_measure_score(labels, kmeans.fit_predict(embeddings))))
    return scores


def evaluate_clustering(
    model,
    data: str | Path,
    split: str = "test",
    batch_size: int = 32,
    *,
    seeds: int = 10,
    kmeans_batch_size: int = 500,
    columns: Mapping[str, str] | None = None,
    policy: PrefixPolicy | None = None,
) -> TaskOutcome:
    """Mean (and std) V-measure of k-means over ``seeds`` seeds (42, 43, ...).

    Args:
        columns: Field (``FIELDS``) -> the file's column holding it, for files named otherwise.

    Raises:
        InputFormatError: a missing column or an empty label, naming file and line.
        ValueError: fewer than two labels among the kept records.
    """
    policy = policy or policy_for("clustering")
    table = read_fields(split_file(data, split), FIELDS, columns, allow_empty=("text",))
    text_field = column_names(FIELDS, columns)["text"]
    kept = [i for i, text in enumerate(table["text"]) if isinstance(text, str) and has_visible_text(text)]
    texts = [table["text"][i] for i in kept]
    labels = [str(table["label"][i]) for i in kept]
    if len(set(labels)) < 2:
        raise ValueError(f"{data}: clustering needs at least two labels, found {len(set(labels))}")
    embeddings = model.encode(texts, role=policy.query_role, batch_size=batch_size)
    scores = v_measures(embeddings, labels, [42 + offset for offset in range(seeds)], kmeans_batch_size)
    metrics = {"v_measure": float(np.mean(scores)), "v_measure_std": float(np.std(scores))}
    skipped = {f"empty {text_field}": len(table["_line"]) - len(kept)}
    details = {"texts": len(texts), "clusters": len(set(labels)), "seeds": seeds, "text_field": text_field, "skipped": skipped}
    return TaskOutcome(metrics, details)
