"""e5kit results in mteb's own result format, so mteb's result tools (and its leaderboard code) read them.

The layout is mteb's ``ResultCache`` folder: ``<dir>/results/<model>/<revision>/<TaskName>.json`` (one
``TaskResult`` per task) next to ``model_meta.json`` (mteb's ``ModelMeta`` fields). ``<revision>`` is the
first 12 hex digits of the weights hash, as ``MTEBEncoder`` reports to mteb, so an official mteb run of the
same weights through the adapter lands in the same folder. Load them back with
``mteb.ResultCache(dir).load_results(include_remote=False)`` or ``mteb.TaskResult.from_disk(path)``.

Scores keep mteb's names and scale (fractions in [0, 1], correlations in [-1, 1]): e5kit's names already
are mteb's except for pair classification (``ap`` -> ``cosine_ap``) and reranking (``map`` ->
``map_at_1000``: e5kit's MAP ranks every candidate, which is mteb's cut-off for any list under 1,000).
Metrics mteb has no name for (the ``*_std`` spreads) are left out. Sources: mteb 2.x
``mteb/results/task_result.py`` (``TaskResult``), ``mteb/cache/result_cache.py`` (layout).
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from e5kit.evaluation.results import EvalResult
from e5kit.io.files import write_text_atomic
from e5kit.model_card import portable_name

#: The mteb release whose ``TaskResult`` layout the files follow (mteb >= 1.12.48 reads it unchanged).
#: e5kit, not mteb, computed the scores: the file's "e5kit" block says so.
MTEB_FORMAT_VERSION = "2.0.0"

#: e5kit metric name -> mteb's, per task family (names not listed are the same in both).
MTEB_METRIC_NAMES: dict[str, dict[str, str]] = {
    "pair_classification": {"ap": "cosine_ap", "accuracy": "cosine_accuracy", "f1": "cosine_f1"},
    "reranking": {"map": "map_at_1000"},
}

#: e5kit metrics without an mteb counterpart.
UNMAPPED_METRICS = {"accuracy_std", "v_measure_std"}

#: (task family, local data set folder) -> the MTEB task holding the same data (BEIR's releases, STS-B).
#: Banking77 and 20 Newsgroups are absent on purpose: their raw releases are not MTEB's processed copies.
MTEB_TASK_NAMES: dict[tuple[str, str], str] = {
    ("retrieval", "arguana"): "ArguAna",
    ("retrieval", "climate-fever"): "ClimateFEVER",
    ("retrieval", "dbpedia-entity"): "DBPedia",
    ("retrieval", "fever"): "FEVER",
    ("retrieval", "fiqa"): "FiQA2018",
    ("retrieval", "hotpotqa"): "HotpotQA",
    ("retrieval", "msmarco"): "MSMARCO",
    ("retrieval", "nfcorpus"): "NFCorpus",
    ("retrieval", "nq"): "NQ",
    ("retrieval", "quora"): "QuoraRetrieval",
    ("retrieval", "scidocs"): "SCIDOCS",
    ("retrieval", "scifact"): "SciFact",
    ("retrieval", "trec-covid"): "TRECCOVID",
    ("retrieval", "webis-touche2020"): "Touche2020",
    ("sts", "stsb"): "STSBenchmark",
}

#: ISO 639-3 "undetermined" with ISO 15924 "uncoded script": mteb averages a subset only over its
#: languages, so an empty list would score NaN.
UNKNOWN_LANGUAGE = "und-Zzzz"

#: mteb's placeholder revision for a model without one (BM25 has no weights).
NO_REVISION = "no_revision_available"


def mteb_task_name(result: EvalResult, task_name: str | None = None) -> str:
    """``task_name`` if given, else the MTEB task holding the same data as ``result``'s data set, else the
    data set's own name.

    Raises:
        ValueError: a name that cannot be a file name (empty, or with a path separator).
    """
    name = task_name or MTEB_TASK_NAMES.get((result.task, result.dataset), result.dataset)
    if not name.strip() or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"mteb task name {name!r}: expected a plain name (it becomes <TaskName>.json)")
    return name


def mteb_scores(result: EvalResult) -> dict[str, float]:
    """``result``'s metrics under mteb's names, with ``main_score`` (the headline metric), rounded to
    6 digits as mteb writes them.

    Raises:
        ValueError: a metric outside mteb's scale ([0, 1], correlations [-1, 1]) or not finite, naming it.
    """
    names = MTEB_METRIC_NAMES.get(result.task, {})
    scores: dict[str, float] = {}
    for name, value in result.metrics.items():
        if name in UNMAPPED_METRICS:
            continue
        low = -1.0 if "pearson" in name or "spearman" in name else 0.0
        if not math.isfinite(value) or not low <= value <= 1.0:
            raise ValueError(f"{result.model}/{result.dataset}: metric {name} = {value} is outside mteb's [{low:g}, 1] scale")
        scores[names.get(name, name)] = round(value, 6)
    scores["main_score"] = round(result.metrics[result.main_metric], 6)
    return scores


def data_revision(data: Path) -> str:
    """``local-<sha256[:12]>`` of a data file, or of a folder's files (names and bytes), standing in for the
    Hub revision mteb records: the same files give the same revision wherever they lie.

    Raises:
        FileNotFoundError: ``data`` does not exist.
    """
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such data file or folder")
    files = [data] if data.is_file() else sorted(p for p in data.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(data if data.is_dir() else data.parent).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"local-{digest.hexdigest()[:12]}"


def mteb_task_result(
    result: EvalResult, task_name: str | None = None, dataset_revision: str = "local", languages: list[str] | None = None
) -> dict[str, Any]:
    """``result`` as mteb's ``TaskResult`` JSON object (``TaskResult.model_validate`` accepts it).

    Args:
        result: One e5kit result.
        task_name: The MTEB task name to file it under (default: ``mteb_task_name(result)``).
        dataset_revision: Stands in for the Hub dataset revision (see ``data_revision``).
        languages: mteb's language-script codes of the data, e.g. ["eng-Latn"] (default: that for the
            known MTEB tasks, else ``UNKNOWN_LANGUAGE``).

    Returns:
        {dataset_revision, task_name, mteb_version, scores: {split: [{main_score, hf_subset, languages,
        ...metrics}]}, evaluation_time, kg_co2_emissions, date, evaluation_phases, e5kit: {provenance}}.
    """
    name = mteb_task_name(result, task_name)
    if languages is None:
        languages = ["eng-Latn"] if name in MTEB_TASK_NAMES.values() else [UNKNOWN_LANGUAGE]
    scores = {**mteb_scores(result), "hf_subset": "default", "languages": languages}
    return {
        "dataset_revision": dataset_revision,
        "task_name": name,
        "mteb_version": MTEB_FORMAT_VERSION,
        "scores": {result.split: [scores]},
        "evaluation_time": result.wall_time_s,
        "kg_co2_emissions": None,
        "date": datetime.fromisoformat(result.created_at).timestamp(),
        "evaluation_phases": None,
        # mteb ignores unknown top-level keys; this says who measured the scores and how
        "e5kit": {
            "version": result.e5kit_version,
            "model_path": result.model_path,
            "data_path": result.data_path,
            "task": result.task,
            "prefix_policy": result.prefix_policy,
            "max_length": result.max_length,
            "dtype": result.dtype,
        },
    }


def mteb_model_name(result: EvalResult) -> str:
    """mteb's "organization/model" name: ``e5kit/<model label>`` (mteb's ``ModelMeta`` requires an organization)."""
    return f"e5kit/{result.model}"


def mteb_model_meta(result: EvalResult) -> dict[str, Any]:
    """mteb's ``model_meta.json`` for ``result``'s model: every field ``ModelMeta`` requires, None where e5kit
    does not know it (``mteb.models.ModelMeta.model_validate`` accepts it). ``embed_dim`` and
    ``similarity_fn_name`` are the encoder's (e5kit's "cosine" and "dot" are mteb's ``ScoringFunction`` values)."""
    unknown = (
        "loader", "release_date", "languages", "n_parameters", "memory_usage_mb", "license", "open_weights",
        "public_training_code", "public_training_data", "use_instructions", "training_datasets",
    )
    return {
        **dict.fromkeys(unknown),
        "name": mteb_model_name(result),
        "revision": mteb_revision(result),
        "max_tokens": result.max_length,
        "embed_dim": result.dimension,
        "similarity_fn_name": result.similarity_fn_name,
        "framework": ([_framework(result)] if result.weights_hash else []),
        "modalities": ["text"],
    }


