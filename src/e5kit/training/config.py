"""The training stages' configurations: typed parts every stage shares, composed by sibling stage configs.

``PretrainConfig`` (E5 section 2) and ``FinetuneConfig`` (section 3) are siblings: each is built from the
same parts -- ``ModelSettings`` (start model, scoring), ``OptimizerSettings`` (AdamW, clipping),
``RuntimeSettings`` (precision, device, seed, batch composition), ``CheckpointSettings`` (run folder,
checkpoints) and ``LoggingSettings`` (TensorBoard, evaluation during training) -- plus the fields of its
own stage (the data, the objective's settings, and the settings whose defaults differ between the
stages, such as ``lr`` and ``batch_size``). The parts are mixed in rather than nested, so a YAML config
keeps the flat keys users write (``lr: 2e-5``, ``checkpoint_every: 500``), and a key of the other stage
(``symmetric`` in fine-tuning, ``hard_negatives`` in pre-training) is rejected by name as unknown.

Example:
    >>> from e5kit.config import load_config
    >>> config = load_config(PretrainConfig, "configs/pretrain.yaml", ["max_steps=10", "data.paths=[pairs.parquet]"])  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from e5kit import config as config_io
from e5kit.config import ConfigError
from e5kit.data.finetune_formats import FORMATS
from e5kit.encoder.model_format import E5_PROMPTS
from e5kit.training.metrics import require_tensorboard

__all__ = [
    "CheckpointSettings",
    "ConfigError",
    "DataConfig",
    "DatasetConfig",
    "FinetuneConfig",
    "FinetuneDataConfig",
    "LoggingSettings",
    "ModelSettings",
    "OptimizerSettings",
    "PretrainConfig",
    "RuntimeSettings",
    "TrainingConfig",
    "coerce_config",
]


def check_prompt_roles(prompts: dict[str, str] | None, hint: str) -> None:
    """A non-empty prompts mapping names both roles."""
    if prompts:
        missing = [role for role in ("query", "passage") if role not in prompts]
        if missing:
            raise ValueError(f"prompts: missing role(s) {', '.join(missing)} ({hint})")


class ModelSettings(BaseModel):
    """The model trained and how it scores.

    Attributes:
        init_model: Model to start from: a directory, a bundled name or a Hub id.
        similarity_fn_name: The score: "cosine" (E5; embeddings are L2-normalised before scoring whatever
            the start model ships, and the saved model gets a Normalize module) or "dot" (raw dot
            products; only when asked for). sentence-transformers' name for the setting.
        tau: Softmax temperature over the scores.
        mask_false_negatives: Ignore in-batch negatives whose text equals a positive's
            (same ``e5kit.io.text.normalized_text_key``: case, Unicode width and spacing do not count).
        gradient_checkpointing: Recompute activations in backward (less memory per chunk, ~30% slower).
    """

    model_config = ConfigDict(extra="forbid")

    init_model: str
    similarity_fn_name: Literal["cosine", "dot"] = "cosine"
    tau: float = Field(default=0.01, gt=0)
    mask_false_negatives: bool = True
    gradient_checkpointing: bool = False

    @model_validator(mode="before")
    @classmethod
    def _normalize_was_renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "normalize" in data:
            raise ValueError(
                "normalize was replaced by similarity_fn_name: cosine (what normalize: true meant; the default) "
                "or dot (raw dot products)"
            )
        return data


class OptimizerSettings(BaseModel):
    """AdamW settings shared by the stages (``lr`` and ``warmup_steps`` are per stage: their defaults differ).

    Attributes:
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        max_grad_norm: Gradient clipping norm; 0 disables clipping.
    """

    model_config = ConfigDict(extra="forbid")

    weight_decay: float = Field(default=0.01, ge=0)
    max_grad_norm: float = Field(default=1.0, ge=0)


class RuntimeSettings(BaseModel):
    """Where and how the steps run, and how batches are drawn.

    Attributes:
        precision: fp32, bf16 (autocast) or fp16 (autocast + loss scaling, CUDA only).
        device: Torch device; None picks CUDA when present.
        seed: Seed of the model's RNG and of the data sampler.
        source_homogeneous: Draw every batch from a single source (data set).
    """

    model_config = ConfigDict(extra="forbid")

    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: str | None = None
    seed: int = 42
    source_homogeneous: bool = False


class CheckpointSettings(BaseModel):
    """The run folder and its checkpoints.

    Attributes:
        output_dir: Run folder: checkpoints/, metrics.jsonl, loss_curve.png, final/.
        checkpoint_every: Steps between checkpoints; 0 writes none.
        keep_checkpoints: How many checkpoints to keep.
    """

    model_config = ConfigDict(extra="forbid")

    output_dir: Path
    checkpoint_every: int = Field(default=500, ge=0)
    keep_checkpoints: int = Field(default=2, ge=1)


#: Where ``report_to`` can send the per-step metrics besides metrics.jsonl.
Reporter = Literal["tensorboard"]
REPORTERS: tuple[str, ...] = get_args(Reporter)


class LoggingSettings(BaseModel):
    """Where the per-step metrics go besides metrics.jsonl, and evaluation during training.

    Attributes:
        report_to: Where the per-step metrics also go: none ([]) or tensorboard (loss, lr, grad_norm,
            pairs_per_s, step_s, per-source counts as train/<name> scalars; needs ``pip install
            'e5kit[tensorboard]'``). Hugging Face Trainer's name for the setting.
        logging_dir: The TensorBoard folder (``tensorboard --logdir`` it); None = {output_dir}/tensorboard.
        eval_data: BEIR folders the model is scored on (nDCG@10, Recall@100) every ``eval_every`` steps
            and after the last one, logged as ``{"step": n, "eval": {"<folder name>/<metric>": value}}``
            in metrics.jsonl (TensorBoard: ``eval/<folder name>/<metric>``). The scoring is
            e5kit.evaluation's, handed to the trainer by its caller (``e5kit pretrain``/``finetune``,
            the quickstart), so training never imports evaluation.
        eval_every: Steps between evaluations of ``eval_data``; 0 scores only after the last step.
    """

    model_config = ConfigDict(extra="forbid")

    report_to: list[Reporter] = Field(default_factory=list)
    logging_dir: Path | None = None
    eval_data: list[Path] = []
    eval_every: int = Field(default=0, ge=0)

    @property
    def tensorboard_dir(self) -> Path | None:
        """The TensorBoard folder, or None when ``report_to`` does not ask for TensorBoard."""
        if "tensorboard" not in self.report_to:
            return None
        return self.logging_dir or self.output_dir / "tensorboard"  # output_dir: CheckpointSettings, composed beside this

    @field_validator("report_to", mode="before")
    @classmethod
    def _reporter_known(cls, report_to: Any) -> Any:
        # Users of Hugging Face's Trainer expect its reporters (wandb, mlflow, ...); the bare "Input should
        # be 'tensorboard'" left them installing or logging in to a package e5kit never calls.
        for name in report_to if isinstance(report_to, list) else []:
            if name not in REPORTERS:
                raise ValueError(
                    f"e5kit has no {name!r} reporter, so installing or logging in to {name} will not add one; it reports to "
                    f"{', '.join(REPORTERS)} (--report-to tensorboard, after pip install 'e5kit[tensorboard]'), and every step "
                    "is in {output_dir}/metrics.jsonl without any --report-to"
                )
        return report_to

    @field_validator("report_to")
    @classmethod
    def _reporter_installed(cls, report_to: list[str]) -> list[str]:
        # checked here so a missing package fails before the model loads, as a one-line config error
        if "tensorboard" in report_to:
            try:
                require_tensorboard()
            except ImportError as error:
                raise ValueError(str(error)) from None
        return report_to


class DataConfig(BaseModel):
    """Where the training pairs come from and how sources are mixed.

    Attributes:
        paths: Pair-shard files, folders (every *.parquet, *.jsonl, *.jsonl.gz inside), glob patterns, or a
            consistency filter's output folder (its keep-mask is read through: ``e5kit.io.pairs.resolve_pair_shards``).
        source_weights: Source name -> sampling weight; None samples sources in proportion to their
            size. Sources found in the data but missing here get weight 0 (a warning names them).
    """

    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(min_length=1)
    source_weights: dict[str, float] | None = None

    @field_validator("source_weights")
    @classmethod
    def _weights_positive(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        if weights is not None:
            negative = [name for name, weight in weights.items() if weight < 0]
            if negative:
                raise ValueError(f"weights must be >= 0; negative for {', '.join(negative)}")
            if not any(weight > 0 for weight in weights.values()):
                raise ValueError("at least one source needs a weight > 0")
        return weights


class PretrainConfig(ModelSettings, OptimizerSettings, RuntimeSettings, CheckpointSettings, LoggingSettings):
    """Contrastive pre-training (E5 section 2): InfoNCE with in-batch negatives, GradCache, DDP.

    The shared parts' fields (see their classes) plus:

    Attributes:
        prompts: Role prefixes given to the model (E5's "query: "/"passage: " by default).
        data: Pair shards and source mixing.
        max_steps: Optimizer steps.
        batch_size: Global pairs per optimizer step (over all processes): every query scores against
            all of them.
        chunk_size: Pairs embedded at once per process (GradCache); memory follows this, not batch_size.
        lr: Peak learning rate of AdamW.
        warmup_steps: Linear warm-up steps, then linear decay to 0 at max_steps.
        query_max_length: Token limit of queries (prefix included).
        passage_max_length: Token limit of passages (prefix included).
        symmetric: Add the passage->query loss.
    """

    model_config = ConfigDict(extra="forbid")

    prompts: dict[str, str] = Field(default_factory=lambda: dict(E5_PROMPTS))
    data: DataConfig
    max_steps: int = Field(ge=1)
    batch_size: int = Field(default=1024, ge=2)
    chunk_size: int = Field(default=64, ge=1)
    lr: float = Field(default=2e-4, gt=0)
    warmup_steps: int = Field(default=1000, ge=0)
    query_max_length: int = Field(default=128, ge=4)
    passage_max_length: int = Field(default=128, ge=4)
    symmetric: bool = False

    @model_validator(mode="after")
    def _prompts_have_roles(self) -> PretrainConfig:
        check_prompt_roles(self.prompts, "give both, or {} for no prefixes")
        return self


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


class FinetuneConfig(ModelSettings, OptimizerSettings, RuntimeSettings, CheckpointSettings, LoggingSettings):
    """Fine-tuning (E5 section 3) with the paper's fine-tuning defaults.

    The shared parts' fields (see their classes) plus:

    Attributes:
        data: The dataset mixture.
        prompts: Role prefixes; None keeps the model's own (E5's for a plain Hugging Face checkpoint).
        max_steps: Optimizer steps; None derives them from ``epochs``.
        epochs: Passes over the mixture's examples (used when ``max_steps`` is None).
        batch_size: Global query groups per optimizer step (over all processes).
        chunk_size: Texts embedded at once per process (GradCache).
        lr: Peak learning rate of AdamW.
        warmup_steps: Linear warm-up steps, then linear decay to 0 at max_steps.
        query_max_length: Token limit of queries (prefix included).
        passage_max_length: Token limit of passages (prefix included).
        hard_negatives: Hard negatives per query (the group is 1 positive + these).
        alpha: Weight of InfoNCE next to KL(teacher || student).
        teacher_temperature: Temperature of the teacher's scores.
    """

    model_config = ConfigDict(extra="forbid")

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
        check_prompt_roles(self.prompts, "give both, {} for no prefixes, or null for the model's own")
        return self


#: The settings one training run reads: either stage's config (the engine reads the shared parts,
#: ``max_steps``, ``batch_size``, ``chunk_size``, ``lr``, ``warmup_steps`` and the token limits).
TrainingConfig = PretrainConfig | FinetuneConfig


def coerce_config(
    config: TrainingConfig | dict[str, Any] | str | Path, schema: type[TrainingConfig] = PretrainConfig
) -> TrainingConfig:
    """Accept a config object of ``schema``, a nested dict or a YAML path."""
    if isinstance(config, schema):
        return config
    if isinstance(config, dict):
        return config_io.validate_config(schema, config)
    return config_io.load_config(schema, config)
