"""The training engine: a sampler's global batches -> GradCache steps of a pluggable objective -> checkpoints,
metrics and the final model.

One ``Trainer`` runs every training stage (AdamW, warm-up/decay, mixed precision, GradCache, DDP, atomic
checkpoints, exact resume, metrics, evaluation during training, the final model and its card). A stage
composes it from its config, a batch sampler (``e5kit.data.mixture.MixtureSampler``: pairs here,
query groups for fine-tuning) and an :class:`Objective`: :class:`InfoNCE` for contrastive pre-training
(E5 section 2, here), ``e5kit.training.finetune.Distillation`` for fine-tuning (section 3).

Example:
    >>> from e5kit.training.trainer import pretrain
    >>> final = pretrain({"init_model": "bert-base-uncased", "data": {"paths": ["pairs/"]},
    ...                   "output_dir": "runs/pt", "max_steps": 20000, "batch_size": 32768})  # doctest: +SKIP

Under ``torchrun --nproc_per_node=N`` each process embeds ``batch_size / N`` pairs of every global
batch, negatives are gathered across processes, and gradients are averaged with one all-reduce.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from e5kit.data.shards import PairSampler
from e5kit.encoder import Encoder, resolve_device
from e5kit.io.pairs import MASK_FILE, resolve_pair_shards
from e5kit.model_card import build_model_card, portable_name, start_model
from e5kit.progress import progress_bar
from e5kit.stage import Stage, local_model
from e5kit.training import checkpoint as checkpoints
from e5kit.training import distributed
from e5kit.training.config import ConfigError, PretrainConfig, TrainingConfig, coerce_config
from e5kit.training.gradcache import GradCache
from e5kit.training.metrics import CurveLabels, MetricsLog, plot_loss_curve, read_metrics

logger = logging.getLogger(__name__)

#: Scores an encoder on held-out data: encoder -> {"<data set>/<metric>": value}.
Evaluator = Callable[[Encoder], dict[str, float]]

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Config fields a resumed run may change without changing the loss sequence.
RESUMABLE_CHANGES = {"max_steps", "checkpoint_every", "keep_checkpoints", "output_dir", "device", "report_to", "logging_dir"}


def configured_device(config: TrainingConfig) -> torch.device:
    """``config.device`` resolved (None: CUDA when present); a device this machine lacks is a ConfigError naming the field."""
    try:
        return resolve_device(config.device)
    except ValueError as error:
        raise ConfigError(f"device: {error}") from None


def pick_device(device: torch.device, config: TrainingConfig, group: distributed.ProcessGroup) -> torch.device:
    """The training device from the configured one (``configured_device``): a rank's own GPU under a launcher;
    fails (naming the field) on a precision the device cannot run."""
    if device.type == "cuda" and group.distributed and device.index is None:
        device = torch.device("cuda", group.local_rank)
    if config.precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision: fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return device


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and normalisation weights (BERT's recipe)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Sampler(Protocol):
    """What the engine draws batches from (``e5kit.data.mixture.MixtureSampler`` and its stages' kinds)."""

    source_names: list[str]

    def next_batch(self) -> list: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    @property
    def skipped(self) -> dict[str, int]: ...


class Objective(Protocol):
    """The pluggable part of a training stage: its loss and how the stage is named and described.

    Attributes:
        stage: Name of the stage (progress bar, model card).
        curve: Title and axis labels of loss_curve.png.
        card_title: Title of the final model's card.
        gradcache_options: GradCache settings of its built-in in-batch InfoNCE (``symmetric``,
            ``mask_false_negatives``), for an objective that uses it.
    """

    stage: str
    curve: CurveLabels
    card_title: str
    gradcache_options: dict[str, Any]

    def local_loss(self, trainer: Trainer, batch: list) -> float:
        """Accumulate this process's share of the gradient of ``batch`` (the global batch) through
        ``trainer.cache``; return the global loss."""
        ...

    def card(self, trainer: Trainer) -> tuple[list[str], str]:
        """The data set names and the "training" section of the final model's card."""
        ...


class InfoNCE:
    """Contrastive pre-training's objective: InfoNCE over (query, passage) pairs with in-batch negatives
    (GradCache's built-in loss: ``tau``, ``symmetric``, ``mask_false_negatives``)."""

    stage = "pretrain"
    curve = CurveLabels(title="contrastive pre-training", loss="InfoNCE loss", throughput="pairs/s")
    card_title = "e5kit contrastively pre-trained encoder"

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config
        self.gradcache_options = {"symmetric": config.symmetric, "mask_false_negatives": config.mask_false_negatives}

    def local_loss(self, trainer: Trainer, batch: list) -> float:
        group = trainer.group
        local_size = len(batch) // group.world_size
        local = batch[group.rank * local_size : (group.rank + 1) * local_size]
        return trainer.cache.step([pair.query for pair in local], [pair.passage for pair in local])

    def card(self, trainer: Trainer) -> tuple[list[str], str]:
        """The objective, steps, data mixture and skipped rows; paths relative to the model's folder."""
        config, sampler = self.config, trainer.sampler
        final = Path(config.output_dir) / "final"
        sources = "\n".join(
            f"| {name} | {sampler.rows_by_source[name]} | {probability:.4f} |"
            for name, probability in zip(sampler.source_names, sampler.probabilities)
        )
        skipped = "\n".join(f"- {reason}: {count}" for reason, count in sampler.skipped.items()) or "- none"
        training = (
            f"- objective: InfoNCE, in-batch negatives, {config.similarity_fn_name} / tau (tau = {config.tau}), "
            f"{'symmetric' if config.symmetric else 'query -> passage'}, mean pooling\n"
            f"- optimizer steps: {trainer.step} of {config.max_steps}; global batch {config.batch_size} pairs; "
            f"final loss {trainer.last_loss if trainer.last_loss is None else round(trainer.last_loss, 4)}\n\n"
            f"Pair shards: {', '.join(f'`{portable_name(p, final)}`' for p in config.data.paths)}\n\n"
            "| source | rows | sampling probability |\n|---|---|---|\n"
            f"{sources}\n\nSkipped rows:\n{skipped}\n"
        )
        return sampler.source_names, training


def pair_sampler(config: PretrainConfig) -> PairSampler:
    """Pre-training's sampler: pair shards mixed by ``data.source_weights``."""
    return PairSampler(
        config.data.paths,
        batch_size=config.batch_size,
        source_weights=config.data.source_weights,
        seed=config.seed,
        source_homogeneous=config.source_homogeneous,
    )


class Trainer:
    """Holds one training run: encoder, optimizer, scheduler, data sampler, objective, logs.

    Args:
        config: The stage's config (the shared parts, ``max_steps``, ``batch_size``, ``chunk_size``,
            ``lr``, ``warmup_steps``, token limits).
        objective: The loss and the stage's names (:class:`InfoNCE`, ``finetune.Distillation``).
        build_sampler: Makes the batch sampler; called after the run folder is checked, before the model loads.
        resume: Continue from the newest valid checkpoint.
        show_progress: Progress bar on the main process (default on).
        evaluator: Scores the encoder on ``config.eval_data``.
    """

    def __init__(
        self,
        config: TrainingConfig,
        objective: Objective,
        build_sampler: Callable[[], Sampler],
        *,
        resume: bool = False,
        show_progress: bool | None = None,
        evaluator: Evaluator | None = None,
    ) -> None:
        if config.eval_data and evaluator is None:
            raise ConfigError("eval_data: the trainer was given no evaluator to score it with (pass evaluator=, as e5kit pretrain does)")
        self.config = config
        self.objective = objective
        self.stage = objective.stage
        self.curve = objective.curve
        self.evaluator = evaluator
        configured = configured_device(config)
        self.group = distributed.init_process_group(configured.type)
        self.device = pick_device(configured, config, self.group)
        if config.batch_size % self.group.world_size:
            raise ConfigError(f"batch_size: {config.batch_size} is not divisible by the {self.group.world_size} processes")
        self.output_dir = Path(config.output_dir)
        self.checkpoint_root = self.output_dir / "checkpoints"
        if not resume and checkpoints.list_checkpoints(self.checkpoint_root):
            raise ConfigError(f"output_dir: {self.output_dir} already holds checkpoints; pass --resume to continue them, --force to start over, or use a new output_dir")
        self.sampler = build_sampler()
        torch.manual_seed(config.seed)
        self.encoder = Encoder.load(
            config.init_model, prompts=config.prompts, similarity_fn_name=config.similarity_fn_name, device=self.device
        )
        self.model = self.encoder.model.train()
        if config.gradient_checkpointing:
            if hasattr(self.model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name goes in 6)
                self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, config.weight_decay), lr=config.lr)
        self.scheduler = self._linear_schedule()
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        self.step = 0
        if resume:
            self._resume()
        self.cache = GradCache(
            self.encoder,
            chunk_size=config.chunk_size,
            tau=config.tau,
            similarity_fn_name=config.similarity_fn_name,
            query_max_length=config.query_max_length,
            passage_max_length=config.passage_max_length,
            group=self.group,
            autocast=self._autocast,
            scale_loss=self.scaler.scale if self.scaler else (lambda loss: loss),
            **objective.gradcache_options,
        )
        self.metrics = MetricsLog(self.output_dir / "metrics.jsonl", keep_until_step=self.step if resume else None, tensorboard_dir=config.tensorboard_dir) if self.group.is_main else None
        self.show_progress = self.group.is_main and (show_progress is not False)
        self.last_loss: float | None = None

    def model_card(self) -> str:
        """README.md of the final model: the shared Hub-ready card (``e5kit.model_card``) with the
        objective's description of the training."""
        config = self.config
        final = Path(config.output_dir) / "final"
        datasets, training = self.objective.card(self)
        return build_model_card(
            self.encoder,
            title=self.objective.card_title,
            model_name=Path(config.output_dir).resolve().name,
            start=start_model(config.init_model, final),
            stage=self.stage,
            datasets=datasets,
            training=training,
            hyperparameters=config.model_dump(mode="json", exclude={"data", "init_model", "output_dir"}),
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.config.precision])

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.empty(0, dtype=torch.uint8),
            },
            "data": json.dumps(self.sampler.state_dict()),
            "config": self.config.model_dump_json(),
        }

    def _linear_schedule(self, last_step: int = 0):
        """Warmup then linear decay to 0 at ``max_steps``, positioned after ``last_step`` optimizer steps."""
        from transformers import get_linear_schedule_with_warmup

        return get_linear_schedule_with_warmup(self.optimizer, self.config.warmup_steps, self.config.max_steps, last_epoch=last_step - 1)

    def _resume(self) -> None:
        folder = checkpoints.latest_valid_checkpoint(self.checkpoint_root)
        if folder is None:
            logger.warning("--resume: no valid checkpoint in %s; starting from step 0", self.checkpoint_root)
            return
        state = checkpoints.load_checkpoint(folder, map_location=self.device)
        saved = json.loads(state["config"])
        current = json.loads(self.config.model_dump_json())
        changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
        if changed:
            logger.warning("resuming with changed settings %s: the loss sequence will differ from the original run", ", ".join(changed))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if self.device.type == "cuda" and state["rng"]["cuda"].numel():
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        self.sampler.load_state_dict(json.loads(state["data"]))
        self.step = int(state["step"])
        # The schedule follows from the config and the step, so a changed max_steps applies at once
        # (a restored scheduler state would run one more step at the saved rate first).
        self.scheduler = self._linear_schedule(last_step=self.step)
        logger.info("resumed from %s (step %d)", folder, self.step)

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over one global batch; returns its metrics."""
        started = time.perf_counter()
        batch = self.sampler.next_batch()
        self.optimizer.zero_grad(set_to_none=True)
        local_loss = self.objective.local_loss(self, batch)
        loss = distributed.average_gradients(self.parameters, self.group, torch.tensor([local_loss], device=self.device))
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.config.max_grad_norm or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, max_norm)
        lr = self.scheduler.get_last_lr()[0]
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        elapsed = time.perf_counter() - started
        self.last_loss = float(loss[0])
        return {
            "step": self.step,
            "loss": self.last_loss,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "pairs_per_s": len(batch) / elapsed,
            "step_s": elapsed,
            "sources": dict(Counter(pair.source for pair in batch)),
        }

    def save_checkpoint(self) -> None:
        if self.group.is_main:
            checkpoints.save_checkpoint(self.checkpoint_root, self.step, self._state(), self.config.keep_checkpoints)
        distributed.barrier(self.group)

    def evaluate(self) -> None:
        """Score the model on ``eval_data`` (main process; the others wait) and log ``{"step", "eval": scores}``."""
        if self.group.is_main:
            self.model.eval()
            scores = self.evaluator(self.encoder)
            self.model.train()
            self.metrics.log({"step": self.step, "eval": scores})
        distributed.barrier(self.group)

    def run(self) -> Path:
        """Train to ``max_steps`` and save the final model; returns ``{output_dir}/final``."""
        config = self.config
        progress = progress_bar(total=config.max_steps, initial=self.step, desc=self.stage, unit="step", show=self.show_progress)
        try:
            while self.step < config.max_steps:
                record = self.train_step()
                if self.metrics:
                    self.metrics.log(record)
                progress.update(1)
                progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", pairs_s=f"{record['pairs_per_s']:.1f}")
                if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                    self.save_checkpoint()
                if config.eval_data and (self.step == config.max_steps or (config.eval_every and self.step % config.eval_every == 0)):
                    self.evaluate()
        finally:
            progress.close()
            if self.metrics:
                self.metrics.close()
        final = self.output_dir / "final"
        if self.group.is_main:
            if self.sampler.skipped:
                logger.warning("skipped invalid rows: %s", self.sampler.skipped)
            if config.gradient_checkpointing:
                disable = getattr(self.model, "activation_checkpointing_disable", None) or self.model.gradient_checkpointing_disable
                disable()
            self.model.eval()
            self.encoder.save(final, model_card=self.model_card())
            plot_loss_curve(self.output_dir / "metrics.jsonl", self.output_dir / "loss_curve.png", self.curve)
        distributed.barrier(self.group)
        return final


def pretrainer(
    config: PretrainConfig, *, resume: bool = False, show_progress: bool | None = None, evaluator: Evaluator | None = None
) -> Trainer:
    """The engine composed for contrastive pre-training: pair shards, :class:`InfoNCE`."""
    return Trainer(
        config, InfoNCE(config), lambda: pair_sampler(config), resume=resume, show_progress=show_progress, evaluator=evaluator
    )


def pretrain(
    config: PretrainConfig | dict[str, Any] | str | Path, *, resume: bool = False, show_progress: bool | None = None,
    evaluator: Evaluator | None = None,
) -> Path:
    """Run contrastive pre-training and return the path of the final model (``{output_dir}/final``).

    Args:
        config: A PretrainConfig, a nested dict of its fields, or a YAML file.
        resume: Continue from the newest valid checkpoint in ``{output_dir}/checkpoints``.
        show_progress: Progress bar on the main process (default on).
        evaluator: Scores the encoder on ``config.eval_data``: encoder -> {"<folder>/<metric>": value}
            (``e5kit.evaluation.retrieval.retrieval_evaluator``); required when ``eval_data`` is set.

    Raises:
        ConfigError: an invalid setting (named) — raised before any training work.
        e5kit.io.pairs.ShardError: unusable data files (named).
    """
    trainer = pretrainer(coerce_config(config), resume=resume, show_progress=show_progress, evaluator=evaluator)
    return trainer.run()


def pretrain_on(model: str, pairs_dir: Path, output_dir: Path, settings: dict[str, Any]) -> Path:
    """The consistency filter's re-training step (``e5kit.data.consistency.TrainFn``): :func:`pretrain`
    from ``model`` on ``pairs_dir`` with ``settings``; a run killed before is resumed from its last
    checkpoint (bit-exact, as ``e5kit pretrain --resume``). Callers hand it to
    ``consistency_filter(..., train_fn=pretrain_on)``, so the data stage never imports training."""
    config = {**settings, "init_model": model, "data": {**settings.get("data", {}), "paths": [str(pairs_dir)]}, "output_dir": str(output_dir)}
    return Path(pretrain(config, resume=bool(checkpoints.list_checkpoints(Path(output_dir) / "checkpoints"))))


class PretrainStage(Stage[PretrainConfig]):
    """Pre-training as a stage (``e5kit.stage``): reads pair shards and the start model, writes
    ``final/``; continues from its newest checkpoint after a kill.

    A run killed under the same fingerprint (settings and inputs) resumes from its newest checkpoint;
    ``resume`` (``--resume``) resumes from it whatever the settings were (a changed ``max_steps`` then
    takes effect), ``restart`` (``--force``) removes the checkpoints and starts from step 0. Otherwise
    checkpoints left in the folder by another run are refused (the trainer's error), never overwritten.

    Args:
        config: The pre-training settings.
        evaluator: As for :func:`pretrain` (needed when ``eval_data`` is set).
        resume: Continue from the newest checkpoint even when it was written under other settings.
        restart: Remove the folder's checkpoints first.
    """

    name = "pretrain"
    config_class = PretrainConfig
    # Where the metrics are also sent and how often checkpoints are kept, never what is trained.
    runtime_fields: ClassVar[frozenset[str]] = frozenset({"report_to", "logging_dir", "checkpoint_every", "keep_checkpoints"})
    resumable = True

    def __init__(self, config: PretrainConfig, evaluator: Evaluator | None = None, *, resume: bool = False, restart: bool = False) -> None:
        super().__init__(config)
        self.evaluator = evaluator
        self.resume = resume
        self.restart = restart

    def inputs(self) -> list[Path]:
        # A keep-mask folder is an input itself (its mask and ranks), besides the shards it filters.
        masks = [Path(path) for path in self.config.data.paths if (Path(path) / MASK_FILE).is_file()]
        shards = [shard.path for shard in resolve_pair_shards(self.config.data.paths)]
        return [*masks, *shards, *local_model(self.config.init_model)]

    def outputs(self) -> dict[str, Path]:
        return {"model": self.output_dir / "final", "loss_curve": self.output_dir / "loss_curve.png"}

    def train(self, resume: bool) -> Path:
        """Run the trainer; returns the final model's path."""
        return pretrain(self.config, resume=resume, evaluator=self.evaluator)

    def execute(self, log: Callable[[str], None]) -> dict[str, Any]:
        root = self.output_dir / "checkpoints"
        if self.restart:  # every rank, before the trainer starts: no rank can have saved a checkpoint yet
            shutil.rmtree(root, ignore_errors=True)
        resume = self.resume or (self.resuming and bool(checkpoints.list_checkpoints(root)))
        if resume:
            log("  resuming from the newest checkpoint")
        final = self.train(resume)
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 reports
            return {}
        return training_summary(self.output_dir, final, log)


def training_summary(output_dir: Path, final: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """A finished training run's report: its model, steps and first and last loss (from ``metrics.jsonl``)."""
    losses = [row["loss"] for row in read_metrics(output_dir / "metrics.jsonl") if "loss" in row]
    log(f"  {len(losses)} steps; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return {"model": str(final), "steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1]}
