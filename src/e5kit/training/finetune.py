"""E5's fine-tuning stage (section 3) on the pre-training engine: hard negatives, teacher scores, KL + alpha * InfoNCE.

The run is the pre-training ``Pretrainer`` (AdamW, warm-up/decay, GradCache, DDP, atomic checkpoints,
exact resume, metrics) with two parts swapped: the data sampler, which draws a mixture of datasets
(query, one positive, ``hard_negatives`` negatives, teacher scores), and the loss
(``losses.distillation``). Each query's group is embedded as passages (positive first), so GradCache
and cross-process gathering work unchanged.

Example:
    >>> final = finetune({"init_model": "runs/pt/final", "output_dir": "runs/ft",
    ...                   "data": {"datasets": [{"name": "msmarco", "format": "flag", "path": "scored.jsonl"}]}})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from e5kit.data.finetune_formats import FORMATS, FinetuneExample, RecordIssues, read_examples
from e5kit.model_card import build_model_card, portable_name, start_model
from e5kit.io.text import normalized_text_key
from e5kit.training import distributed
from e5kit.training.config import ConfigError, PretrainConfig, coerce_config, load_config
from e5kit.training.gradcache import text_keys
from e5kit.training.losses.distillation import distillation_loss
from e5kit.training.metrics import CurveLabels
from e5kit.training.mining import random_positions
from e5kit.training.trainer import Evaluator, Pretrainer

logger = logging.getLogger(__name__)

RANDOM_FILL = "examples with too few hard negatives (random passages added; no teacher scores)"


class DatasetConfig(BaseModel):
    """One fine-tuning dataset.

    Attributes:
        name: Its name in metrics and the model card.
        format: flag (FlagEmbedding JSONL), beir (folder with qrels/<split>.tsv), msmarco (text
            triples TSV) or nli (premise/hypothesis/label TSV or JSONL).
        path: File (or BEIR folder).
        split: BEIR qrels split.
        weight: Sampling weight in the mixture (relative to the other datasets' weights).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    format: Literal[FORMATS]
    path: str
    split: str = "train"
    weight: float = Field(default=1.0, ge=0)


class FinetuneDataConfig(BaseModel):
    """The dataset mixture."""

    model_config = ConfigDict(extra="forbid")

    datasets: list[DatasetConfig] = Field(min_length=1)

    @field_validator("datasets")
    @classmethod
    def _valid_mixture(cls, datasets: list[DatasetConfig]) -> list[DatasetConfig]:
        names = [dataset.name for dataset in datasets]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"dataset names must be unique; repeated: {', '.join(repeated)}")
        if not any(dataset.weight > 0 for dataset in datasets):
            raise ValueError("at least one dataset needs a weight > 0")
        return datasets


class FinetuneConfig(PretrainConfig):
    """Fine-tuning (E5 section 3); the pre-training fields apply, with the paper's fine-tuning defaults.

    Attributes:
        data: The dataset mixture.
        prompts: Role prefixes; None keeps the model's own (E5's for a plain Hugging Face checkpoint).
        max_steps: Optimizer steps; None derives them from ``epochs``.
        epochs: Passes over the mixture's examples (used when ``max_steps`` is None).
        hard_negatives: Hard negatives per query (the group is 1 positive + these).
        alpha: Weight of InfoNCE next to KL(teacher || student).
        teacher_temperature: Temperature of the teacher's scores.
    """

    data: FinetuneDataConfig
    prompts: dict[str, str] | None = None
    max_steps: int | None = Field(default=None, ge=1)
    epochs: float = Field(default=3.0, gt=0)
    batch_size: int = Field(default=256, ge=2)
    chunk_size: int = Field(default=32, ge=1)
    lr: float = Field(default=2e-5, gt=0)
    warmup_steps: int = Field(default=400, ge=0)
    query_max_length: int = Field(default=192, ge=4)
    passage_max_length: int = Field(default=192, ge=4)
    hard_negatives: int = Field(default=7, ge=0)
    alpha: float = Field(default=0.2, ge=0)
    teacher_temperature: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _prompts_have_roles(self) -> FinetuneConfig:
        if self.prompts:
            missing = [role for role in ("query", "passage") if role not in self.prompts]
            if missing:
                raise ValueError(f"prompts: missing role(s) {', '.join(missing)} (give both, {{}} for no prefixes, or null for the model's own)")
        if self.symmetric:
            raise ValueError("symmetric: not supported in fine-tuning (each query has its own group of passages)")
        return self


def load_finetune_config(path: str | Path | None, overrides: list[str] | None = None) -> FinetuneConfig:
    """Read a YAML config, apply ``key=value`` overrides and validate; errors name the field (``ConfigError``)."""
    return load_config(path, overrides, schema=FinetuneConfig)


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


