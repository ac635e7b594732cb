"""ONNX export, dynamic int8 quantisation, and the ONNX Runtime backend of the Encoder.

The exported graph takes ``input_ids`` and ``attention_mask`` and has two outputs: the token
embeddings ``last_hidden_state`` (batch, sequence, dim), which is what sentence-transformers' ONNX
backend (through Optimum) reads and pools itself, and the pooled ``sentence_embedding`` (batch, dim),
so that e5kit's backend pools inside ONNX Runtime. Neither output is L2-normalised: a cosine model's
consumers normalise (e5kit's encoder, and the Normalize module of the saved folder), and the manifest
says so (``"normalized": false``).

The files follow sentence-transformers' layout: ``onnx/model.onnx`` (fp32, what
``SentenceTransformer(dir, backend="onnx")`` loads) and ``onnx/model_qint8_quantized.onnx`` (int8,
``model_kwargs={"file_name": "onnx/model_qint8_quantized.onnx"}``), next to a normal
sentence-transformers directory, so prompts, pooling and the token limit travel with them.
``onnx/e5kit_onnx.json`` lists the files and which one ``Encoder.load(dir, backend="onnx")`` loads.

Example:
    >>> export_onnx(Encoder.load("all-MiniLM-L6-v2"), "out/minilm", quantize="int8")  # doctest: +SKIP
    >>> encoder = Encoder.load("out/minilm", backend="onnx")                              # doctest: +SKIP
    >>> SentenceTransformer("out/minilm", backend="onnx")                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from e5kit import model_format
from e5kit.encoder import Encoder, pool
from e5kit.hub import resolve_model_dir
from e5kit.textio import AtomicFolder

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
QUANTIZATIONS = ("none", "int8")


class _ExportedModel(torch.nn.Module):
    """The Hugging Face encoder with the Encoder's pooling as a second output, as one graph to export."""

    def __init__(self, model: torch.nn.Module, pooling: str) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (batch, seq_len, dim)
        return hidden, pool(hidden, attention_mask, self.pooling)  # and (batch, dim)


@dataclass
class OnnxExport:
    """Where ``export_onnx`` wrote things.

    Attributes:
        model_dir: The sentence-transformers directory holding ``onnx/``.
        files: Precision ("fp32", "int8") -> ONNX file.
        default: The file ``Encoder.load(model_dir, backend="onnx")`` uses.
    """

    model_dir: Path
    files: dict[str, Path]
    default: Path


