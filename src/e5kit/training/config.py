"""The pre-training stage's configuration: one pydantic model, loadable from YAML, overridable per field.

Example:
    >>> config = load_config("configs/pretrain.yaml", ["max_steps=10", "data.paths=[pairs.parquet]"])  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from e5kit import config as config_io
from e5kit.config import ConfigError
from e5kit.encoder.model_format import E5_PROMPTS
from e5kit.training.metrics import require_tensorboard

__all__ = ["ConfigError", "DataConfig", "PretrainConfig", "coerce_config", "load_config"]


class DataConfig(BaseModel):
    """Where the training pairs come from and how sources are mixed.

    Attributes:
        paths: Pair-shard files, folders (every *.parquet, *.jsonl, *.jsonl.gz inside) or glob patterns.
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


class PretrainConfig(BaseModel):
    """Contrastive pre-training (E5 section 2): InfoNCE with in-batch negatives, GradCache, DDP.

    Attributes:
        init_model: Model to start from: a directory, a bundled name or a Hub id.
        prompts: Role prefixes given to the model (E5's "query: "/"passage: " by default).
        data: Pair shards and source mixing.
        output_dir: Run folder: checkpoints/, metrics.jsonl, loss_curve.png, final/.
        max_steps: Optimizer steps.
        batch_size: Global pairs per optimizer step (over all processes): every query scores against
            all of them.
        chunk_size: Pairs embedded at once per process (GradCache); memory follows this, not batch_size.
        tau: Softmax temperature over the scores.
        similarity_fn_name: The score: "cosine" (E5; embeddings are L2-normalised before scoring whatever
            the start model ships, and the saved model gets a Normalize module) or "dot" (raw dot
            products; only when asked for). sentence-transformers' name for the setting.
        lr: Peak learning rate of AdamW.
        warmup_steps: Linear warm-up steps, then linear decay to 0 at max_steps.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        max_grad_norm: Gradient clipping norm; 0 disables clipping.
        query_max_length: Token limit of queries (prefix included).
        passage_max_length: Token limit of passages (prefix included).
        precision: fp32, bf16 (autocast) or fp16 (autocast + loss scaling, CUDA only).
        symmetric: Add the passage->query loss.
        mask_false_negatives: Ignore in-batch negatives whose query or passage text equals the positive's
            (same ``e5kit.io.text.normalized_text_key``: case, Unicode width and spacing do not count).
        source_homogeneous: Draw every batch from a single source.
        checkpoint_every: Steps between checkpoints; 0 writes none.
        keep_checkpoints: How many checkpoints to keep.
        seed: Seed of the model's RNG and of the data sampler.
        gradient_checkpointing: Recompute activations in backward (less memory per chunk, ~30% slower).
        device: Torch device; None picks CUDA when present.
        report_to: Where the per-step metrics go besides metrics.jsonl: [] or [tensorboard] (loss, lr,
            grad_norm, pairs_per_s, step_s, per-source pair counts as train/<name> scalars; needs
            ``pip install 'e5kit[tensorboard]'``). Hugging Face Trainer's name for the setting.
        eval_data: BEIR folders the model is scored on (nDCG@10, Recall@100) every ``eval_every`` steps
            and after the last one, logged as ``{"step": n, "eval": {"<folder name>/<metric>": value}}``
            in metrics.jsonl (TensorBoard: ``eval/<folder name>/<metric>``). The scoring is e5kit.evaluation's, handed to the trainer by its caller
            (``e5kit pretrain``/``finetune``, the quickstart), so training never imports evaluation.
        eval_every: Steps between evaluations of ``eval_data``; 0 scores only after the last step.
        logging_dir: The TensorBoard folder (``tensorboard --logdir`` it); None = {output_dir}/tensorboard.
    """

    model_config = ConfigDict(extra="forbid")

    init_model: str
    prompts: dict[str, str] = Field(default_factory=lambda: dict(E5_PROMPTS))
    data: DataConfig
    output_dir: Path
    max_steps: int = Field(ge=1)
    batch_size: int = Field(default=1024, ge=2)
    chunk_size: int = Field(default=64, ge=1)
    tau: float = Field(default=0.01, gt=0)
    similarity_fn_name: Literal["cosine", "dot"] = "cosine"
    lr: float = Field(default=2e-4, gt=0)
    warmup_steps: int = Field(default=1000, ge=0)
    weight_decay: float = Field(default=0.01, ge=0)
    max_grad_norm: float = Field(default=1.0, ge=0)
    query_max_length: int = Field(default=128, ge=4)
    passage_max_length: int = Field(default=128, ge=4)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    symmetric: bool = False
    mask_false_negatives: bool = True
    source_homogeneous: bool = False
    checkpoint_every: int = Field(default=500, ge=0)
    keep_checkpoints: int = Field(default=2, ge=1)
    seed: int = 42
    gradient_checkpointing: bool = False
    device: str | None = None
    report_to: list[Literal["tensorboard"]] = Field(default_factory=list)
    logging_dir: Path | None = None
    eval_data: list[Path] = []
    eval_every: int = Field(default=0, ge=0)

    @property
    def tensorboard_dir(self) -> Path | None:
        """The TensorBoard folder, or None when ``report_to`` does not ask for TensorBoard."""
        if "tensorboard" not in self.report_to:
            return None
        return self.logging_dir or self.output_dir / "tensorboard"

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

    @model_validator(mode="before")
    @classmethod
    def _normalize_was_renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "normalize" in data:
            raise ValueError(
                "normalize was replaced by similarity_fn_name: cosine (what normalize: true meant; the default) "
                "or dot (raw dot products)"
            )
        return data

    @model_validator(mode="after")
    def _prompts_have_roles(self) -> PretrainConfig:
        missing = [role for role in ("query", "passage") if role not in self.prompts]
        if missing and self.prompts:
            raise ValueError(f"prompts: missing role(s) {', '.join(missing)} (give both, or {{}} for no prefixes)")
        return self


def load_config(
    path: str | Path | None, overrides: list[str] | None = None, schema: type[PretrainConfig] = PretrainConfig
) -> PretrainConfig:
    """Read a YAML config (optional), apply ``key=value`` overrides, and validate into ``schema``.

    Raises:
        ConfigError: on unreadable YAML (naming file and line) or an invalid field (naming it).
    """
    return config_io.load_config(schema, path, overrides)


def coerce_config(
    config: PretrainConfig | dict[str, Any] | str | Path, schema: type[PretrainConfig] = PretrainConfig
) -> PretrainConfig:
    """Accept a config object of ``schema``, a nested dict or a YAML path."""
    if isinstance(config, schema):
        return config
    if isinstance(config, dict):
        return config_io.validate_config(schema, config)
    return load_config(config, schema=schema)
