"""Run one task's config for each of its models and write a result file per (model, task).

This is the library behind ``e5kit eval <task>``: it loads each model, wraps it in the embedding
cache, applies the prefix policy, times the evaluation and records the metadata. :class:`EvalStage` runs
it as a stage (``e5kit.stage``): its marker is ``RESULTS_DIR/stages/<task>__<dataset>__<split>.json``
(beside, not among, the result files), so a rerun with the same models, data and settings is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e5kit.evaluation import config as configs
from e5kit.evaluation.prefix_policy import policy_for
from e5kit.evaluation.results import MAIN_METRIC, EvalResult, TaskOutcome, now, slug, write_result
from e5kit.model_card import portable_name
from e5kit.retrieval.engines import EncoderSpec
from e5kit.stage import Stage
from e5kit.version import package_version


@dataclass(frozen=True)
class TaskSpec:
    """How to run one task family: its config class, its evaluate function and its extra settings: those
    that change the scores (recorded in each result) and those that only change how it runs (engine, not
    recorded)."""

    config_class: type[configs.EvalConfig]
    evaluate: Callable[..., TaskOutcome]
    settings: tuple[str, ...] = ()
    running: tuple[str, ...] = ()


def _tasks() -> dict[str, TaskSpec]:
    from e5kit.evaluation.classification import evaluate_classification
    from e5kit.evaluation.clustering import evaluate_clustering
    from e5kit.evaluation.pair_classification import evaluate_pair_classification
    from e5kit.evaluation.reranking import evaluate_reranking
    from e5kit.evaluation.retrieval import run_beir
    from e5kit.evaluation.sts import evaluate_sts

    return {
        "retrieval": TaskSpec(
            configs.RetrievalConfig,
            run_beir,
            ("top_k", "ignore_identical_ids", "exclude_queries_without_relevant"),
            ("corpus_store", "engine", "workers", "block_rows"),
        ),
        "sts": TaskSpec(configs.STSConfig, evaluate_sts, ("columns",)),
        "classification": TaskSpec(
            configs.ClassificationConfig,
            evaluate_classification,
            ("train_split", "samples_per_label", "experiments", "seed", "max_iter", "normalize", "columns"),
        ),
        "clustering": TaskSpec(configs.ClusteringConfig, evaluate_clustering, ("seeds", "kmeans_batch_size", "columns")),
        "pair_classification": TaskSpec(configs.PairClassificationConfig, evaluate_pair_classification, ("columns",)),
        "reranking": TaskSpec(configs.RerankingConfig, evaluate_reranking, ("columns",)),
    }


def task_spec(task: str) -> TaskSpec:
    """The spec of a task family (``retrieval``, ``sts``, ...)."""
    tasks = _tasks()
    if task not in tasks:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(tasks)}")
    return tasks[task]


def model_label(name: str) -> str:
    """A short display name: "bm25", a bundled name, or the model folder's name."""
    return Path(name.rstrip("/")).name if Path(name).exists() else name.split("/")[-1]


def dataset_name(data: Path) -> str:
    """The data set's name: its folder name (or the file's parent folder)."""
    return (data.parent if data.is_file() else data).resolve().name


