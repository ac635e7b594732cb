"""The OpenVINO backend: runs an ``e5kit export openvino`` folder, or the fp32 graph of an
``e5kit export onnx`` folder, with OpenVINO's CPU runtime (``pip install 'e5kit[openvino]'``).

Only runtime code lives here; writing the IR is ``e5kit.export.openvino``, which imports the
encoder, never the reverse. The folder, file and manifest names are shared with the export through
the constants below. OpenVINO's CPU plugin runs bf16 by default on CPUs with AVX512_BF16 or AMX, so
every compile states its precision (``INFERENCE_PRECISION_HINT``): the one the caller or the export's
manifest asks for, never the plugin's own choice.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from e5kit.encoder import model_format, onnx_backend
from e5kit.encoder.backend import normalize_rows
from e5kit.encoder.precision import (
    MIN_BF16_COSINE,
    MIN_INT8_COSINE,
    PrecisionChoice,
    choose_precision,
    has_bf16,
    int8_range_warning,
    measure_precisions,
    probe_inputs,
)

logger = logging.getLogger(__name__)

OPENVINO_FOLDER = "openvino"
#: optimum-intel's file name, the one sentence-transformers' ``backend="openvino"`` looks for.
XML_FILE = "openvino_model.xml"
#: The statically quantised IR, under the name sentence-transformers gives its own
#: (``export_static_quantized_openvino_model``), so ``model_kwargs={"file_name": ...}`` loads it there too.
INT8_XML_FILE = "openvino_model_qint8_quantized.xml"
#: The optional static int8 IR with every MatMul quantised (``e5kit export openvino --full-int8``): faster
#: where float matrix work is slow (no AMX), less faithful; never the default.
INT8_FULL_XML_FILE = "openvino_model_qint8_full.xml"
MANIFEST = "e5kit_openvino.json"
#: The manifest's section describing each int8 IR's quantisation.
INT8_SECTIONS = {INT8_XML_FILE: "int8", INT8_FULL_XML_FILE: "int8_full"}
#: e5kit's precisions -> OpenVINO's ``INFERENCE_PRECISION_HINT`` values.
HINTS = {"float32": "f32", "bfloat16": "bf16"}


class OpenVinoManifest(BaseModel):
    """The fields of ``openvino/e5kit_openvino.json`` that loading reads (``e5kit.export.openvino`` writes more)."""

    model_config = ConfigDict(extra="allow")
    pooling: str
    #: IR file name -> its weights' precision; None in exports of e5kit 0.x, which had one fp32 IR, ``file``.
    files: dict[str, Literal["fp32", "int8"]] | None = None
    file: str = XML_FILE
    default: str | None = None
    #: The inference precision the export chose.
    precision: Literal["float32", "bfloat16"] = "float32"


def read_manifest(model_dir: Path) -> dict | None:
    """The ``openvino/e5kit_openvino.json`` of an exported model (``OpenVinoManifest``'s fields
    checked), or None when the folder has no OpenVINO export.

    Raises:
        model_format.ModelDirectoryError: the manifest is malformed or a field is missing or wrong
            (the file and field are named).
    """
    path = model_dir / OPENVINO_FOLDER / MANIFEST
    return model_format.read_record(path, OpenVinoManifest, "export again") if path.is_file() else None


class OpenVinoBackend:
    """A model compiled by OpenVINO for the CPU; it pools inside the graph (output ``sentence_embedding``).

    Args:
        compiled: An ``openvino.CompiledModel`` of a graph with inputs ``input_ids`` and
            ``attention_mask`` ((batch, seq_len) int64) and output ``sentence_embedding`` (batch, dim).
        config: The Hugging Face model config (embedding size, position limit).
        pooling: The pooling the graph applies.
        files: The model's files (IR .xml and .bin, or one .onnx): messages and fingerprint.
        precision: The inference precision it was compiled with, "float32" or "bfloat16" (for an int8
            IR, that of the operations left unquantised).
        weights: "int8" for a statically quantised IR, else "float32".
        precision_choice: How "auto" chose ``precision``, when it did.

    Attributes:
        dtype: "int8" for a quantised IR, else ``precision``: what ``Encoder.dtype`` reports.
    """

    name = "openvino"
    # ONNX Runtime's (measured there by benchmarks/encode_backends.py, not yet for OpenVINO): small batches of
    # length-sorted texts carry little padding.
    default_batch_size = 8
    # OpenVINO's CPU plugin runs attention as one generated kernel (its "Subgraph" node, a third of
    # all-MiniLM-L6-v2's time at 119 tokens), which takes another path on lengths that are not a multiple
    # of 16. That path is slower (int8 IR at bf16, 20 interleaved rounds, Xeon with AMX: 1.05x the texts/s
    # at 32 x 128 tokens as at 32 x 119), and it makes a text's vector depend on its batch: the int8 IR at
    # float32 on a Xeon without AMX, 64 prose texts of mixed lengths alone vs in batches of 32, least
    # cosine 0.99954 padded to the longest text, 1.000000 padded to multiples of 16 (0.99839 and 1.000000
    # with the down-projections int8 too). Short texts pay for it (9 -> 16 tokens cost 23%).
    sequence_multiple = 16
    # int8 IR at bf16, all-MiniLM-L6-v2, 2 Xeon cores: a pass of 1 text of 128 tokens 10.9 ms, of 8 55.7 ms -> 4.5 ms fixed = 90 tokens.
    forward_overhead_tokens = 96
    # Its first pass at each new (batch, seq_len) shape builds kernels for that shape: full int8 IR at bf16,
    # all-MiniLM-L6-v2, 2 threads, scratch timings: on an AMD EPYC Zen 5 the first pass took 13 ms more than
    # the second on average over 512 shapes (8 texts x 128 tokens: 41.9 then 29.8 ms), on a Zen 4 25-60 ms
    # more (5 x 128: 111 then 48 ms). A server's p99 pays that until it has met every shape once.
    compiles_per_shape = True

    def __init__(
        self, compiled, *, config, pooling: str, files: list[Path], precision: str, weights: str = "float32", precision_choice: PrecisionChoice | None = None
    ) -> None:
        self.compiled = compiled
        self.config = config
        self.pooling = pooling
        self.files = [Path(file) for file in files]
        self.file = self.files[0]
        self.precision = precision
        self.dtype = "int8" if weights == "int8" else precision
        self.precision_choice = precision_choice
        self.device = torch.device("cpu")
        self._fingerprint: str | None = None

    @classmethod
    def load(
        cls, root: Path, spec: model_format.ModelSpec, *, file_name: str | None = None, dtype: str | None = None, threads: int | None = None
    ) -> OpenVinoBackend:
        """The backend of the OpenVINO export in ``root`` (``openvino/``), else of its ONNX export's fp32 graph.

        Args:
            root: A model directory (``spec`` is its ``read_model_dir``).
            file_name: An IR in ``openvino/`` (default: the export's default, the int8 IR when
                exported with ``--quantize int8``).
            dtype: The inference precision (of the operations an int8 IR leaves unquantised): "float32", "bfloat16", "auto" (``e5kit.encoder.precision.choose_precision``, timed
                now on this CPU), or None: the export's recorded choice, float32 where this CPU has no
                bf16 instructions, and float32 for an ONNX folder.
            threads: OpenVINO inference threads (default: OpenVINO's, one per physical core).

        Raises:
            model_format.ModelDirectoryError: the directory has neither export, its manifest is
                malformed, ``file_name`` is not one of its IRs, an IR is missing or unreadable, or its
                graph pools differently from the directory (the file is named).
            ValueError: an unknown ``dtype``.
            ImportError: the ``openvino`` package is not installed (the message says how to install it).
        """
        if dtype not in (None, "auto", *HINTS):
            raise ValueError(f"dtype for the openvino backend must be one of {', '.join(HINTS)}, auto, got {dtype!r}")
        try:
            import openvino
        except ImportError as error:
            raise ImportError("the openvino backend needs OpenVINO's runtime: pip install 'e5kit[openvino]'") from error
        from transformers import AutoConfig

        files, manifest, weights = _model_files(root, spec, file_name)
        if weights == "int8" and (warning := int8_range_warning(manifest.get(INT8_SECTIONS.get(files[0].name, "int8"), {}), files[0])):
            logger.warning(warning)
        try:
            model = openvino.Core().read_model(str(files[0]))
        except RuntimeError as error:  # a truncated or foreign .bin or .xml: OpenVINO's message names no file
            raise model_format.ModelDirectoryError(f"{files[0]}: OpenVINO cannot read it ({str(error).strip().splitlines()[-1]}); export again") from error
        config = AutoConfig.from_pretrained(spec.transformer_dir)
        choice = None
        if dtype == "auto":
            choice = auto_precision(model, config, threads, weights=weights)
            logger.info("%s: auto precision %s (%s)", files[0], choice.precision, choice.reason)
            dtype = choice.precision
        elif dtype is None:
            dtype = (manifest or {}).get("precision", "float32")
            if dtype == "bfloat16" and not has_bf16():
                logger.info("%s: exported for bfloat16, but this CPU has no bf16 instructions; running float32", files[0])
                dtype = "float32"
        return cls(
            compile_model(model, dtype, threads), config=config, pooling=spec.pooling, files=files, precision=dtype, weights=weights, precision_choice=choice
        )

    @property
    def dimension(self) -> int:
        """Embedding size."""
        return int(self.config.hidden_size)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, *, normalize: bool) -> np.ndarray:
        """(batch, seq_len) int64 ids and mask -> (batch, dim) float32 embeddings."""
        embeddings = np.array(run(self.compiled, input_ids, attention_mask), dtype=np.float32)  # (batch, dim), a copy
        return normalize_rows(embeddings) if normalize else embeddings

    def load_options(self) -> dict[str, str | None]:
        """``Encoder.load`` arguments for this backend in another process: this IR (none for an ONNX
        folder's fp32 graph, the only one OpenVINO reads there) at this inference precision."""
        return {"backend": self.name, "file_name": self.file.name if self.file.suffix == ".xml" else None, "dtype": self.precision}

    def fingerprint(self) -> str:
        """SHA-256 of the inference precision and the model files' bytes (which hold the weights and the pooling), computed once.

        Prefixed with "openvino" and the precision, so neither a torch weights hash, an ONNX graph's
        hash, nor the same IR at the other precision can share a cache entry with it.
        """
        if self._fingerprint is None:
            self._fingerprint = model_format.files_sha256(f"openvino:{self.precision}:", self.files)
        return self._fingerprint


def compile_model(model, dtype: str, threads: int | None = None):
    """``model`` (an ``openvino.Model``) compiled for the CPU at inference precision ``dtype`` ("float32", "bfloat16")."""
    import openvino

    options = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    # OpenVINO pins its threads to cores by default; when another process shares a core, the pinned thread
    # cannot move and every parallel step waits for it. Beside one background process, e5kit serve at 2
    # threads served 70.1 req/s unpinned against 60.7 pinned (p99 345 vs 418 ms), and 133 vs 127 quiet
    # (benchmarks/serve_load.py --threads-sweep, its pinned* rows).
    options["ENABLE_CPU_PINNING"] = False
    return openvino.Core().compile_model(model, "CPU", {**options, "INFERENCE_PRECISION_HINT": HINTS[dtype]})


def run(compiled, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The ``sentence_embedding`` output of ``compiled`` for (batch, seq_len) int64 ids and mask: (batch, dim)."""
    # A new request per call: requests are not thread-safe, and the server may call from several threads.
    results = compiled.create_infer_request().infer({"input_ids": input_ids, "attention_mask": attention_mask})
    return results[compiled.output(onnx_backend.OUTPUT_NAME)]


def auto_precision(model, config, threads: int | None = None, *, weights: str = "float32") -> PrecisionChoice:
    """``choose_precision`` for ``model`` (an ``openvino.Model``), timed compiled at both precisions on ``probe_inputs``.

    Args:
        config: The Hugging Face config (vocabulary size and position limit of the probe).
        weights: "int8" for a quantised IR, held to ``MIN_INT8_COSINE`` instead of ``MIN_BF16_COSINE``.
    """
    probe = probe_inputs(config.vocab_size, getattr(config, "max_position_embeddings", None))

    def measure():  # called only where the CPU has bf16 instructions
        forwards = {dtype: partial(run, compile_model(model, dtype, threads)) for dtype in HINTS}
        return measure_precisions(forwards, *probe, sequence_multiple=OpenVinoBackend.sequence_multiple)

    return choose_precision(measure, min_cosine=MIN_INT8_COSINE if weights == "int8" else MIN_BF16_COSINE)


def _model_files(root: Path, spec: model_format.ModelSpec, file_name: str | None) -> tuple[list[Path], dict | None, str]:
    """The files OpenVINO reads for ``root`` (IR .xml then .bin, or the ONNX fp32 graph), the OpenVINO
    manifest if any, and the weights' precision ("int8" or "float32")."""
    manifest = read_manifest(root)
    weights = "float32"
    if manifest is not None:
        where = root / OPENVINO_FOLDER / MANIFEST
        # "file": exports of e5kit 0.x before int8 IRs, which had one IR and no "files".
        listed = manifest["files"] or {manifest["file"]: "fp32"}
        name = file_name or manifest["default"] or manifest["file"]
        if name not in listed:
            raise model_format.ModelDirectoryError(f"{where}: lists no IR {name!r} (it has {', '.join(sorted(listed))})")
        xml, weights = root / OPENVINO_FOLDER / name, listed[name]
        files, pooling = [xml, xml.with_suffix(".bin")], manifest.get("pooling")
    elif file_name is not None:
        raise model_format.ModelDirectoryError(f"{root}: no OpenVINO export ({OPENVINO_FOLDER}/{MANIFEST}) to take {file_name!r} from")
    else:
        try:
            onnx_manifest = onnx_backend.read_manifest(root)
        except model_format.ModelDirectoryError:
            raise model_format.ModelDirectoryError(
                f"{root}: no OpenVINO export ({OPENVINO_FOLDER}/{MANIFEST}) and no ONNX export. "
                f"Create one with: e5kit export openvino --model {root} --out DIR"
            ) from None
        # OpenVINO reads the fp32 ONNX graph (ONNX Runtime's fused ops included), not the int8 one (QAttention).
        where = root / onnx_backend.ONNX_FOLDER / onnx_backend.MANIFEST
        files, pooling = [root / onnx_backend.ONNX_FOLDER / onnx_backend.FP32_FILE], onnx_manifest.get("pooling")
    if pooling != spec.pooling:
        raise model_format.ModelDirectoryError(f"{where}: the graph pools with {pooling!r} but the model directory says {spec.pooling!r}; export again")
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise model_format.ModelDirectoryError(f"{', '.join(missing)}: missing from the export listed in {where}; export again")
    return files, manifest, weights