def _framework(result: EvalResult) -> str:
    """mteb's name of the runtime the result was measured on (``details.backend``, written for non-torch backends)."""
    return "ONNX" if (result.details or {}).get("backend", {}).get("name") == "onnx" else "PyTorch"


def mteb_revision(result: EvalResult) -> str:
    """The revision folder: the weights hash's first 12 hex digits (as ``MTEBEncoder``), or mteb's placeholder."""
    return result.weights_hash[:12] if result.weights_hash else NO_REVISION


def _rebased(name: str | None, old_base: Path, new_base: Path) -> str | None:
    """A local path named relative to ``old_base``, named relative to ``new_base``; anything else (a Hub id, a
    bundled name) as it is."""
    if name is None or not (old_base / name).exists():
        return name
    return portable_name(old_base / name, new_base)


def mteb_result_path(folder: str | Path, result: EvalResult, task_name: str | None = None) -> Path:
    """``<folder>/results/<model, "/" as "__">/<revision>/<TaskName>.json``, as mteb's ``ResultCache``."""
    model = mteb_model_name(result).replace("/", "__").replace(" ", "_")
    return Path(folder) / "results" / model / mteb_revision(result) / f"{mteb_task_name(result, task_name)}.json"


def write_mteb_result(
    folder: str | Path,
    result: EvalResult,
    task_name: str | None = None,
    data: Path | None = None,
    languages: list[str] | None = None,
    results_dir: str | Path | None = None,
) -> Path:
    """Write ``result`` into the mteb results folder ``folder`` (replacing an earlier run of the same task),
    with its ``model_meta.json``.

    Args:
        folder: An mteb ``ResultCache`` folder (``mteb.ResultCache(folder)`` reads it).
        result: One e5kit result.
        task_name: The MTEB task name (default: ``mteb_task_name(result)``).
        data: The data evaluated, fingerprinted as the dataset revision (default: "local").
        languages: The data's language-script codes (see ``mteb_task_result``).
        results_dir: The e5kit results folder ``result``'s local paths are relative to; they are rewritten
            relative to the mteb file's folder (None: copied as they are).

    Returns:
        The task file written.

    Raises:
        ValueError: a metric outside mteb's scale (see ``mteb_scores``) or a bad task name.
        FileNotFoundError: ``data`` does not exist.
    """
    revision = data_revision(data) if data is not None else "local"
    path = mteb_result_path(folder, result, task_name)
    if results_dir is not None:  # e5kit's paths are relative to its own result file's folder; mteb's file lies elsewhere
        result = result.model_copy(update={
            "model_path": _rebased(result.model_path, Path(results_dir), path.parent),
            "data_path": _rebased(result.data_path, Path(results_dir), path.parent),
        })
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(mteb_task_result(result, task_name, revision, languages), indent=2) + "\n")
    write_text_atomic(path.parent / "model_meta.json", json.dumps(mteb_model_meta(result), indent=2) + "\n")
    return path