def run_task(task: str, config: configs.EvalConfig, load_model: Callable[[str], object]) -> list[tuple[EvalResult, Path]]:
    """Evaluate every model of ``config`` on ``task`` and write one result file each.

    Args:
        task: Task family name.
        config: The validated config of that task.
        load_model: Model name -> ``Encoder`` (the CLI passes its clean-error loader).

    Returns:
        (result, file written) per model, in ``config.models`` order; none on a torchrun rank other than 0
        (``engine`` torchrun: every rank embeds its share of the corpus, rank 0 writes).
    """
    from e5kit.evaluation.cache import CachedEncoder, EmbeddingCache, default_cache_dir, weights_hash
    from e5kit.retrieval.engines import torchrun_rank

    spec = task_spec(task)
    policy = policy_for(task, config.query_role, config.passage_role)
    settings = {name: getattr(config, name) for name in spec.settings}
    running = {name: getattr(config, name) for name in spec.running}
    cache = EmbeddingCache(config.cache_dir or default_cache_dir()) if config.cache else None
    written = []
    for name in config.models:
        encoder = model = None
        if name != "bm25":
            encoder = load_model(name)
            model = CachedEncoder(encoder, cache) if cache is not None else encoder
        how = dict(running)
        if how.get("engine") == "ray" and encoder is not None:  # each Ray actor loads the model as load_model did
            how["spec"] = encoder_spec(name, config)
        started = time.perf_counter()
        outcome = spec.evaluate(model or name, config.data, config.split, config.batch_size, policy=policy, **settings, **how)
        wall = time.perf_counter() - started
        if running.get("engine") == "torchrun" and torchrun_rank()[0] != 0:
            continue
        details = dict(outcome.details)
        if isinstance(model, CachedEncoder):
            details["cache"] = {"hits": model.hits, "embedded": model.misses, "path": portable_name(cache.path, config.results_dir)}
        backend = getattr(encoder, "backend", None)
        if backend is not None and backend.name != "torch":  # torch results stay as they were
            details["backend"] = {"name": backend.name, "file": getattr(backend, "file", Path()).name}
            if hasattr(backend, "precision"):  # OpenVINO: an int8 IR runs its other operations at this precision
                details["backend"]["precision"] = backend.precision
        if encoder is None:
            from e5kit.retrieval.bm25 import bm25_settings

            details["bm25"] = bm25_settings()
        result = EvalResult(
            model=model_label(name),
            model_path=portable_name(name, config.results_dir),
            weights_hash=(model.model_hash if isinstance(model, CachedEncoder) else weights_hash(encoder)) if encoder else None,
            task=task,
            dataset=dataset_name(config.data),
            data_path=portable_name(config.data, config.results_dir),
            split=config.split,
            metrics=outcome.metrics,
            main_metric=MAIN_METRIC[task],
            prefix_policy=policy.describe(encoder),
            max_length=encoder.max_length if encoder else None,
            dtype=encoder.dtype if encoder else None,
            dimension=encoder.dimension if encoder else None,
            similarity_fn_name=encoder.similarity_fn_name if encoder else None,
            e5kit_version=package_version(),
            wall_time_s=round(wall, 3),
            created_at=now(),
            details={**details, "settings": settings} if settings else details,
        )
        written.append((result, write_result(config.results_dir, result)))
    if cache is not None:
        cache.close()
    return written


def encoder_spec(name: str, config: configs.EvalConfig) -> EncoderSpec:
    """How ``config`` loads model ``name``: its max_length, backend, device and dtype (``Encoder.load``
    refuses those its backend does not take)."""
    return EncoderSpec(name, max_length=config.max_length, backend=config.backend, device=config.device, dtype=config.dtype)


#: Settings that change where embeddings are kept or which device computes them, never the scores.
RUNNING_FIELDS = frozenset({"cache", "cache_dir", "device"})


class EvalStage(Stage[configs.EvalConfig]):
    """``e5kit eval <task>`` as a stage: reads the data and the models, writes one result file per model
    into ``results_dir``; its marker lists them. The embedding cache and a corpus store (named by model and
    text) are what a killed run resumes from.

    Args:
        task: Task family name.
        config: Its validated config.
        load_model: Model name -> ``Encoder``, as for :func:`run_task` (default: loaded as ``config`` says,
            :func:`encoder_spec`; the CLI passes its clean-error loader).
    """

    name = "eval"
    config_class = configs.EvalConfig
    resumable = True

    def __init__(self, task: str, config: configs.EvalConfig, load_model: Callable[[str], object] | None = None) -> None:
        super().__init__(config)
        self.task = task
        self.load_model = load_model or (lambda name: encoder_spec(name, config).load())
        self.name = f"eval {task}"
        self.runtime_fields = RUNNING_FIELDS | set(task_spec(task).running)

    @property
    def output_dir(self) -> Path:
        return Path(self.config.results_dir)

    @property
    def marker(self) -> Path:
        dataset = slug(dataset_name(self.config.data)) if self.config.data.exists() else slug(self.config.data.name)
        return self.output_dir / "stages" / f"{self.task}__{dataset}__{slug(self.config.split)}.json"

    def inputs(self) -> list[Path]:
        models = [Path(name) for name in self.config.models if name != "bm25" and Path(name).exists()]
        return [self.config.data, *models]

    def outputs(self) -> dict[str, Path]:
        return {"results": self.output_dir}

    def execute(self, log: Callable[[str], None]) -> dict[str, Any]:
        written = run_task(self.task, self.config, self.load_model)
        return {"results": [str(path) for _, path in written]} if written else {}
