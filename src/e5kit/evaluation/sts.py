"""Semantic textual similarity: Spearman (and Pearson) correlation of cosine similarity with gold scores.

Data: a TSV (header row) or JSONL with ``sentence1``, ``sentence2`` and ``score`` (e.g. STS-B), or
other column names mapped to those fields (SICK: ``{"sentence1": "sentence_A", "sentence2":
"sentence_B", "score": "relatedness_score"}``). Any score scale works: Spearman compares ranks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from e5kit.evaluation.fields import STS as FIELDS
from e5kit.evaluation.pairs import pair_cosines
from e5kit.evaluation.prefix_policy import PrefixPolicy, policy_for
from e5kit.evaluation.results import TaskOutcome
from e5kit.evaluation.tables import column_names, parse_float, read_fields, split_file


def load_sts(data: str | Path, split: str = "test", columns: Mapping[str, str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(sentence1 list, sentence2 list, gold scores) of ``data/<split>.tsv[.gz]`` or a file.

    Args:
        columns: Field (``FIELDS``) -> the file's column holding it, for files named otherwise.

    Raises:
        InputFormatError: a missing column, an empty sentence or a score that is not a finite number, naming file and line.
    """
    path = split_file(data, split)
    table = read_fields(path, FIELDS, columns)
    score_column = column_names(FIELDS, columns)["score"]
    scores = np.array(
        [parse_float(path, line, score_column, value) for line, value in zip(table["_line"], table["score"], strict=True)]
    )
    return table["sentence1"], table["sentence2"], scores


def evaluate_sts(
    model,
    data: str | Path,
    split: str = "test",
    batch_size: int = 32,
    *,
    columns: Mapping[str, str] | None = None,
    policy: PrefixPolicy | None = None,
) -> TaskOutcome:
    """Cosine Spearman and Pearson of ``model`` on an STS file (``columns``: see ``load_sts``).

    E5's policy embeds both sentences as queries.
    """
    from scipy.stats import pearsonr, spearmanr

    first, second, gold = load_sts(data, split, columns)
    cosines = pair_cosines(model, first, second, policy or policy_for("sts"), batch_size)
    metrics = {
        "cosine_spearman": float(spearmanr(gold, cosines).statistic),
        "cosine_pearson": float(pearsonr(gold, cosines).statistic),
    }
    return TaskOutcome(metrics, {"pairs": len(gold)})
