"""ONNX export, operator fusion and calibrated static int8 quantisation of an Encoder.

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
``onnx/e5kit_onnx.json`` lists the files and which one ``Encoder.load(dir, backend="onnx")`` loads;
that backend (``e5kit.encoder.onnx_backend``) holds only the session code, and nothing in the
library imports this module back.

The int8 graph is static: every activation's quantisation scale was fixed at export from a
calibration sample, so a text's embedding does not depend on the other texts in its batch (dynamic
quantisation, which ONNX Runtime computes over the whole padded batch tensor, gave cosine 0.989
between a text alone and in a batch). See ``quantize_int8``.

Example:
    >>> export_onnx(Encoder.load("all-MiniLM-L6-v2"), "out/minilm", quantize="int8")  # doctest: +SKIP
    >>> encoder = Encoder.load("out/minilm", backend="onnx")                              # doctest: +SKIP
    >>> SentenceTransformer("out/minilm", backend="onnx")                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from e5kit.encoder.backend import weights_fingerprint
from e5kit.encoder.encoder import Encoder
from e5kit.encoder.model_format import BACKEND_RECORD, ModelDirectoryError
from e5kit.encoder.onnx_backend import (
    FP32_FILE,
    INPUT_NAMES,
    INT8_FILE,
    MANIFEST,
    ONNX_FOLDER,
    OUTPUT_NAME,
    TOKEN_OUTPUT,
)
from e5kit.encoder.openvino_backend import OPENVINO_FOLDER
from e5kit.encoder.pooling import pool
from e5kit.encoder.precision import int8_reduce_range
from e5kit.export.check import passage_role, verified
from e5kit.io.files import AtomicFolder

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("none", "int8")
#: SmoothQuant's migration strength (Xiao et al., 2023): the share of each activation channel's range
#: moved into the weights. On all-MiniLM-L6-v2 0.5 gave mean cosine 0.9988 to fp32, 0.7 gave 0.9985.
SMOOTHING_ALPHA = 0.5
#: Texts the activation ranges are measured on; the built-in sample has this many.
CALIBRATION_TEXTS = 256
#: Word counts of the built-in sample's windows, cycled, so that it spans query-like to passage-like lengths.
_CALIBRATION_WORDS = (8, 24, 48, 96, 160, 240)


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

    @classmethod
    def at(cls, model_dir: Path, files: dict[str, Path]) -> OnnxExport:
        """The export in ``model_dir`` of ``files`` (precision -> a file of that name), int8 the default when written."""
        files = {precision: model_dir / ONNX_FOLDER / path.name for precision, path in files.items()}
        return cls(model_dir=model_dir, files=files, default=files.get("int8", files["fp32"]))


#: The folders each backend's export writes inside a model folder.
BACKEND_FOLDERS = (ONNX_FOLDER, OPENVINO_FOLDER)


def keep_other_backends(root: Path, staged: Path, written: str) -> list[str]:
    """Copy into ``staged`` (a new export's staging folder, model files written) the other backends'
    folders of the model already in ``root`` when both embed alike (``weights_fingerprint``: weights
    and pooling), so exporting one backend into a folder never deletes another's; returns the folders copied.

    A model of other weights or pooling is replaced whole (its graphs embed another model), with a
    warning naming what goes. ``e5kit export auto``'s record is never kept, and a warning says so: it
    measured files this export replaces.
    """
    if not (root / "config.json").is_file():  # no model here: AtomicFolder's own rule decides what may be replaced
        return []
    others = [name for name in BACKEND_FOLDERS if name != written and (root / name).is_dir()]
    record = [BACKEND_RECORD] if (root / BACKEND_RECORD).is_file() else []
    try:
        same = weights_fingerprint(root) == weights_fingerprint(staged)
    except ModelDirectoryError:  # a damaged model folder: nothing in it can be trusted to match
        same = False
    if not same:
        goes = ", ".join([f"{name}/" for name in others] + record)
        logger.warning("%s holds a model of other weights or pooling, which this export replaces%s", root, f" with its {goes}" if goes else "")
        return []
    for name in others:
        shutil.copytree(root / name, staged / name)
    if record:
        logger.warning("%s: %s is not kept (it measured the %s/ this export replaces); run e5kit export auto again to measure", root, BACKEND_RECORD, written)
    return others


def check_source(encoder: Encoder) -> None:
    """Refuse an Encoder that is not torch float32: the exports trace its module as float32 in place,
    which would change a bfloat16 Encoder the caller keeps using (every export's rule).

    Raises:
        ValueError: naming the backend and precision it runs.
    """
    if encoder.backend.name != "torch" or encoder.dtype != "float32":
        raise ValueError(f"export needs a torch float32 Encoder (this one runs {encoder.backend.name} {encoder.dtype})")


def export_onnx(
    encoder: Encoder,
    out_dir: str | Path,
    *,
    quantize: str = "int8",
    calibration: Sequence[str] | None = None,
    calibration_source: str | None = None,
    reduce_range: bool | None = None,
    opset: int = 18,
    model_card: str | None = None,
    verify: Callable[[OnnxExport], list[str]] | None = None,
) -> OnnxExport:
    """Save ``encoder`` as a sentence-transformers directory plus ONNX fp32 (and int8) graphs.

    Args:
        encoder: A torch-backend Encoder.
        out_dir: Output folder (created; an existing model folder, or an empty one, is replaced); the
            ONNX files go to ``out_dir/onnx/``.
        quantize: "int8" adds a statically quantised copy (``quantize_int8``) and makes it the
            default; "none" keeps fp32 only.
        calibration: Texts of the model's domain to fix the int8 activation ranges on (embedded in
            the passage role when the model has one); None: ``builtin_calibration_texts()``.
        calibration_source: What ``calibration`` is, for the manifest (e.g. its file name).
        reduce_range: int8 weights in 7 bits, for CPUs without VNNI, where 8-bit ones saturate
            (``e5kit.encoder.precision.int8_reduce_range``); None: whether this CPU lacks VNNI.
        opset: ONNX opset version.
        model_card: README.md of the export (the source model's card: the weights are the same); None
            writes e5kit's card (``Encoder.save``).
        verify: Called with the export while it is still staged (its ``model_dir`` a temporary folder);
            the failures it returns abort the export (``e5kit.export.check.verified``).

    Raises:
        ValueError: an unknown ``quantize``, an empty ``calibration``, or an Encoder that is not torch float32.
        e5kit.export.check.ExportCheckError: ``verify`` returned failures; ``out_dir`` is left as it was.
    """
    check_source(encoder)
    root = Path(out_dir)
    with AtomicFolder(root, replaces="config.json") as staged:  # a killed export leaves no model folder without its graphs
        encoder.write_model_files(staged.temporary, model_card, name=root.resolve().name)
        keep_other_backends(root, staged.temporary, ONNX_FOLDER)
        files = write_onnx(encoder, staged.temporary / ONNX_FOLDER, quantize, opset, calibration, calibration_source, reduce_range)
        verified(OnnxExport.at(staged.temporary, files), verify)
    return OnnxExport.at(root, files)


def write_onnx(
    encoder: Encoder,
    folder: Path,
    quantize: str,
    opset: int,
    calibration: Sequence[str] | None,
    calibration_source: str | None,
    reduce_range: bool | None = None,
) -> dict[str, Path]:
    """The ONNX graphs and their manifest of ``export_onnx`` in ``folder`` (created); returns precision -> file.

    Raises:
        ValueError: as ``export_onnx``, before anything is written.
    """
    calibration, calibration_source = calibration_sample(quantize, calibration, calibration_source)
    folder.mkdir()
    files = {"fp32": folder / FP32_FILE}
    export_fp32_graph(encoder, files["fp32"], opset)
    fuse_operators(files["fp32"], encoder.model.config)
    int8 = {}
    if quantize == "int8":
        files["int8"] = folder / INT8_FILE
        reduce_range = int8_reduce_range() if reduce_range is None else reduce_range
        quantize_int8(files["fp32"], files["int8"], calibration_feeds(encoder, calibration), reduce_range=reduce_range)
        int8 = {
            "activations": "static: per-tensor uint8 ranges fixed at export (min/max over the calibration texts)",
            **int8_weights(reduce_range),
            "smoothing_alpha": SMOOTHING_ALPHA,
            "calibration": {"source": calibration_source or "texts given to export_onnx", "texts": len(calibration)},
            "batch_independent": True,
        }
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
        **({"int8": int8} if int8 else {}),
        "opset": opset,
        "torch": torch.__version__,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return files


def export_fp32_graph(encoder: Encoder, path: Path, opset: int) -> None:
    """Trace ``encoder``'s torch model with its pooling into the unfused fp32 ONNX graph ``path``
    (inputs ``INPUT_NAMES``, outputs ``last_hidden_state`` and ``sentence_embedding``, batch and
    sequence dynamic); what ``fuse_operators`` and ``e5kit.export.openvino`` start from."""
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
    is also why ``e5kit.encoder.onnx_backend.session_for`` keeps ONNX Runtime from fusing them at load time.
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


def calibration_sample(quantize: str, calibration: Sequence[str] | None, source: str | None) -> tuple[Sequence[str], str | None]:
    """The calibration texts and their source for an export's ``quantize`` ("none" or "int8"):
    ``builtin_calibration_texts()`` when ``calibration`` is None.

    Raises:
        ValueError: an unknown ``quantize``, or int8 with an empty ``calibration``.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    if calibration is None:
        return builtin_calibration_texts(), "built-in: Python language reference (pydoc topics)"
    if quantize == "int8" and not calibration:
        raise ValueError("int8 export needs at least one calibration text")
    return calibration, source


def builtin_calibration_texts(count: int = CALIBRATION_TEXTS) -> list[str]:
    """``count`` English prose windows of 8 to 240 words from the Python language reference (offline, stdlib).

    The export's fidelity check embeds module docstrings (``e5kit export onnx``), so the two samples
    do not overlap. A model of another domain is better calibrated on its own texts (``calibration=``).
    """
    from e5kit.data.readers.pydoc import iter_topic_docs

    texts: list[str] = []
    for record in iter_topic_docs():
        words = record.text.split()
        start = 0
        while start < len(words) - 4 and len(texts) < count:
            size = _CALIBRATION_WORDS[len(texts) % len(_CALIBRATION_WORDS)]
            texts.append(" ".join(words[start : start + size]))
            start += size
    return texts


def calibration_feeds(encoder: Encoder, texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """One unpadded ONNX input per text (prefixed for the passage role when the model has one, truncated).

    Unpadded, so that padding positions do not widen the measured ranges.
    """
    feeds = []
    for ids in encoder.token_ids(encoder.prepare(texts, passage_role(encoder))):
        input_ids, attention_mask = encoder.pad([ids])  # (1, len(ids)) each
        feeds.append({"input_ids": input_ids, "attention_mask": attention_mask})
    return feeds


def int8_weights(reduce_range: bool) -> dict:
    """The manifest's record of int8 weights, which loaders check against their CPU (``int8_range_warning``)."""
    bits = "7-bit range (reduce_range), for CPUs without VNNI" if reduce_range else "8-bit range, for CPUs with VNNI or AMX"
    return {"weights": f"int8, per output channel, {bits}", "reduce_range": reduce_range}


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: Iterable[dict[str, np.ndarray]], *, reduce_range: bool = False) -> None:
    """Static int8: int8 weights and activations whose scales were fixed on ``calibration``.

    Every MatMul with a constant weight and every fused Attention (its Q/K/V projection) is quantised,
    except the feed-forward down-projections (the MatMuls fed by GELU), which stay fp32 with the
    layer norms, softmax and GELU. Three steps:

    1. SmoothQuant: the input of each quantised node is divided per channel by
       ``s = max|x|^alpha / max|w|^(1 - alpha)`` (a Mul node) and the weight's rows multiplied by it,
       which computes the same in fp32. BERT's layer-norm outputs carry a few channels ~10-100x larger
       than the rest; one per-tensor scale must cover them and rounds the others to a few levels.
    2. ONNX Runtime's ``quantize_dynamic`` quantises the weights (int8, per output channel) and puts a
       DynamicQuantizeLinear before each quantised node, for the same integer kernels (MatMulInteger,
       QAttention) as dynamic int8.
    3. Each DynamicQuantizeLinear, which takes its scale from the min and max of the whole batch
       tensor (so a text's vector depended on its neighbours and on padding), becomes a
       QuantizeLinear whose uint8 scale and zero point are constants from the min and max over the
       calibration texts.

    Why the down-projections stay fp32: GELU's output has rare tokens with values far beyond the rest
    (not channels, so smoothing cannot move them), and a fixed scale wide enough for them leaves the
    other tokens a few levels; dynamic int8 hid this by rescaling every batch. On all-MiniLM-L6-v2
    (128 SciFact passages, calibrated on the built-in sample) the mean cosine to fp32 was 0.9845 with
    them quantised, 0.9960 with only layers 0-1's left fp32, 0.9992 with all left fp32 (dynamic int8:
    0.9951). Percentile and mean-of-batch ranges did not help (0.9844, 0.9853).

    ``quantize_static`` was tried first (QDQ; MinMax, Percentile, Entropy; per-tensor and per-channel):
    ONNX Runtime 1.32 runs most of its QDQ MatMuls as MatMulNBits on fp32 activations, at half the
    speed of these kernels, and its static path cannot quantise the fused Attention.

    Args:
        fp32_path: A graph from ``fuse_operators``.
        int8_path: Where the int8 graph is written.
        calibration: ONNX inputs (``input_ids``, ``attention_mask``: (batch, sequence) int64); see
            ``calibration_feeds``.
        reduce_range: Weights in 7 bits instead of 8, so that CPUs without VNNI do not saturate
            (``e5kit.encoder.precision.int8_reduce_range``).

    Raises:
        ValueError: ``calibration`` is empty.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_path))
    quantised = {node.name for node in _quantisable(model)}
    kept_fp32 = [node.name for node in model.graph.node if node.op_type in ("MatMul", "Attention") and node.name not in quantised]
    ranges = _channel_ranges(model, calibration)
    tensor_ranges = _smooth(model, ranges)
    # The advice to run ONNX Runtime's pre-processing first is for raw exports; fuse_operators already
    # optimised this graph, so the warning would only be noise in `e5kit export`.
    advice = _DropRecords("pre-processing before quantization")
    logging.getLogger().addFilter(advice)
    try:
        with tempfile.TemporaryDirectory(prefix="e5kit-int8-") as scratch:
            smoothed = Path(scratch) / "smoothed.onnx"
            onnx.save(model, str(smoothed))
            quantize_dynamic(
                smoothed,
                int8_path,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=reduce_range,
                op_types_to_quantize=["MatMul", "Attention"],
                nodes_to_exclude=kept_fp32,
                # Shape inference cannot type the outputs of ONNX Runtime's contrib ops (Attention); they are float.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    finally:
        logging.getLogger().removeFilter(advice)
    quantized = onnx.load(str(int8_path))
    _fix_activation_scales(quantized, tensor_ranges)
    onnx.save(quantized, str(int8_path))


#: Producers of the feed-forward down-projection's input, which int8 leaves in fp32 (see quantize_int8).
_GELU_OPS = ("Gelu", "BiasGelu", "FastGelu")


def _quantisable(model) -> list:
    """The nodes int8 quantises: MatMul with a constant weight and fused Attention, except MatMuls fed by a GELU."""
    constants = {initializer.name for initializer in model.graph.initializer}
    gelu_outputs = {output for node in model.graph.node if node.op_type in _GELU_OPS for output in node.output}
    return [
        node
        for node in model.graph.node
        if node.op_type in ("MatMul", "Attention") and node.input[1] in constants and node.input[0] not in gelu_outputs
    ]


def _channel_ranges(model, calibration: Iterable[dict[str, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Input tensor of each quantisable node -> per-text, per-channel (min, max), each (texts, channels)."""
    import onnx
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = list(dict.fromkeys(node.input[0] for node in _quantisable(model)))
    known_outputs = {output.name for output in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names if name not in known_outputs)
    session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    lows: dict[str, list[np.ndarray]] = {name: [] for name in names}
    highs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for feed in calibration:
        for name, value in zip(names, session.run(names, feed)):
            rows = value.reshape(-1, value.shape[-1])  # (tokens, channels)
            lows[name].append(rows.min(axis=0))
            highs[name].append(rows.max(axis=0))
    if not names or not lows[names[0]]:
        raise ValueError("int8 calibration got no inputs")
    return {name: (np.stack(lows[name]), np.stack(highs[name])) for name in names}


def _smooth(model, ranges: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """Apply SmoothQuant to ``model`` in place; returns each new Mul output -> its (min, max) over the calibration."""
    from onnx import helper, numpy_helper

    weights = {initializer.name: initializer for initializer in model.graph.initializer}
    tensor_ranges = {}
    for node in _quantisable(model):
        low, high = ranges[node.input[0]]  # (texts, channels) each
        weight = numpy_helper.to_array(weights[node.input[1]])  # (in_channels, out_channels)
        activation_max = np.maximum(np.maximum(-low, high).max(axis=0), 1e-5)
        scale = activation_max**SMOOTHING_ALPHA / np.maximum(np.abs(weight).max(axis=1), 1e-5) ** (1 - SMOOTHING_ALPHA)  # (in_channels,)
        # A weight shared by two nodes would be scaled twice; exported BERT graphs have none, so say so if one appears.
        if sum(node.input[1] in other.input for other in model.graph.node) > 1:
            raise ValueError(f"{node.input[1]}: weight shared by several nodes; cannot smooth it")
        weights[node.input[1]].CopyFrom(numpy_helper.from_array((weight * scale[:, None]).astype(np.float32), node.input[1]))
        inverse = f"{node.name}_smooth_inverse_scale"
        model.graph.initializer.append(numpy_helper.from_array((1 / scale).astype(np.float32), inverse))
        smoothed = f"{node.input[0]}_smoothed_for_{node.name}"
        model.graph.node.insert(list(model.graph.node).index(node), helper.make_node("Mul", [node.input[0], inverse], [smoothed], name=f"{node.name}_smooth"))
        node.input[0] = smoothed
        tensor_ranges[smoothed] = (float((low / scale).min()), float((high / scale).max()))
    return tensor_ranges


def _fix_activation_scales(model, tensor_ranges: dict[str, tuple[float, float]]) -> None:
    """Replace each DynamicQuantizeLinear in ``model`` by a QuantizeLinear with the calibrated constant uint8 scale."""
    from onnx import helper, numpy_helper

    for index, node in enumerate(list(model.graph.node)):
        if node.op_type != "DynamicQuantizeLinear":
            continue
        if node.input[0] not in tensor_ranges:
            raise ValueError(f"{node.input[0]}: quantised at run time but not calibrated")
        low, high = tensor_ranges[node.input[0]]
        # DynamicQuantizeLinear's own arithmetic (range widened to include 0), on the calibration range.
        low, high = min(low, 0.0), max(high, 0.0)
        scale = max((high - low) / 255, 1e-12)
        zero_point = int(np.clip(round(-low / scale), 0, 255))
        quantized, scale_name, zero_point_name = node.output
        model.graph.initializer.extend([
            numpy_helper.from_array(np.array(scale, dtype=np.float32), scale_name),
            numpy_helper.from_array(np.array(zero_point, dtype=np.uint8), zero_point_name),
        ])
        model.graph.node.remove(node)
        model.graph.node.insert(index, helper.make_node("QuantizeLinear", [node.input[0], scale_name, zero_point_name], [quantized], name=node.name))


class _DropRecords(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()
