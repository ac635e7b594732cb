"""The ONNX Runtime backend: runs the graph of an ``e5kit export onnx`` folder (CPU, inference only).

Only session code lives here; writing the graphs (export, fusion, int8 quantisation) is
``e5kit.export.onnx``, which imports the encoder, never the reverse. The file names and the
manifest (``onnx/e5kit_onnx.json``) are shared with the export through the constants below.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from e5kit.encoder import model_format
from e5kit.encoder.backend import normalize_rows
from e5kit.encoder.precision import int8_range_warning

logger = logging.getLogger(__name__)

ONNX_FOLDER = "onnx"
MANIFEST = "e5kit_onnx.json"
#: sentence-transformers' names: Optimum's default file, and the name sentence-transformers gives a
#: dynamically quantised int8 copy made with a custom (not ISA-named) quantisation config.
FP32_FILE = "model.onnx"
INT8_FILE = "model_qint8_quantized.onnx"
INPUT_NAMES = ["input_ids", "attention_mask"]
#: The token embeddings, under the name Optimum's ORTModelForFeatureExtraction reads.
TOKEN_OUTPUT = "last_hidden_state"
#: The pooled embedding e5kit's backend reads.
OUTPUT_NAME = "sentence_embedding"
#: Graph rewrites ONNX Runtime would apply at load time that make the CPU run slower (see
#: ``e5kit.export.onnx.fuse_operators``).
SLOWER_FUSIONS = ["SkipLayerNormFusion"]


class OnnxManifest(BaseModel):
    """The fields of ``onnx/e5kit_onnx.json`` that loading reads (``e5kit.export.onnx`` writes more)."""

    model_config = ConfigDict(extra="allow")
    default: str
    #: file name -> its weights' precision
    files: dict[str, Literal["fp32", "int8"]]
    pooling: str


def read_manifest(model_dir: Path) -> dict:
    """The ``onnx/e5kit_onnx.json`` of an exported model (``OnnxManifest``'s fields checked).

    Raises:
        model_format.ModelDirectoryError: the manifest is absent (with the command that makes one),
            malformed, or a field is missing or wrong (the file and field are named).
    """
    path = model_dir / ONNX_FOLDER / MANIFEST
    if not path.is_file():
        raise model_format.ModelDirectoryError(
            f"{path}: missing; {model_dir} has no e5kit ONNX export. "
            f"Create one with: e5kit export onnx --model {model_dir} --out DIR"
        )
    return model_format.read_record(path, OnnxManifest, "export again")


def session_for(path: Path, threads: int | None = None, *, runtime_graph: Path | None = None, profile: bool = False):
    """An ONNX Runtime CPU session with every graph optimisation on except ``SLOWER_FUSIONS``.

    Args:
        path: The ONNX file.
        threads: Intra-op threads (default: one per physical core).
        runtime_graph: If given, ONNX Runtime writes the graph it actually runs here (for inspection).
        profile: Record per-node timings; ``session.end_profiling()`` returns the JSON trace file.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if runtime_graph is not None:
        options.optimized_model_filepath = str(runtime_graph)
    options.enable_profiling = profile
    return onnxruntime.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=SLOWER_FUSIONS
    )