def export_onnx(
    encoder: Encoder, out_dir: str | Path, *, quantize: str = "int8", opset: int = 18, model_card: str | None = None
) -> OnnxExport:
    """Save ``encoder`` as a sentence-transformers directory plus ONNX fp32 (and int8) graphs.

    Args:
        encoder: A torch-backend Encoder.
        out_dir: Output folder (created; an existing model folder, or an empty one, is replaced); the
            ONNX files go to ``out_dir/onnx/``.
        quantize: "int8" adds a dynamically quantised copy (int8 weights, activations quantised at
            run time) and makes it the default; "none" keeps fp32 only.
        opset: ONNX opset version.
        model_card: README.md of the export (the source model's card: the weights are the same); None
            writes e5kit's card (``Encoder.save``).
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    if encoder.model is None:
        raise ValueError("export needs a torch-backend Encoder (this one already runs on ONNX)")
    root = Path(out_dir)
    with AtomicFolder(root, replaces="config.json") as staged:  # a killed export leaves no model folder without its graphs
        encoder.write_model_files(staged.temporary, model_card, name=root.resolve().name)
        files = _write_graphs(encoder, staged.temporary / ONNX_FOLDER, quantize, opset)
    files = {precision: root / ONNX_FOLDER / path.name for precision, path in files.items()}
    return OnnxExport(model_dir=root, files=files, default=files.get("int8", files["fp32"]))


def _write_graphs(encoder: Encoder, folder: Path, quantize: str, opset: int) -> dict[str, Path]:
    """The ONNX graphs and their manifest in ``folder`` (created); returns precision -> file."""
    folder.mkdir()
    files = {"fp32": folder / FP32_FILE}
    _export_fp32(encoder, files["fp32"], opset)
    fuse_operators(files["fp32"], encoder.model.config)
    if quantize == "int8":
        files["int8"] = folder / INT8_FILE
        quantize_int8(files["fp32"], files["int8"])
    default = files.get("int8", files["fp32"])
    manifest = {
        "default": default.name,
        "files": {path.name: precision for precision, path in files.items()},
        "pooling": encoder.pooling,
        "inputs": INPUT_NAMES,
        "output": OUTPUT_NAME,
        "outputs": {
            TOKEN_OUTPUT: "token embeddings (batch, sequence, dim), for sentence-transformers' ONNX backend",
            OUTPUT_NAME: f"{encoder.pooling}-pooled embeddings (batch, dim), for e5kit's ONNX backend",
        },
        # Whether the graph's outputs are L2-normalised; for a cosine model, consumers normalise them.
        "normalized": False,
        "similarity_fn_name": encoder.similarity_fn_name,
        "opset": opset,
        "torch": torch.__version__,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return files


def _export_fp32(encoder: Encoder, path: Path, opset: int) -> None:
    # Traced eager attention is the MatMul/Softmax pattern that ONNX Runtime fuses into its Attention
    # kernel, which int8 then quantises too. SDPA exports to a pattern it cannot fuse, and under the
    # TorchScript exporter with transformers 5 to a graph with a wrong padding mask.
    model = encoder.model.float().cpu()
    attention = model.config._attn_implementation
    model.set_attn_implementation("eager")
    wrapper = _ExportedModel(model, encoder.pooling).eval()
    example = encoder.tokenizer(["an example text", "a second, longer example text"], padding=True, return_tensors="pt")
    dynamic = {0: "batch", 1: "sequence"}
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # Tracer notes on shape arithmetic and opset conversions; the export's cosine check is the real guard.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*", category=DeprecationWarning)
            torch.onnx.export(
                wrapper,
                (example["input_ids"], example["attention_mask"]),
                str(path),
                dynamo=False,
                input_names=INPUT_NAMES,
                output_names=[TOKEN_OUTPUT, OUTPUT_NAME],
                dynamic_axes=dict.fromkeys([*INPUT_NAMES, TOKEN_OUTPUT], dynamic) | {OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
            )
    finally:
        model.set_attn_implementation(attention)
        encoder.model.to(encoder.device)


def fuse_operators(path: Path, config) -> None:
    """Rewrite ``path`` with ONNX Runtime's transformer fusions (Attention, EmbedLayerNorm, BiasGelu).

    Quantising the fused graph gives a faster int8 model than quantising the raw export. Residual
    adds stay separate from their LayerNormalization: ONNX Runtime's CPU SkipLayerNormalization kernel
    is several times slower than Add + LayerNormalization (``benchmarks/onnx_layer_norm.py``), which
    is also why ``session_for`` keeps ONNX Runtime from fusing them at load time.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    optimized = optimize_model(
        str(path),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        optimization_options=options,
    )
    logger.info("ONNX Runtime fusions: %s", optimized.get_fused_operator_statistics())
    optimized.save_model_to_file(str(path))


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic int8 quantisation of the MatMul and fused Attention weights (activations are quantised at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The advice to run ONNX Runtime's pre-processing first is for raw exports; fuse_operators already
    # optimised this graph, so the warning would only be noise in `e5kit export`.
    advice = _DropRecords("pre-processing before quantization")
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(
            fp32_path,
            int8_path,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"],
            # Shape inference cannot type the outputs of ONNX Runtime's contrib ops (Attention); they are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.getLogger().removeFilter(advice)


class _DropRecords(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def read_manifest(model_dir: Path) -> dict:
    """The ``onnx/e5kit_onnx.json`` of an exported model, with an actionable error when absent."""
    path = model_dir / ONNX_FOLDER / MANIFEST
    if not path.is_file():
        raise model_format.ModelDirectoryError(
            f"{path}: missing; {model_dir} has no e5kit ONNX export. "
            f"Create one with: e5kit export onnx --model {model_dir} --out DIR"
        )
    return model_format.read_json(path)


# Graph rewrites ONNX Runtime would apply at load time that make the CPU run slower (see fuse_operators).
SLOWER_FUSIONS = ["SkipLayerNormFusion"]


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


class OnnxEncoder(Encoder):
    """An Encoder whose batch step runs an exported ONNX graph in ONNX Runtime (CPU, inference only).

    Everything but the forward pass (prefixes, validation, length-sorted batching, truncation
    counting, normalisation) is the Encoder's own code, so both backends embed identically.

    Args:
        session: ONNX Runtime session of a graph from ``export_onnx``.
        tokenizer, prompts, pooling, similarity_fn_name, max_length: as for ``Encoder``.
        config: The Hugging Face model config (for the embedding size and position limit).
        file: The ONNX file, for messages.
        dtype: Its weights' precision, "float32" or "int8" (as the manifest lists it).
    """

    # benchmarks/encode_backends.py on 2 AVX2 cores (all-MiniLM-L6-v2, ~119 tokens, 4 runs): batch 8 beat
    # batch 32 by 1.21-1.32x in fp32 and 1.10-1.27x in int8.
    default_batch_size = 8

    def __init__(self, session, tokenizer, *, config, prompts, pooling, similarity_fn_name, max_length, file: Path, dtype: str) -> None:
        self._set_text_options(tokenizer, prompts, pooling, similarity_fn_name, max_length, config)
        self.session = session
        self.file = file
        self.model = None
        self.device = torch.device("cpu")
        self.dtype = dtype
        self._dimension = int(config.hidden_size)

    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        prompts: dict[str, str] | None = None,
        max_length: int | None = None,
        similarity_fn_name: str | None = None,
        file_name: str | None = None,
        threads: int | None = None,
    ) -> OnnxEncoder:
        """Load an ``e5kit export onnx`` directory.

        Args:
            file_name: An ONNX file in ``onnx/`` (default: the manifest's default, int8 when exported
                with ``--quantize int8``).
            threads: ONNX Runtime intra-op threads (default: one per physical core).

        Raises:
            model_format.ModelDirectoryError: the directory has no ONNX export, or the named file is missing.
        """
        from transformers import AutoConfig, AutoTokenizer

        root = resolve_model_dir(name_or_path)
        spec = model_format.read_model_dir(root)
        manifest = read_manifest(root)
        if manifest.get("pooling") != spec.pooling:
            raise model_format.ModelDirectoryError(
                f"{root / ONNX_FOLDER / MANIFEST}: the graph pools with {manifest.get('pooling')!r} but the model "
                f"directory says {spec.pooling!r}; export again"
            )
        file = root / ONNX_FOLDER / (file_name or manifest["default"])
        if not file.is_file():
            raise model_format.ModelDirectoryError(f"{file}: no such ONNX file (the manifest lists {', '.join(manifest['files'])})")
        return cls(
            session_for(file, threads),
            AutoTokenizer.from_pretrained(spec.transformer_dir),
            config=AutoConfig.from_pretrained(spec.transformer_dir),
            prompts=spec.prompts if prompts is None else prompts,
            pooling=spec.pooling,
            similarity_fn_name=similarity_fn_name or spec.similarity_fn_name,
            max_length=max_length or spec.max_length or 512,
            file=file,
            dtype="int8" if manifest["files"].get(file.name) == "int8" else "float32",
        )

    @property
    def dimension(self) -> int:
        """Embedding size."""
        return self._dimension

    def embed(self, features):
        """Not available: ONNX Runtime computes no gradients; train with the torch backend."""
        raise TypeError(f"{self.file}: the ONNX backend is inference-only; load the model with backend='torch' to train")

    def save(self, path, model_card=None):
        """Not available: an ONNX model directory is written by ``e5kit export onnx``."""
        raise TypeError(f"{self.file}: save the torch model and export it with `e5kit export onnx` instead")

    def _embed_arrays(self, input_ids: np.ndarray, attention_mask: np.ndarray, normalize: bool) -> np.ndarray:
        (embeddings,) = self.session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask})
        embeddings = embeddings.astype(np.float32, copy=False)  # (batch, dim)
        if normalize:
            # Same epsilon as torch.nn.functional.normalize, so both backends agree on zero vectors.
            embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        return embeddings


def mean_cosine(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(mean, min) row-wise cosine similarity of two (n, dim) embedding matrices."""
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    candidate = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    cosines = (reference * candidate).sum(axis=1)  # (n,)
    return float(cosines.mean()), float(cosines.min())
