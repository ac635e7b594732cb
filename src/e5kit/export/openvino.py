"""OpenVINO IR export of an Encoder, with its inference precision chosen on the exporting machine.

The IR (``openvino/openvino_model.xml`` and ``.bin``, optimum-intel's names, which
sentence-transformers' ``backend="openvino"`` loads) is converted from the same traced fp32 ONNX
graph ``e5kit export onnx`` writes (``export_fp32_graph``: inputs ``input_ids`` and
``attention_mask``, outputs ``last_hidden_state`` and the pooled ``sentence_embedding``, not
normalised), and keeps fp32 weights. Precision is an OpenVINO runtime setting
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
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from e5kit.encoder.encoder import Encoder
from e5kit.encoder.onnx_backend import INPUT_NAMES, OUTPUT_NAME, TOKEN_OUTPUT
from e5kit.encoder.openvino_backend import HINTS, MANIFEST, OPENVINO_FOLDER, XML_FILE, auto_precision
from e5kit.encoder.precision import PrecisionChoice
from e5kit.export.onnx import export_fp32_graph
from e5kit.io.files import AtomicFolder


@dataclass
class OpenVinoExport:
    """Where ``export_openvino`` wrote things.

    Attributes:
        model_dir: The sentence-transformers directory holding ``openvino/``.
        file: The IR's .xml (its weights are the .bin beside it).
        choice: The inference precision the export records, and how it was chosen.
    """

    model_dir: Path
    file: Path
    choice: PrecisionChoice


def export_openvino(encoder: Encoder, out_dir: str | Path, *, dtype: str = "auto", opset: int = 18, model_card: str | None = None) -> OpenVinoExport:
    """Save ``encoder`` as a sentence-transformers directory plus an OpenVINO IR and its manifest.

    Args:
        encoder: A torch-backend Encoder.
        out_dir: Output folder (created; an existing model folder, or an empty one, is replaced).
        dtype: The inference precision recorded for the backend: "float32", "bfloat16", or "auto"
            (bfloat16 where this CPU has bf16 instructions and a timing of the IR shows it faster and faithful).
        opset: ONNX opset of the intermediate graph.
        model_card: README.md of the export; None writes e5kit's card (``Encoder.save``).

    Raises:
        ValueError: an unknown ``dtype``, or an Encoder without torch weights.
        ImportError: the openvino package is not installed.
    """
    import openvino

    if dtype not in (*HINTS, "auto"):
        raise ValueError(f"dtype must be one of {', '.join(HINTS)}, auto, got {dtype!r}")
    if encoder.backend.name != "torch":
        raise ValueError(f"export needs a torch-backend Encoder (this one runs on {encoder.backend.name})")
    root = Path(out_dir)
    with AtomicFolder(root, replaces="config.json") as staged:  # a killed export leaves no model folder without its IR
        encoder.write_model_files(staged.temporary, model_card, name=root.resolve().name)
        folder = staged.temporary / OPENVINO_FOLDER
        folder.mkdir()
        with tempfile.TemporaryDirectory(prefix="e5kit-openvino-") as scratch:  # the model may read weights from its graph file
            graph = Path(scratch) / "model.onnx"
            export_fp32_graph(encoder, graph, opset)
            model = openvino.convert_model(graph)
            # fp32 weights: OpenVINO's default fp16 compression would cost fidelity at float32.
            openvino.save_model(model, folder / XML_FILE, compress_to_fp16=False)
            choice = auto_precision(model, encoder.model.config) if dtype == "auto" else PrecisionChoice(dtype, "asked for at export")
        manifest = {
            "file": XML_FILE,
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
            "openvino": openvino.__version__,
            "torch": torch.__version__,
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return OpenVinoExport(model_dir=root, file=root / OPENVINO_FOLDER / XML_FILE, choice=choice)
