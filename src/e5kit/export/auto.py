"""``e5kit export auto``: every backend and precision e5kit ships, measured on this machine, and the
fastest one whose embeddings stay faithful recorded for ``Encoder.load(dir, backend="auto")``.

One folder holds all of them: the sentence-transformers model (torch), ``onnx/`` (fp32 and
calibrated static int8, ``e5kit.export.onnx``) and ``openvino/`` (fp32 and NNCF static int8 IRs, the
default one and the every-MatMul one, ``e5kit.export.openvino``). Each candidate (torch fp32/bf16, ONNX fp32/int8, OpenVINO fp32/int8/int8-full at
float32 and, where the CPU has bf16 instructions, bfloat16 inference) embeds the same real prose
(``e5kit.export.check.check_texts``) at its backend's default batch size, in interleaved rounds so
that load from other processes slows them alike; the best round counts. A candidate is eligible
only if it passes ``e5kit.export.check.Fidelity``'s bounds (mean cosine to torch fp32 by precision,
a text's vector independent of its batch). The choice, every candidate's figures and the CPU they
were measured on go to ``e5kit_backend.json`` (``e5kit.encoder.model_format.BACKEND_RECORD``):
int8 and bf16 speed differ several-fold between CPUs, so the choice is this machine's, and a load
on another CPU says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from e5kit.encoder.encoder import Encoder
from e5kit.encoder.model_format import BACKEND_RECORD
from e5kit.encoder.onnx_backend import FP32_FILE, INT8_FILE, ONNX_FOLDER
from e5kit.encoder.openvino_backend import INT8_FULL_XML_FILE, INT8_XML_FILE, OPENVINO_FOLDER, XML_FILE
from e5kit.encoder.precision import cpu_description, has_bf16, time_forwards
from e5kit.export.check import Fidelity, Reference, measure_fidelity, verified
from e5kit.export.onnx import check_source, write_onnx
from e5kit.export.openvino import write_openvino
from e5kit.io.files import AtomicFolder

logger = logging.getLogger(__name__)

#: Texts each candidate embeds per timed round (of the check texts): enough for several batches at
#: every backend's default batch size, few enough that a large model's eight candidates time in minutes.
TIMING_TEXTS = 128


@dataclass
class Candidate:
    """One backend, file and precision ``export_auto`` measures.

    Attributes:
        label: How tables name it, e.g. "openvino int8 (bfloat16)".
        backend, file_name, dtype: The ``Encoder.load`` arguments that load it.
        texts_per_second: Best round's throughput (0 when it did not load).
        fidelity: Its cosines to torch fp32; None when it did not load.
        error: Why it did not load (e.g. OpenVINO not installed), else None.
    """

    label: str
    backend: str
    file_name: str | None = None
    dtype: str | None = None
    texts_per_second: float = 0.0
    fidelity: Fidelity | None = None
    error: str | None = None

    @property
    def eligible(self) -> bool:
        """Loaded, and within every fidelity bound."""
        return self.fidelity is not None and not self.fidelity.failures()

    def as_dict(self) -> dict:
        return {**asdict(self), "eligible": self.eligible}


@dataclass
class AutoExport:
    """What ``export_auto`` wrote and measured.

    Attributes:
        model_dir: The folder (loads with every backend; ``backend="auto"`` loads ``chosen``).
        candidates: Every candidate, in measuring order.
        chosen: The fastest eligible candidate (torch fp32 is always eligible: it is the reference).
        record: The contents of ``model_dir / BACKEND_RECORD``.
    """

    model_dir: Path
    candidates: list[Candidate]
    chosen: Candidate
    record: dict = field(default_factory=dict)


def candidates(bf16: bool) -> list[Candidate]:
    """The candidates of an export with ONNX and OpenVINO int8; the bfloat16 ones only where ``bf16`` (the CPU has it)."""
    inference = ["float32", "bfloat16"] if bf16 else ["float32"]
    found = [Candidate(f"torch {dtype}", "torch", dtype=dtype) for dtype in inference]
    found += [Candidate(f"onnx {precision}", "onnx", file_name=name) for precision, name in (("int8", INT8_FILE), ("fp32", FP32_FILE))]
    found += [
        Candidate(f"openvino {weights} ({dtype})", "openvino", file_name=name, dtype=dtype)
        for weights, name in (("int8", INT8_XML_FILE), ("int8-full", INT8_FULL_XML_FILE), ("fp32", XML_FILE)) for dtype in inference
    ]
    return found


def export_auto(
    encoder: Encoder,
    out_dir: str | Path,
    *,
    calibration: Sequence[str] | None = None,
    calibration_source: str | None = None,
    opset: int = 18,
    model_card: str | None = None,
    check_texts_count: int = 256,
    threads: int | None = None,
    rounds: int = 3,
    reduce_range: bool | None = None,
    verify: Callable[[AutoExport], list[str]] | None = None,
) -> AutoExport:
    """Export ``encoder`` to every backend, measure each candidate here, and record the fastest faithful one.

    Args:
        encoder: A torch-backend fp32 Encoder: the reference every candidate is compared with.
        out_dir: Output folder (created; an existing model folder, or an empty one, is replaced).
        calibration: Texts of the model's domain for both int8 exports; None: the built-in sample.
        calibration_source: What ``calibration`` is, for the manifests.
        opset: ONNX opset.
        model_card: README.md of the export; None writes e5kit's card.
        check_texts_count: Real prose texts the fidelity check embeds (the first ``TIMING_TEXTS`` are timed).
        threads: Inference threads of every candidate for the timing (torch's too, as ``e5kit serve
            --threads`` sets them), as a server would run them; default: each runtime's own.
        rounds: Timed rounds per candidate (best counts).
        reduce_range: int8 weights in 7 bits in both int8 exports (``e5kit.encoder.precision.int8_reduce_range``);
            None: whether this CPU lacks VNNI. The timing runs on this CPU either way.
        verify: Called with the export while it is still staged; its failures abort it (``e5kit.export.check.verified``).

    Raises:
        ValueError: an Encoder that is not torch fp32, or an empty ``calibration``.
        e5kit.export.check.ExportCheckError: ``verify`` returned failures; ``out_dir`` is left as it was.
    """
    check_source(encoder)
    root = Path(out_dir)
    found = candidates(has_bf16())
    with AtomicFolder(root, replaces="config.json") as staged:
        folder = staged.temporary
        encoder.write_model_files(folder, model_card, name=root.resolve().name)
        write_onnx(encoder, folder / ONNX_FOLDER, "int8", opset, calibration, calibration_source, reduce_range)
        try:
            write_openvino(encoder, folder / OPENVINO_FOLDER, dtype="float32", quantize="int8", full_int8=True, calibration=calibration,
                           calibration_source=calibration_source, reduce_range=reduce_range, opset=opset)
        except ImportError as error:  # OpenVINO is an extra: measure what is installed
            for candidate in found:
                if candidate.backend == "openvino":
                    candidate.error = str(error)
        chosen, timing = _measure(encoder, folder, found, check_texts_count, threads, rounds)
        record = {
            "backend": chosen.backend,
            "file_name": chosen.file_name,
            "dtype": chosen.dtype,
            "texts_per_second": round(chosen.texts_per_second, 1),
            "reason": f"fastest of {sum(c.eligible for c in found)} candidates within the fidelity bounds (of {len(found)} measured)",
            "cpu": cpu_description(),
            "timing": timing,
            "candidates": [candidate.as_dict() for candidate in found],
            "torch": torch.__version__,
        }
        (folder / BACKEND_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        verified(AutoExport(model_dir=folder, candidates=found, chosen=chosen, record=record), verify)
    return AutoExport(model_dir=root, candidates=found, chosen=chosen, record=record)


def _measure(reference: Encoder, folder: Path, found: list[Candidate], count: int, threads: int | None, rounds: int) -> tuple[Candidate, dict]:
    """Fill each candidate's fidelity and throughput; returns the fastest eligible one and the timing settings."""
    expected = Reference.of(reference, count)
    encoders = {}
    for candidate in found:
        if candidate.error:
            continue
        try:
            encoders[candidate.label] = Encoder.load(
                folder, backend=candidate.backend, file_name=candidate.file_name, dtype=candidate.dtype, threads=threads,
                # As served: `serve --threads N` gives torch N threads too, so every candidate is timed at the same count.
                **({"device": "cpu"} if candidate.backend == "torch" else {}),
            )
        except (ImportError, RuntimeError, ValueError) as error:
            candidate.error = f"{type(error).__name__}: {error}"
            continue
        candidate.fidelity = measure_fidelity(expected, encoders[candidate.label])
    timed = expected.texts[:TIMING_TEXTS]
    seconds, _ = time_forwards({label: _encode_all(encoder, timed, expected.role) for label, encoder in encoders.items()}, rounds=rounds)
    for candidate in found:
        if candidate.label in seconds:
            candidate.texts_per_second = len(timed) / seconds[candidate.label]
    chosen = max((candidate for candidate in found if candidate.eligible), key=lambda candidate: candidate.texts_per_second)
    return chosen, {"texts": len(timed), "rounds": rounds, "threads": threads or "one per physical core", "torch_threads": torch.get_num_threads()}


def _encode_all(encoder: Encoder, texts: list[str], role: str | None):
    return lambda: encoder.encode(texts, role=role)