class OnnxBackend:
    """An exported graph in an ONNX Runtime session; it pools inside the graph (output ``sentence_embedding``).

    Args:
        session: ONNX Runtime session of a graph from ``e5kit.export.onnx.export_onnx``.
        config: The Hugging Face model config (embedding size, position limit).
        pooling: The pooling the graph applies (the manifest's).
        file: The ONNX file (messages, fingerprint).
        dtype: Its weights' precision, "float32" or "int8" (as the manifest lists it).
    """

    name = "onnx"
    # benchmarks/encode_backends.py on 2 AVX2 cores (all-MiniLM-L6-v2, ~119 tokens, 4 runs): batch 8 beat
    # batch 32 by 1.21-1.32x in fp32 and 1.10-1.27x in int8.
    default_batch_size = 8
    sequence_multiple = 1
    # int8, all-MiniLM-L6-v2, 2 Xeon cores: a pass of 1 text of 128 tokens 15.9 ms, of 8 98.0 ms -> 4.2 ms fixed = 46 tokens.
    forward_overhead_tokens = 48
    # The int8 graph's first pass at a new shape cost 0.8 ms more than the next on average (all-MiniLM-L6-v2,
    # 2 threads, 12 shapes, AMD EPYC Zen 5, scratch timing; OpenVINO's: 13 ms): no warm-up.
    compiles_per_shape = False

    def __init__(self, session, *, config, pooling: str, file: Path, dtype: str) -> None:
        self.session = session
        self.config = config
        self.pooling = pooling
        self.file = Path(file)
        self.dtype = dtype
        self.device = torch.device("cpu")
        self._fingerprint: str | None = None

    @classmethod
    def load(cls, root: Path, spec: model_format.ModelSpec, *, file_name: str | None = None, threads: int | None = None) -> OnnxBackend:
        """The backend of the export in ``root`` (described by ``spec``, its ``read_model_dir``).

        Args:
            file_name: An ONNX file in ``onnx/`` (default: the manifest's default, int8 when exported
                with ``--quantize int8``).
            threads: ONNX Runtime intra-op threads (default: one per physical core).

        Raises:
            model_format.ModelDirectoryError: the directory has no ONNX export or a malformed
                manifest, the graph pools differently from the directory, or the named file is not
                listed, missing or unreadable (it is named).
        """
        from transformers import AutoConfig

        manifest = read_manifest(root)
        if manifest.get("pooling") != spec.pooling:
            raise model_format.ModelDirectoryError(
                f"{root / ONNX_FOLDER / MANIFEST}: the graph pools with {manifest.get('pooling')!r} but the model "
                f"directory says {spec.pooling!r}; export again"
            )
        name = file_name or manifest["default"]
        if name not in manifest["files"]:
            raise model_format.ModelDirectoryError(
                f"{root / ONNX_FOLDER / MANIFEST}: lists no ONNX file {name!r} (it has {', '.join(sorted(manifest['files']))})"
            )
        file = root / ONNX_FOLDER / name
        if not file.is_file():
            raise model_format.ModelDirectoryError(f"{file}: no such ONNX file (the manifest lists {', '.join(manifest['files'])})")
        dtype = "int8" if manifest["files"][name] == "int8" else "float32"
        if warning := int8_range_warning(manifest.get("int8", {}) if dtype == "int8" else None, file):
            logger.warning(warning)
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidProtobuf

        try:
            session = session_for(file, threads)
        except (Fail, InvalidProtobuf) as error:  # a truncated or foreign file: not a model problem the caller can fix otherwise
            raise model_format.ModelDirectoryError(f"{file}: ONNX Runtime cannot load it ({str(error).strip().splitlines()[-1]}); export again") from error
        return cls(
            session,
            config=AutoConfig.from_pretrained(spec.transformer_dir),
            pooling=spec.pooling,
            file=file,
            dtype=dtype,
        )

    @property
    def dimension(self) -> int:
        """Embedding size."""
        return int(self.config.hidden_size)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, *, normalize: bool) -> np.ndarray:
        """(batch, seq_len) int64 ids and mask -> (batch, dim) float32 embeddings."""
        (embeddings,) = self.session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask})
        embeddings = embeddings.astype(np.float32, copy=False)  # (batch, dim)
        return normalize_rows(embeddings) if normalize else embeddings

    def load_options(self) -> dict[str, str | None]:
        """``Encoder.load`` arguments for this backend in another process: this file of ``onnx/``."""
        return {"backend": self.name, "file_name": self.file.name}

    def fingerprint(self) -> str:
        """SHA-256 of the graph file's bytes (which hold the weights and the pooling), computed once.

        Prefixed with "onnx", so it can never equal a torch weights hash: an fp32 graph embeds within
        ~1e-6 of torch and an int8 one within ~1e-3, and a cache must not hand one's vectors to the other.
        """
        if self._fingerprint is None:
            self._fingerprint = model_format.files_sha256("onnx:", [self.file])
        return self._fingerprint
