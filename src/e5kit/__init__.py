"""e5kit: E5-style text embeddings, from raw text pairs to a served model.

Each stage's function and config can be imported from here; they load on first use (PEP 562), so
``import e5kit`` (and ``e5kit --help``) does not import torch, transformers or numpy:

    >>> import e5kit
    >>> config = e5kit.load_config(e5kit.PretrainConfig, "pretrain", ["max_steps=10"])  # doctest: +SKIP
    >>> final = e5kit.pretrain(config)                                                   # doctest: +SKIP
    >>> encoder = e5kit.Encoder.load(final)                                              # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: Public name -> the module that defines it, one group per stage.
_EXPORTS = {
    # embedding and configs
    "Encoder": "e5kit.encoder",
    "load_config": "e5kit.config",
    "ConfigError": "e5kit.config",
    # curation and the consistency filter
    "curate": "e5kit.data.curation",
    "CurateConfig": "e5kit.data.curation",
    "consistency_filter": "e5kit.data.consistency",
    "ConsistencyConfig": "e5kit.data.consistency",
    # pre-training
    "pretrain": "e5kit.training.trainer",
    "PretrainConfig": "e5kit.training.config",
    # fine-tuning: hard negatives, teacher scores, the fine-tuning run
    "mine_hard_negatives": "e5kit.data.mining",
    "MiningConfig": "e5kit.data.mining",
    "load_teacher": "e5kit.data.teacher",
    "score_file": "e5kit.data.teacher",
    "finetune": "e5kit.training.finetune",
    "FinetuneConfig": "e5kit.training.finetune",
    # evaluation
    "run_task": "e5kit.evaluation.runner",
    "write_report": "e5kit.evaluation.report",
    "RetrievalConfig": "e5kit.evaluation.config",
    "STSConfig": "e5kit.evaluation.config",
    "ClassificationConfig": "e5kit.evaluation.config",
    "ClusteringConfig": "e5kit.evaluation.config",
    "PairClassificationConfig": "e5kit.evaluation.config",
    "RerankingConfig": "e5kit.evaluation.config",
    # export, index, serving
    "export_onnx": "e5kit.export.onnx",
    "export_openvino": "e5kit.export.openvino",
    "VectorIndex": "e5kit.serving.index",
    "IndexSettings": "e5kit.serving.index",
    "create_app": "e5kit.serving.app",
    "ServeConfig": "e5kit.serving.config",
    # the whole chain
    "Quickstart": "e5kit.pipeline",
    "QuickstartConfig": "e5kit.pipeline",
}

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from e5kit.config import ConfigError, load_config
    from e5kit.data.consistency import ConsistencyConfig, consistency_filter
    from e5kit.data.curation import CurateConfig, curate
    from e5kit.data.mining import MiningConfig, mine_hard_negatives
    from e5kit.data.teacher import load_teacher, score_file
    from e5kit.encoder import Encoder
    from e5kit.evaluation.config import (
        ClassificationConfig,
        ClusteringConfig,
        PairClassificationConfig,
        RerankingConfig,
        RetrievalConfig,
        STSConfig,
    )
    from e5kit.evaluation.report import write_report
    from e5kit.evaluation.runner import run_task
    from e5kit.export.onnx import export_onnx
    from e5kit.export.openvino import export_openvino
    from e5kit.pipeline import Quickstart, QuickstartConfig
    from e5kit.serving.app import create_app
    from e5kit.serving.config import ServeConfig
    from e5kit.serving.index import IndexSettings, VectorIndex
    from e5kit.training.config import PretrainConfig
    from e5kit.training.finetune import FinetuneConfig, finetune
    from e5kit.training.trainer import pretrain

    __version__: str


def __getattr__(name: str):
    """Import an exported name's module on first use (``__version__`` reads the installed metadata)."""
    if name == "__version__":
        from e5kit.version import package_version

        value = package_version()
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'e5kit' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = ["__version__", *_EXPORTS]