class FinetuneSampler:
    """Global batches of training groups drawn from a weighted mixture of datasets, with an exact resumable position.

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
        self.batch_size = batch_size
        self.hard_negatives = hard_negatives
        self.seed = seed
        self.source_homogeneous = source_homogeneous
        self.read_issues = issues or RecordIssues()
        self.batches = 0
        self.positions = {name: {"epoch": 0, "index": 0} for name in self.datasets}
        self.counts: Counter = Counter()
        self.rows_by_source = Counter({name: len(examples) for name, examples in self.datasets.items()})
        self.source_names = sorted(self.datasets)
        probabilities = np.array([weights[name] for name in self.source_names], dtype=np.float64)
        self.probabilities = probabilities / probabilities.sum()
        self._pools: dict[str, list[str]] = {}
        self._pool_keys: dict[str, list[str]] = {}
        self._orders: dict[tuple[str, int], np.ndarray] = {}

    def _pool(self, name: str) -> list[str]:
        """Every passage of a dataset, for random negatives."""
        if name not in self._pools:
            texts = dict.fromkeys(text for example in self.datasets[name] for text in example.positives + example.negatives)
            self._pools[name] = list(texts)
            self._pool_keys[name] = [normalized_text_key(text) for text in self._pools[name]]
        return self._pools[name]

    def _order(self, name: str, epoch: int) -> np.ndarray:
        key = (name, epoch)
        if key not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if k[0] != name}
            generator = np.random.default_rng([self.seed, zlib.crc32(name.encode("utf-8")), epoch])
            self._orders[key] = generator.permutation(len(self.datasets[name]))
        return self._orders[key]

    def _next_examples(self, name: str, count: int) -> list[FinetuneExample]:
        examples = []
        position = self.positions[name]
        for _ in range(count):
            order = self._order(name, position["epoch"])
            examples.append(self.datasets[name][order[position["index"]]])
            position["index"] += 1
            if position["index"] == len(order):
                position["epoch"] += 1
                position["index"] = 0
        return examples

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

    def next_batch(self) -> list[TrainingExample]:
        """The next global batch of ``batch_size`` groups."""
        generator = np.random.default_rng([self.seed, self.batches])
        self.batches += 1
        if self.source_homogeneous:
            counts = np.zeros(len(self.source_names), dtype=np.int64)
            counts[generator.choice(len(self.source_names), p=self.probabilities)] = self.batch_size
        else:
            counts = generator.multinomial(self.batch_size, self.probabilities)
        batch = [
            self.group(example, name, generator)
            for name, count in zip(self.source_names, counts)
            for example in self._next_examples(name, int(count))
        ]
        return [batch[i] for i in generator.permutation(len(batch))]

    @property
    def skipped(self) -> dict[str, int]:
        """Records skipped while reading, by reason."""
        return dict(self.read_issues.counts)

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "positions": json.loads(json.dumps(self.positions)), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = sorted(set(self.datasets) - set(state["positions"]))
        if missing:
            raise ConfigError(f"data.datasets: the checkpoint has no position for {', '.join(missing)}; the mixture changed since it was written")
        self.batches = int(state["batches"])
        self.positions = {name: dict(state["positions"][name]) for name in self.datasets}
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


def model_card(config: FinetuneConfig, steps: int, last_loss: float | None, sampler: FinetuneSampler, encoder) -> str:
    """README.md of the fine-tuned model: the shared Hub-ready card (``e5kit.model_card``) with the
    objective, steps, data mixture and counts; paths are relative to the model's folder."""
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
        f"- optimizer steps: {steps} of {config.max_steps}; global batch {config.batch_size} queries; "
        f"final loss {last_loss if last_loss is None else round(last_loss, 4)}\n\n"
        f"{datasets}\n\n| dataset | examples | sampling probability |\n|---|---|---|\n{rows}\n\n"
        f"Skipped records and groups trained without hard negatives or teacher scores:\n{skipped}\n"
    )
    return build_model_card(
        encoder,
        title="e5kit fine-tuned encoder",
        model_name=Path(config.output_dir).resolve().name,
        start=start_model(config.init_model, final),
        stage="finetune",
        datasets=[d.name for d in config.data.datasets],
        training=training,
        hyperparameters=config.model_dump(mode="json", exclude={"data", "init_model", "output_dir"}),
    )


class Finetuner(Pretrainer):
    """A ``Pretrainer`` whose batches are groups (positive + hard negatives + teacher scores) and whose loss is distillation."""

    stage = "finetune"
    curve = CurveLabels(title="fine-tuning", loss="KL + alpha * InfoNCE loss", throughput="query groups/s")

    def __init__(
        self, config: FinetuneConfig, *, resume: bool = False, show_progress: bool | None = None, evaluator: Evaluator | None = None
    ) -> None:
        self._finetune_sampler = load_datasets(config)
        config = config.model_copy(update={"max_steps": steps_for_epochs(config, self._finetune_sampler)})
        super().__init__(config, resume=resume, show_progress=show_progress, evaluator=evaluator)

    def build_sampler(self) -> FinetuneSampler:
        return self._finetune_sampler

    def local_loss(self, batch: list[TrainingExample]) -> float:
        """Add this process's share of the gradient of the batch's distillation loss; return the global loss."""
        config, group = self.config, self.group
        local_size = len(batch) // group.world_size
        rows = range(group.rank * local_size, (group.rank + 1) * local_size)
        local = [batch[row] for row in rows]
        has_teacher = torch.tensor([example.teacher_scores is not None for example in local], device=self.device)
        width = config.hard_negatives + 1
        teacher = torch.tensor([example.teacher_scores or [0.0] * width for example in local], device=self.device)
        ignore = false_negative_mask(batch, rows, self.device) if config.mask_false_negatives else None

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

        return self.cache.step([e.query for e in local], [text for e in local for text in e.passages], loss=loss)

    def model_card(self) -> str:
        return model_card(self.config, self.step, self.last_loss, self.sampler, self.encoder)


def finetune(
    config: FinetuneConfig | dict[str, Any] | str | Path, *, resume: bool = False, show_progress: bool | None = None,
    evaluator: Evaluator | None = None,
) -> Path:
    """Fine-tune and return the final model's path (``{output_dir}/final``); ``evaluator`` as for
    :func:`e5kit.training.trainer.pretrain`.

    Raises:
        ConfigError: an invalid setting or an unusable dataset (named) -- before any training work.
    """
    trainer = Finetuner(coerce_config(config, FinetuneConfig), resume=resume, show_progress=show_progress, evaluator=evaluator)
    try:
        return trainer.run()
    finally:
        distributed.destroy(trainer.group)
