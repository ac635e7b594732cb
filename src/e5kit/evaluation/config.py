"""One pydantic config per evaluation task, loadable from YAML, every field overridable.

Precedence, lowest first: field defaults, the YAML file (``--config``), command-line options,
``--set key=value`` pairs. An invalid config fails before any model is loaded, naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the field."""


class EvalConfig(BaseModel):
    """Settings every task shares."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default_factory=lambda: ["all-MiniLM-L6-v2"], min_length=1)
    data: Path
    split: str = "test"
    batch_size: int = Field(32, ge=1)
    max_length: int | None = Field(None, ge=8)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str | None = None
    query_role: str | None = None
    passage_role: str | None = None
    results_dir: Path = Path("results")
    cache: bool = True
    cache_dir: Path | None = None

    @model_validator(mode="after")
    def _bm25_only_for_retrieval(self):
        if "bm25" in self.models and not isinstance(self, RetrievalConfig):
            raise ValueError("models: 'bm25' is a retrieval baseline; this task needs embedding models")
        return self


class RetrievalConfig(EvalConfig):
    top_k: int = Field(100, ge=1)


class STSConfig(EvalConfig):
    pass


class PairClassificationConfig(EvalConfig):
    pass


class RerankingConfig(EvalConfig):
    pass


class ClassificationConfig(EvalConfig):
    train_split: str = "train"
    samples_per_label: int | None = Field(8, ge=1)
    experiments: int = Field(10, ge=1)
    seed: int = 42
    max_iter: int = Field(100, ge=1)
    normalize: bool = False


class ClusteringConfig(EvalConfig):
    text_field: str = "text"
    label_field: str = "label"
    seeds: int = Field(10, ge=1)
    kmeans_batch_size: int = Field(500, ge=1)


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``["key=value", ...]`` -> dict; values are parsed as YAML (numbers, booleans, lists)."""
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value")
        overrides[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return overrides


def load_config(
    config_class: type[EvalConfig], path: Path | None = None, options: dict | None = None, overrides: list[str] = ()
) -> EvalConfig:
    """Merge defaults, a YAML file, command-line ``options`` (None = not given) and ``--set`` pairs.

    Raises:
        ConfigError: unreadable YAML, an unknown field, or an invalid value, naming the field.
    """
    values: dict[str, object] = {}
    source = "command line"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError as error:
            raise ConfigError(f"{path}: no such config file") from error
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML: {error}") from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of field: value")
        values.update(loaded)
    values.update({key: value for key, value in (options or {}).items() if value is not None and value != []})
    values.update(parse_overrides(list(overrides)))
    try:
        return config_class.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"field {'.'.join(map(str, e['loc'])) or '(config)'}: {e['msg']}" for e in error.errors()
        )
        raise ConfigError(f"{source}: invalid {config_class.__name__}: {problems}") from error
