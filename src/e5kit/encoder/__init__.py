"""The encoder layer: one ``Encoder`` (role prompts, input validation, length-sorted batching,
truncation counts) over a ``Backend`` that runs the forward pass: torch, ONNX Runtime or OpenVINO.

Modules:
    encoder: ``Encoder`` and ``EncodeStats``.
    backend: the ``Backend`` protocol and ``TorchBackend`` (the training path asks it for its module).
    onnx_backend: ``OnnxBackend``, the ONNX Runtime session of an ``e5kit export onnx`` folder.
    openvino_backend: ``OpenVinoBackend``, OpenVINO's CPU runtime on an ``e5kit export openvino`` folder.
    pooling: mean / cls / max pooling.
    precision: the CPU's int8/bf16 flags (one reader, for backends and benchmarks) and the "auto" precision choice.
    model_format: the sentence-transformers directory format (read and written).

Names load on first use (PEP 562), so ``e5kit.encoder.model_format`` can be read without importing
torch or transformers.

Example:
    >>> encoder = Encoder.load("path/to/model")                     # doctest: +SKIP
    >>> onnx = Encoder.load("path/to/export", backend="onnx")       # doctest: +SKIP
    >>> queries = encoder.encode_queries(["how do cells divide"])   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "Encoder": "e5kit.encoder.encoder",
    "EncodeStats": "e5kit.encoder.encoder",
    "BACKENDS": "e5kit.encoder.encoder",
    "NO_PROMPT": "e5kit.encoder.encoder",
    "ROLE_ALIASES": "e5kit.encoder.model_format",
    "TOKENIZE_BLOCK": "e5kit.encoder.encoder",
    "TOKENIZER_CALL_TEXTS": "e5kit.encoder.encoder",
    "Backend": "e5kit.encoder.backend",
    "TorchBackend": "e5kit.encoder.backend",
    "DTYPES": "e5kit.encoder.backend",
    "auto_device": "e5kit.encoder.backend",
    "resolve_device": "e5kit.encoder.backend",
    "load_transformer": "e5kit.encoder.backend",
    "OnnxBackend": "e5kit.encoder.onnx_backend",
    "OpenVinoBackend": "e5kit.encoder.openvino_backend",
    "pool": "e5kit.encoder.pooling",
}

if TYPE_CHECKING:
    from e5kit.encoder.backend import DTYPES, Backend, TorchBackend, auto_device, load_transformer, resolve_device
    from e5kit.encoder.encoder import BACKENDS, NO_PROMPT, TOKENIZE_BLOCK, TOKENIZER_CALL_TEXTS, Encoder, EncodeStats
    from e5kit.encoder.model_format import ROLE_ALIASES
    from e5kit.encoder.onnx_backend import OnnxBackend
    from e5kit.encoder.openvino_backend import OpenVinoBackend
    from e5kit.encoder.pooling import pool

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'e5kit.encoder' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
