"""The pre-training stage's configuration: one pydantic model, loadable from YAML, overridable per field.

Example:
    >>> config = load_config("configs/pretrain.yaml", ["max_steps=10", "data.paths=[pairs.parquet]"])  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from e5kit.model_format import E5_PROMPTS


class ConfigError(ValueError):
    """A configuration is invalid; the message names the field (or the file and line)."""


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
        tau: Softmax temperature over cosine scores.
        lr: Peak learning rate of AdamW.
        warmup_steps: Linear warm-up steps, then linear decay to 0 at max_steps.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        max_grad_norm: Gradient clipping norm; 0 disables clipping.
        query_max_length: Token limit of queries (prefix included).
        passage_max_length: Token limit of passages (prefix included).
        precision: fp32, bf16 (autocast) or fp16 (autocast + loss scaling, CUDA only).
        symmetric: Add the passage->query loss.
        mask_false_negatives: Ignore in-batch negatives whose query or passage text equals the positive's.
        source_homogeneous: Draw every batch from a single source.
        checkpoint_every: Steps between checkpoints; 0 writes none.
        keep_checkpoints: How many checkpoints to keep.
        seed: Seed of the model's RNG and of the data sampler.
        gradient_checkpointing: Recompute activations in backward (less memory per chunk, ~30% slower).
        device: Torch device; None picks CUDA when present.
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

    @model_validator(mode="after")
    def _prompts_have_roles(self) -> PretrainConfig:
        missing = [role for role in ("query", "passage") if role not in self.prompts]
        if missing and self.prompts:
            raise ValueError(f"prompts: missing role(s) {', '.join(missing)} (give both, or {{}} for no prefixes)")
        return self


def set_dotted(tree: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.sub=value`` override to a nested dict; the value is parsed as YAML.

    Raises:
        ConfigError: when the assignment has no ``=`` or walks through a non-mapping.
    """
    key, separator, raw_value = assignment.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected key=value (e.g. max_steps=100)")
    *parents, leaf = key.strip().split(".")
    node = tree
    for depth, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {'.'.join(parents[: depth + 1])} is not a section")
        node = child
    try:
        node[leaf] = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {assignment!r}: value is not valid YAML ({error})") from error


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming the dotted field, e.g. ``data.paths: Field required``."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(config)"
        lines.append(f"{field}: {problem['msg']}")
    return "; ".join(lines)


def build_config(tree: dict[str, Any], origin: str = "config", schema: type[PretrainConfig] = PretrainConfig) -> PretrainConfig:
    """Validate a nested dict into ``schema`` (a PretrainConfig or a stage's subclass of it).

    Raises:
        ConfigError: naming each invalid or unknown field.
    """
    try:
        return schema.model_validate(tree)
    except ValidationError as error:
        stage = schema.__name__.removesuffix("Config").lower()
        raise ConfigError(f"{origin}: invalid {stage} config: {describe_validation_error(error)}") from error


def load_config(
    path: str | Path | None, overrides: list[str] | None = None, schema: type[PretrainConfig] = PretrainConfig
) -> PretrainConfig:
    """Read a YAML config (optional), apply ``key=value`` overrides, and validate into ``schema``.

    Raises:
        ConfigError: on unreadable YAML (naming file and line) or an invalid field (naming it).
    """
    tree: dict[str, Any] = {}
    origin = "command line"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{where}: invalid YAML ({getattr(error, 'problem', error)})") from error
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    for assignment in overrides or []:
        set_dotted(tree, assignment)
    return build_config(tree, origin, schema)
