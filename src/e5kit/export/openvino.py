"""OpenVINO IR export of an Encoder, with its inference precision chosen on the exporting machine.

The IR (``openvino/openvino_model.xml`` and ``.bin``, optimum-intel's names, which
sentence-transformers' ``backend="openvino"`` loads) is converted from the same traced fp32 ONNX
graph ``e5kit export onnx`` writes (``export_fp32_graph``: inputs ``input_ids`` and
``attention_mask``, outputs ``last_hidden_state`` and the pooled ``sentence_embedding``, not
normalised), and keeps fp32 weights; ``quantize="int8"`` adds a statically quantised IR
(``openvino/openvino_model_qint8_quantized.xml``, sentence-transformers' name) made by NNCF and
loaded by default (``quantize_ir``). Precision is an OpenVINO runtime setting
(``INFERENCE_PRECISION_HINT``), not a property of the file: ``openvino/e5kit_openvino.json`` records
the one ``Encoder.load(dir, backend="openvino")`` compiles with, float32 or bfloat16, and for "auto"
the timings and fidelity it was chosen on (``e5kit.encoder.precision.choose_precision``); a CPU
without bf16 instructions runs such an export in float32. The backend is
``e5kit.encoder.openvino_backend``; nothing in the library imports this module back.

Example:
    >>> export_openvino(Encoder.load("all-MiniLM-L6-v2"), "out/minilm-ov")   # doctest: +SKIP
    >>> encoder = Encoder.load("out/minilm-ov", backend="openvino")           # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from e5kit.encoder.encoder import Encoder
from e5kit.encoder.onnx_backend import INPUT_NAMES, OUTPUT_NAME, TOKEN_OUTPUT
from e5kit.encoder.openvino_backend import (
    HINTS,
    INT8_FULL_XML_FILE,
    INT8_SECTIONS,
    INT8_XML_FILE,
    MANIFEST,
    OPENVINO_FOLDER,
    XML_FILE,
    auto_precision,
)
from e5kit.encoder.precision import PrecisionChoice, int8_reduce_range
from e5kit.export.check import verified
from e5kit.export.onnx import (
    SMOOTHING_ALPHA,
    calibration_feeds,
    calibration_sample,
    check_source,
    export_fp32_graph,
    int8_weights,
    keep_other_backends,
)
from e5kit.io.files import AtomicFolder


@dataclass
class OpenVinoExport:
    """Where ``export_openvino`` wrote things.

    Attributes:
        model_dir: The sentence-transformers directory holding ``openvino/``.
        files: "fp32", "int8" and, when written, "int8-full" -> IR .xml (its weights are the .bin beside it).
        default: The IR ``Encoder.load(model_dir, backend="openvino")`` loads (int8 when written).
        choice: The inference precision the export records, and how it was chosen.
    """

    model_dir: Path
    files: dict[str, Path]
    default: Path
    choice: PrecisionChoice

    @classmethod
    def at(cls, model_dir: Path, files: dict[str, Path], choice: PrecisionChoice) -> OpenVinoExport:
        """The export in ``model_dir`` of ``files`` (weights -> an IR of that name), int8 the default when written."""
        files = {weights: model_dir / OPENVINO_FOLDER / path.name for weights, path in files.items()}
        return cls(model_dir=model_dir, files=files, default=files.get("int8", files["fp32"]), choice=choice)


def export_openvino(
    encoder: Encoder,
    out_dir: str | Path,
    *,
    dtype: str = "auto",
    quantize: str = "int8",
    full_int8: bool = False,
    calibration: Sequence[str] | None = None,
    calibration_source: str | None = None,
    reduce_range: bool | None = None,
    opset: int = 18,
    model_card: str | None = None,
    verify: Callable[[OpenVinoExport], list[str]] | None = None,
) -> OpenVinoExport:
    """Save ``encoder`` as a sentence-transformers directory plus OpenVINO IRs and their manifest.

    Args:
        encoder: A torch-backend Encoder.
        out_dir: Output folder (created; an existing model folder, or an empty one, is replaced).
        dtype: The inference precision recorded for the backend: "float32", "bfloat16", or "auto"
            (bfloat16 where this CPU has bf16 instructions and a timing of the IR shows it faster and faithful).
        quantize: "int8" (default, as ``export_onnx``) adds a statically quantised IR (``quantize_ir``)
            and makes it the default; "none" keeps fp32 only.
        full_int8: Also write ``INT8_FULL_XML_FILE``, every MatMul int8 (``quantize_ir(full=True)``);
            needs ``quantize="int8"``.
        calibration: Texts of the model's domain for int8's activation ranges; None:
            ``e5kit.export.onnx.builtin_calibration_texts()``.
        calibration_source: What ``calibration`` is, for the manifest (e.g. its file name).
        reduce_range: int8 weights in 7 bits, for CPUs without VNNI, where 8-bit ones saturate
            (``e5kit.encoder.precision.int8_reduce_range``); None: whether this CPU lacks VNNI.
        opset: ONNX opset of the intermediate graph.
        model_card: README.md of the export; None writes e5kit's card (``Encoder.save``).
        verify: Called with the export while it is still staged (its ``model_dir`` a temporary folder);
            the failures it returns abort the export (``e5kit.export.check.verified``).

    Raises:
        ValueError: an unknown ``dtype`` or ``quantize``, an empty ``calibration``, or an Encoder that is not torch float32.
        ImportError: the openvino package (or, for int8, nncf) is not installed.
        e5kit.export.check.ExportCheckError: ``verify`` returned failures; ``out_dir`` is left as it was.
    """
    check_source(encoder)
    root = Path(out_dir)
    with AtomicFolder(root, replaces="config.json") as staged:  # a killed export leaves no model folder without its IR
        encoder.write_model_files(staged.temporary, model_card, name=root.resolve().name)
        keep_other_backends(root, staged.temporary, OPENVINO_FOLDER)
        files, choice = write_openvino(
            encoder, staged.temporary / OPENVINO_FOLDER, dtype=dtype, quantize=quantize, full_int8=full_int8,
            calibration=calibration, calibration_source=calibration_source, reduce_range=reduce_range, opset=opset,
        )
        verified(OpenVinoExport.at(staged.temporary, files, choice), verify)
    return OpenVinoExport.at(root, files, choice)


def write_openvino(
    encoder: Encoder,
    folder: Path,
    *,
    dtype: str = "auto",
    quantize: str = "int8",
    full_int8: bool = False,
    calibration: Sequence[str] | None = None,
    calibration_source: str | None = None,
    reduce_range: bool | None = None,
    opset: int = 18,
) -> tuple[dict[str, Path], PrecisionChoice]:
    """The IRs and manifest of ``export_openvino`` in ``folder`` (created); returns (``OpenVinoExport.files``, the precision choice).

    Raises:
        ValueError, ImportError: as ``export_openvino``.
    """
    import openvino

    if dtype not in (*HINTS, "auto"):
        raise ValueError(f"dtype must be one of {', '.join(HINTS)}, auto, got {dtype!r}")
    if full_int8 and quantize != "int8":
        raise ValueError(f"full_int8 needs quantize='int8', got {quantize!r}")
    calibration, calibration_source = calibration_sample(quantize, calibration, calibration_source)
    folder.mkdir()
    files = {"fp32": folder / XML_FILE}
    int8 = {}
    with tempfile.TemporaryDirectory(prefix="e5kit-openvino-") as scratch:  # the model may read weights from its graph file
        graph = Path(scratch) / "model.onnx"
        export_fp32_graph(encoder, graph, opset)
        fp32_model = model = openvino.convert_model(graph)
        # fp32 weights: OpenVINO's default fp16 compression would cost fidelity at float32.
        openvino.save_model(model, files["fp32"], compress_to_fp16=False)
        if quantize == "int8":
            feeds = calibration_feeds(encoder, calibration)
            reduce_range = int8_reduce_range() if reduce_range is None else reduce_range
            model = quantize_ir(fp32_model.clone(), feeds, reduce_range=reduce_range)
            files["int8"] = folder / INT8_XML_FILE
            openvino.save_model(model, files["int8"], compress_to_fp16=False)
            if full_int8:
                files["int8-full"] = folder / INT8_FULL_XML_FILE
                openvino.save_model(quantize_ir(fp32_model.clone(), feeds, full=True, reduce_range=reduce_range), files["int8-full"], compress_to_fp16=False)
            int8 = {
                "activations": "static: per-tensor ranges fixed at export by NNCF over the calibration texts",
                **int8_weights(reduce_range),
                "kept_float": "the feed-forward down-projections (MatMuls fed by GELU)",
                "smoothing_alpha": SMOOTHING_ALPHA,
                "calibration": {"source": calibration_source or "texts given to export_openvino", "texts": len(calibration)},
                "batch_independent": True,
            }
        # Timed on the default IR: the one the recorded precision will run.
        weights = "int8" if quantize == "int8" else "float32"
        choice = auto_precision(model, encoder.model.config, weights=weights) if dtype == "auto" else PrecisionChoice(dtype, "asked for at export")
    default = files.get("int8", files["fp32"])
    manifest = {
        "default": default.name,
        "files": {path.name: WEIGHTS[key] for key, path in files.items()},
        "precision": choice.precision,
        "precision_choice": choice.as_dict(),
        "pooling": encoder.pooling,
        "inputs": INPUT_NAMES,
        "output": OUTPUT_NAME,
        "outputs": {
            TOKEN_OUTPUT: "token embeddings (batch, sequence, dim), for sentence-transformers' OpenVINO backend",
            OUTPUT_NAME: f"{encoder.pooling}-pooled embeddings (batch, dim), for e5kit's OpenVINO backend",
        },
        # Whether the graph's outputs are L2-normalised; for a cosine model, consumers normalise them.
        "normalized": False,
        "similarity_fn_name": encoder.similarity_fn_name,
        **({INT8_SECTIONS[INT8_XML_FILE]: int8} if int8 else {}),
        **({INT8_SECTIONS[INT8_FULL_XML_FILE]: {**int8, "kept_float": "none: every MatMul int8", "smoothing_alpha": "NNCF's default"}} if "int8-full" in files else {}),
        "openvino": openvino.__version__,
        "torch": torch.__version__,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return files, choice


#: ``OpenVinoExport.files`` keys -> the weights' precision the manifest records (what the backend reads).
WEIGHTS = {"fp32": "fp32", "int8": "int8", "int8-full": "int8"}


def quantize_ir(model, calibration: Sequence[dict], *, full: bool = False, reduce_range: bool = False):
    """Static int8 of an ``openvino.Model`` with NNCF: int8 weights (per channel) and activations whose
    scales were fixed on ``calibration`` (``e5kit.export.onnx.calibration_feeds``), so a text's
    embedding does not depend on its batch.

    The same choices as the ONNX export's ``quantize_int8`` (and for the same measured reasons):
    SmoothQuant at ``SMOOTHING_ALPHA``, and the feed-forward down-projections (MatMuls fed by GELU)
    left in float. On all-MiniLM-L6-v2 (256 stdlib passages, built-in calibration) NNCF's defaults
    gave mean cosine 0.9978 to fp32 and a text's vector alone vs in a batch 0.99988; with these two
    choices 0.9991 and 0.999994.

    ``full=True`` is NNCF's defaults instead, every MatMul int8, SmoothQuant at NNCF's alpha: on a Xeon
    without AMX (int8 IR at float32) 1.45x the texts/s of the default IR at mean cosine 0.99767 to the
    fp32 IR on prose (the default's 0.99910); batch independent once lengths are padded to multiples of
    16 (``OpenVinoBackend.sequence_multiple``). ``e5kit export auto`` measures it beside the default.

    ``reduce_range`` keeps every weight in 7 bits (NNCF's ``OverflowFix.ENABLE``) for CPUs without VNNI
    (``e5kit.encoder.precision.int8_reduce_range``); otherwise NNCF's default applies it to the first layer only.

    Raises:
        ImportError: nncf is not installed (``pip install 'e5kit[openvino]'``).
    """
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters, OverflowFix
    except ImportError as error:
        raise ImportError("OpenVINO int8 needs NNCF: pip install 'e5kit[openvino]'") from error
    gelu_fed = [op.get_friendly_name() for op in model.get_ordered_ops()
                if op.get_type_name() == "MatMul" and op.input_value(0).get_node().get_type_name() == "Gelu"]
    overflow_fix = {"overflow_fix": OverflowFix.ENABLE} if reduce_range else {}
    smoothing = {} if full else {"smooth_quant_alphas": AdvancedSmoothQuantParameters(matmul=SMOOTHING_ALPHA)}
    ignored = {} if full else {"ignored_scope": nncf.IgnoredScope(names=gelu_fed)}
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)  # its INFO lines list every node it leaves unquantised
    try:
        return nncf.quantize(
            model, nncf.Dataset(list(calibration)), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration),
            advanced_parameters=AdvancedQuantizationParameters(**overflow_fix, **smoothing), **ignored,
        )
    finally:
        nncf_logger.setLevel(level)
