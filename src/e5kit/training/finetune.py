"""E5's fine-tuning stage (section 3): hard negatives, teacher scores, KL + alpha * InfoNCE.

The run is the training engine (``e5kit.training.trainer.Trainer``: AdamW, warm-up/decay, GradCache,
DDP, atomic checkpoints, exact resume, metrics) composed with fine-tuning's two parts: the sampler
(``FinetuneSampler``, the shared ``MixtureSampler`` over datasets, drawing query groups: query, one
positive, ``hard_negatives`` negatives, teacher scores) and the objective (:class:`Distillation`,
``losses.distillation``). Each query's group is embedded as passages (positive first), so GradCache
and cross-process gathering work unchanged.

Example:
    >>> final = finetune({"init_model": "runs/pt/final", "output_dir": "runs/ft",
    ...                   "data": {"datasets": [{"name": "msmarco", "format": "flag", "path": "scored.jsonl"}]}})  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e5kit.data.finetune_formats import FinetuneExample, RecordIssues, read_examples
from e5kit.data.mining import random_positions
from e5kit.data.mixture import MixtureSampler
from e5kit.io.text import normalized_text_key
from e5kit.model_card import portable_name
from e5kit.stage import local_model
from e5kit.training import distributed
from e5kit.training.config import ConfigError, DatasetConfig, FinetuneConfig, FinetuneDataConfig, coerce_config
from e5kit.training.gradcache import text_keys
from e5kit.training.losses.distillation import distillation_loss
from e5kit.training.metrics import CurveLabels
from e5kit.training.trainer import Evaluator, PretrainStage, Trainer

__all__ = [
    "DatasetConfig",
    "Distillation",
    "FinetuneConfig",
    "FinetuneDataConfig",
    "FinetuneSampler",
    "TrainingExample",
    "false_negative_mask",
    "finetune",
    "finetuner",
    "load_datasets",
    "steps_for_epochs",
]

logger = logging.getLogger(__name__)

RANDOM_FILL = "examples with too few hard negatives (random passages added; no teacher scores)"


@dataclass
class TrainingExample:
    """One query's training group.

    Attributes:
        query: Query text.
        passages: Positive first, then the hard negatives.
        teacher_scores: Teacher score per passage, or None (InfoNCE only).
        positives: All positives of the query (never treated as in-batch negatives).
        source: Dataset name.
    """

    query: str
    passages: list[str]
    teacher_scores: list[float] | None
    positives: list[str]
    source: str


class DatasetSource:
    """One dataset of the mixture as a ``MixtureSource``: its examples in a fresh seeded order every epoch,
    each drawn as a training group by ``sampler.group``; the position is ``{"epoch", "index"}``."""

    def __init__(self, name: str, examples: list[FinetuneExample], sampler: FinetuneSampler) -> None:
        self.name = name
        self.examples = examples
        self.sampler = sampler
        self.position = {"epoch": 0, "index": 0}
        self._order: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            generator = np.random.default_rng([self.sampler.seed, zlib.crc32(self.name.encode("utf-8")), epoch])
            self._order = (epoch, generator.permutation(len(self.examples)))
        return self._order[1]

    def next_examples(self, count: int) -> list[FinetuneExample]:
        examples = []
        position = self.position
        for _ in range(count):
            order = self.order(position["epoch"])
            examples.append(self.examples[order[position["index"]]])
            position["index"] += 1
            if position["index"] == len(order):
                position["epoch"] += 1
                position["index"] = 0
        return examples

    def take(self, count: int, generator: np.random.Generator) -> list[TrainingExample]:
        return [self.sampler.group(example, self.name, generator) for example in self.next_examples(count)]

    def state_dict(self) -> dict[str, Any]:
        return dict(self.position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = {"epoch": int(state["epoch"]), "index": int(state["index"])}


class FinetuneSampler(MixtureSampler):
    """Global batches of training groups drawn from a weighted mixture of datasets, with an exact resumable
    position (the shared ``MixtureSampler`` over one ``DatasetSource`` per dataset).

    Each dataset is walked in a fresh seeded order every epoch. Per example, one positive is drawn
    and ``hard_negatives`` negatives sampled from its list; an example with too few negatives is filled
    up with random passages of the same dataset (never one of its positives) and trains without
    teacher scores (counted). Everything is a function of ``(seed, batch number)`` and each dataset's
    (epoch, index), like the pre-training sampler.

    Args:
        datasets: Name -> examples.
        weights: Name -> sampling weight.
        batch_size: Groups per global batch.
        hard_negatives: Negatives per group.
        seed: Seed of every random choice.
        source_homogeneous: Draw each batch from one dataset.
        issues: Records skipped while reading, reported with the training-time counts.
    """

    def __init__(
        self,
        datasets: dict[str, list[FinetuneExample]],
        weights: dict[str, float],
        *,
        batch_size: int,
        hard_negatives: int,
        seed: int = 0,
        source_homogeneous: bool = False,
        issues: RecordIssues | None = None,
    ) -> None:
        self.datasets = {name: examples for name, examples in datasets.items() if weights.get(name, 0) > 0}
        empty = [name for name, examples in self.datasets.items() if not examples]
        if empty:
            raise ConfigError(f"data.datasets: no usable example in {', '.join(empty)} ({issues.describe() if issues else ''})")
        self.hard_negatives = hard_negatives
        self.read_issues = issues or RecordIssues()
        self.counts: Counter = Counter()
        self.rows_by_source = Counter({name: len(examples) for name, examples in self.datasets.items()})
        self._pools: dict[str, list[str]] = {}
        self._pool_keys: dict[str, list[str]] = {}
        sources = {name: DatasetSource(name, examples, self) for name, examples in self.datasets.items()}
        super().__init__(sources, weights, batch_size=batch_size, seed=seed, source_homogeneous=source_homogeneous)

    def _pool(self, name: str) -> list[str]:
        """Every passage of a dataset, for random negatives."""
        if name not in self._pools:
            texts = dict.fromkeys(text for example in self.datasets[name] for text in example.positives + example.negatives)
            self._pools[name] = list(texts)
            self._pool_keys[name] = [normalized_text_key(text) for text in self._pools[name]]
        return self._pools[name]

    def group(self, example: FinetuneExample, source: str, rng: np.random.Generator) -> TrainingExample:
        """Draw one positive and the hard negatives of ``example``."""
        chosen = int(rng.integers(len(example.positives)))
        picks = rng.choice(len(example.negatives), self.hard_negatives, replace=False) if len(example.negatives) >= self.hard_negatives else None
        if picks is not None:
            negatives = [example.negatives[i] for i in picks]
            teacher = None
            if example.has_teacher_scores:
                teacher = [float(example.positive_scores[chosen])] + [float(example.negative_scores[i]) for i in picks]
        else:
            self.counts[RANDOM_FILL] += 1
            pool = self._pool(source)
            # Never a copy of a positive or of a hard negative: the same text identity as mining (normalized_text_key).
            taken = {normalized_text_key(text) for text in example.positives + example.negatives}
            forbidden = {i for i, key in enumerate(self._pool_keys[source]) if key in taken}
            fill = random_positions(rng, len(pool), self.hard_negatives - len(example.negatives), forbidden)
            negatives = list(example.negatives) + [pool[i] for i in fill]
            teacher = None
        if teacher is None:
            self.counts["groups trained on InfoNCE alone"] += 1
        return TrainingExample(example.query, [example.positives[chosen]] + negatives, teacher, list(example.positives), source)

    @property
    def skipped(self) -> dict[str, int]:
        """Records skipped while reading, by reason."""
        return dict(self.read_issues.counts)

    def missing_state_error(self, names: list[str]) -> Exception:
        return ConfigError(f"data.datasets: the checkpoint has no position for {', '.join(names)}; the mixture changed since it was written")

    def state_dict(self) -> dict[str, Any]:
        """The mixture's position plus the training-time counts (random fills, InfoNCE-only groups)."""
        return {**super().state_dict(), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "positions" in state:  # a checkpoint written before the shared MixtureSampler
            state = {**state, "sources": state["positions"]}
        super().load_state_dict(state)
        self.counts = Counter(state.get("counts", {}))


def load_datasets(config: FinetuneConfig) -> FinetuneSampler:
    """Read every dataset of the mixture (bad records counted) into a sampler."""
    issues = RecordIssues()
    datasets = {}
    for dataset in config.data.datasets:
        try:
            datasets[dataset.name] = list(read_examples(dataset.format, dataset.path, issues, split=dataset.split))
        except FileNotFoundError as error:
            raise ConfigError(f"data.datasets[{dataset.name}].path: {error}") from error
        logger.info("dataset %s: %d examples", dataset.name, len(datasets[dataset.name]))
    if issues:
        logger.warning("skipped records: %s", issues.describe())
    return FinetuneSampler(
        datasets,
        {dataset.name: dataset.weight for dataset in config.data.datasets},
        batch_size=config.batch_size,
        hard_negatives=config.hard_negatives,
        seed=config.seed,
        source_homogeneous=config.source_homogeneous,
        issues=issues,
    )


def steps_for_epochs(config: FinetuneConfig, sampler: FinetuneSampler) -> int:
    """``max_steps``, or enough steps for ``epochs`` passes over the mixture's examples."""
    if config.max_steps is not None:
        return config.max_steps
    return max(1, math.ceil(config.epochs * sum(sampler.rows_by_source.values()) / config.batch_size))


def false_negative_mask(batch: list[TrainingExample], rows: range, device: torch.device) -> torch.Tensor:
    """(len(rows), B * g) bool: True where a passage of the global batch is a copy of one of row i's positives.

    A copy has the same ``e5kit.io.text.normalized_text_key`` (the rule mining rejects copies by). Its own
    positive's column (the target) is never masked.
    """
    group = len(batch[0].passages)
    keys = text_keys([text for example in batch for text in example.passages], device)  # (B * g,)
    mask = torch.zeros((len(rows), keys.shape[0]), dtype=torch.bool, device=device)
    for local, row in enumerate(rows):
        positive_keys = text_keys(batch[row].positives, device)
        mask[local] = torch.isin(keys, positive_keys)
        mask[local, row * group] = False
    return mask


class Distillation:
    """Fine-tuning's objective: KL(teacher || student) over each query's group (positive + hard negatives)
    + ``alpha`` x InfoNCE over in-batch and hard negatives (``losses.distillation``); groups without
    teacher scores train on InfoNCE alone."""

    stage = "finetune"
    curve = CurveLabels(title="fine-tuning", loss="KL + alpha * InfoNCE loss", throughput="query groups/s")
    card_title = "e5kit fine-tuned encoder"
    gradcache_options: dict[str, Any] = {}  # the loss is its own, not GradCache's built-in InfoNCE

    def __init__(self, config: FinetuneConfig) -> None:
        self.config = config

    def local_loss(self, trainer: Trainer, batch: list[TrainingExample]) -> float:
        """Add this process's share of the gradient of the batch's distillation loss; return the global loss."""
        config, group, device = self.config, trainer.group, trainer.device
        local_size = len(batch) // group.world_size
        rows = range(group.rank * local_size, (group.rank + 1) * local_size)
        local = [batch[row] for row in rows]
        has_teacher = torch.tensor([example.teacher_scores is not None for example in local], device=device)
        width = config.hard_negatives + 1
        teacher = torch.tensor([example.teacher_scores or [0.0] * width for example in local], device=device)
        ignore = false_negative_mask(batch, rows, device) if config.mask_false_negatives else None

        def loss(queries: torch.Tensor, passages: torch.Tensor, *texts) -> torch.Tensor:
            return distillation_loss(
                queries,
                distributed.gather_with_grad(passages, group),
                group_size=width,
                offset=rows.start,
                teacher_scores=teacher if bool(has_teacher.any()) else None,
                has_teacher=has_teacher,
                alpha=config.alpha,
                tau=config.tau,
                similarity_fn_name=config.similarity_fn_name,
                teacher_temperature=config.teacher_temperature,
                ignore=ignore,
            )

        return trainer.cache.step([e.query for e in local], [text for e in local for text in e.passages], loss=loss)

    def card(self, trainer: Trainer) -> tuple[list[str], str]:
        """The objective, steps, data mixture and counts; paths are relative to the model's folder."""
        config, sampler = self.config, trainer.sampler
        final = Path(config.output_dir) / "final"
        rows = "\n".join(
            f"| {name} | {sampler.rows_by_source[name]} | {probability:.4f} |" for name, probability in zip(sampler.source_names, sampler.probabilities)
        )
        datasets = "\n".join(f"- {d.name}: {d.format} `{portable_name(d.path, final)}`" for d in config.data.datasets)
        skipped = "\n".join(f"- {reason}: {count}" for reason, count in {**sampler.skipped, **sampler.counts}.items()) or "- none"
        training = (
            f"- objective: KL(teacher || student) over 1 positive + {config.hard_negatives} hard negatives "
            f"+ {config.alpha} x InfoNCE (in-batch and hard negatives), {config.similarity_fn_name} / tau (tau = {config.tau}); "
            "groups without teacher scores train on InfoNCE alone\n"
            f"- optimizer steps: {trainer.step} of {config.max_steps}; global batch {config.batch_size} queries; "
            f"final loss {trainer.last_loss if trainer.last_loss is None else round(trainer.last_loss, 4)}\n\n"
            f"{datasets}\n\n| dataset | examples | sampling probability |\n|---|---|---|\n{rows}\n\n"
            f"Skipped records and groups trained without hard negatives or teacher scores:\n{skipped}\n"
        )
        return [d.name for d in config.data.datasets], training


def finetuner(
    config: FinetuneConfig, *, resume: bool = False, show_progress: bool | None = None, evaluator: Evaluator | None = None
) -> Trainer:
    """The engine composed for fine-tuning: the dataset mixture (read first: ``max_steps`` may follow from
    ``epochs``) and :class:`Distillation`."""
    sampler = load_datasets(config)
    config = config.model_copy(update={"max_steps": steps_for_epochs(config, sampler)})
    return Trainer(config, Distillation(config), lambda: sampler, resume=resume, show_progress=show_progress, evaluator=evaluator)


def finetune(
    config: FinetuneConfig | dict[str, Any] | str | Path, *, resume: bool = False, show_progress: bool | None = None,
    evaluator: Evaluator | None = None,
) -> Path:
    """Fine-tune and return the final model's path (``{output_dir}/final``); ``evaluator`` as for
    :func:`e5kit.training.trainer.pretrain`.

    Raises:
        ConfigError: an invalid setting or an unusable dataset (named) -- before any training work.
    """
    trainer = finetuner(coerce_config(config, FinetuneConfig), resume=resume, show_progress=show_progress, evaluator=evaluator)
    return trainer.run()


class FinetuneStage(PretrainStage):
    """Fine-tuning as a stage (``e5kit.stage``): reads the datasets and the start model, writes
    ``final/``; checkpoints, resume and restart as :class:`e5kit.training.trainer.PretrainStage`."""

    name = "finetune"
    config_class = FinetuneConfig

    def inputs(self) -> list[Path]:
        return [*(Path(dataset.path) for dataset in self.config.data.datasets), *local_model(self.config.init_model)]

    def train(self, resume: bool) -> Path:
        return finetune(self.config, resume=resume, evaluator=self.evaluator)
