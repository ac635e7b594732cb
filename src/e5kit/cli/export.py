"""``e5kit export onnx`` (ONNX, calibrated static int8) and ``e5kit export openvino`` (OpenVINO IR, bf16
where the CPU runs it faster), each checked against fp32 torch."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import numpy as np
import typer

from e5kit.cli.app import app, fail, load_encoder

export_app = typer.Typer(help="Export a model for other runtimes.", no_args_is_help=True)
app.add_typer(export_app, name="export")

#: Minimum mean cosine between fp32 torch and exported embeddings on the check texts, by precision: an
#: fp32 runtime differs only in summation order, bf16 keeps 8 bits of mantissa (issue 17: >= 0.999), and
#: int8's bound is the ONNX export's.
MIN_MEAN_COSINE = {"fp32": 0.99, "int8": 0.99, "float32": 0.9999, "bfloat16": 0.999}
#: Largest SciFact nDCG@10 drop (in points, 0-100) the export may cause.
MAX_NDCG_DROP = 0.5
#: Minimum cosine between a text embedded alone and in a batch of texts of other lengths (issue 17).
MIN_BATCH_COSINE = 0.9999
#: Texts of the check embedded alone for the batch-independence check (each is a forward pass).
BATCH_CHECK_TEXTS = 16


class Quantize(str, Enum):
    none = "none"
    int8 = "int8"


@export_app.command()
def onnx(
    model: str = typer.Option(..., "--model", "-m", help="Model directory, bundled name, or Hub id."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: a sentence-transformers directory with the ONNX files in onnx/."),
    quantize: Quantize = typer.Option(Quantize.int8, help="int8: also write a statically quantised graph (calibrated, batch independent), loaded by default."),
    calibration: Path = typer.Option(
        None, help="Texts of the model's domain to calibrate int8 on: one per line, or JSONL with a 'text' (and optional 'title') field; "
        "a sample spread over the file. Default: a built-in sample of English prose (Python's language reference).",
    ),
    opset: int = typer.Option(18, min=14, help="ONNX opset."),
    check_texts_count: int = typer.Option(256, "--check-texts", min=8, help="Real texts (standard-library docs) embedded by both to compare."),
    eval_data: Path = typer.Option(None, help="A BEIR folder (e.g. ../shared/data/beir/scifact): also compare nDCG@10 of fp32 and the export."),
) -> None:
    """Export to ONNX (token embeddings and pooled embeddings as outputs), quantise, and check fidelity against fp32 torch.

    The files follow sentence-transformers' layout (onnx/model.onnx, onnx/model_qint8_quantized.onnx),
    so SentenceTransformer(OUT, backend="onnx") loads them too.

    Prints, for each exported graph, the mean and minimum cosine to torch fp32 on real texts and the
    minimum cosine between a text embedded alone and in a batch of texts of other lengths; fails
    (exit 2) when the mean is below 0.99, the batch cosine below 0.9999, or, with --eval-data, when
    nDCG@10 drops by more than 0.5 points.
    """
    from e5kit.encoder import Encoder
    from e5kit.export.check import CalibrationError, read_calibration
    from e5kit.export.onnx import CALIBRATION_TEXTS, export_onnx
    from e5kit.hub import resolve_model_dir
    from e5kit.io.files import OutputPathError

    encoder = load_encoder(model, device="cpu")
    source_card = resolve_model_dir(model) / "README.md"  # the export keeps its source's card (licence, base model, scores)
    calibration_texts = None
    if calibration is not None and quantize is Quantize.int8:
        try:
            calibration_texts = read_calibration(calibration, CALIBRATION_TEXTS)
        except CalibrationError as error:
            raise fail(str(error)) from error
    typer.echo(f"exporting {model} to {out} (quantize: {quantize.value}) ...")
    try:
        exported = export_onnx(
            encoder, out, quantize=quantize.value, opset=opset,
            calibration=calibration_texts, calibration_source=calibration and calibration.name,
            model_card=source_card.read_text(encoding="utf-8") if source_card.is_file() else None,
        )
    except OutputPathError as error:
        raise fail(str(error)) from error
    candidates = {precision: Encoder.load(exported.model_dir, backend="onnx", file_name=path.name) for precision, path in exported.files.items()}
    failures = _check_fidelity(encoder, candidates, check_texts_count)
    if eval_data is not None:
        failures += _compare_retrieval(encoder, Encoder.load(exported.model_dir, backend="onnx"), eval_data)
    if failures:
        raise fail("export fidelity check failed: " + "; ".join(failures))
    typer.echo(f"ok: load with Encoder.load({str(exported.model_dir)!r}, backend='onnx') (uses {exported.default.name})")
    typer.echo(f"    or SentenceTransformer({str(exported.model_dir)!r}, backend='onnx') (uses onnx/{exported.files['fp32'].name})")


class Precision(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"


@export_app.command()
def openvino(
    model: str = typer.Option(..., "--model", "-m", help="Model directory, bundled name, or Hub id."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: a sentence-transformers directory with the OpenVINO IR in openvino/."),
    dtype: Precision = typer.Option(
        Precision.auto, help="Inference precision the export records: auto = bfloat16 where this CPU has bf16 instructions "
        "(AVX512_BF16, AMX) and a short timing shows it faster with cosine >= 0.999 to float32, else float32.",
    ),
    opset: int = typer.Option(18, min=14, help="ONNX opset of the intermediate graph."),
    check_texts_count: int = typer.Option(256, "--check-texts", min=8, help="Real texts (standard-library docs) embedded by both to compare."),
    eval_data: Path = typer.Option(None, help="A BEIR folder (e.g. ../shared/data/beir/scifact): also compare nDCG@10 of fp32 and the export."),
) -> None:
    """Export to OpenVINO IR (openvino/openvino_model.xml, fp32 weights) and check fidelity against fp32 torch.

    Needs OpenVINO's runtime: pip install 'e5kit[openvino]'. The IR is converted from the traced
    fp32 graph of `e5kit export onnx`. Precision is OpenVINO's runtime setting: the export records
    the one to run at, with the timings it was chosen on (openvino/e5kit_openvino.json).

    Prints, for float32 and (where the CPU has bf16 instructions) bfloat16, the mean and minimum
    cosine to torch fp32 on real texts and the minimum cosine between a text embedded alone and in a
    batch; fails (exit 2) when the mean is below 0.9999 (float32) or 0.999 (bfloat16), the batch
    cosine below 0.9999, or, with --eval-data, when nDCG@10 drops by more than 0.5 points.
    """
    import importlib.util

    from e5kit.encoder import Encoder
    from e5kit.encoder.precision import cpu_description, has_bf16
    from e5kit.export.openvino import export_openvino
    from e5kit.hub import resolve_model_dir
    from e5kit.io.files import OutputPathError

    if importlib.util.find_spec("openvino") is None:  # before the model loads
        raise fail("the openvino export needs OpenVINO's runtime: pip install 'e5kit[openvino]'")
    encoder = load_encoder(model, device="cpu")
    source_card = resolve_model_dir(model) / "README.md"  # the export keeps its source's card (licence, base model, scores)
    typer.echo(f"exporting {model} to {out} (OpenVINO IR, precision: {dtype.value}) on {cpu_description()} ...")
    try:
        exported = export_openvino(
            encoder, out, dtype=dtype.value, opset=opset,
            model_card=source_card.read_text(encoding="utf-8") if source_card.is_file() else None,
        )
    except OutputPathError as error:
        raise fail(str(error)) from error
    typer.echo(f"{exported.file}: runs at {exported.choice.precision} ({exported.choice.reason})")
    precisions = ["float32", "bfloat16"] if has_bf16() else ["float32"]
    candidates = {precision: Encoder.load(exported.model_dir, backend="openvino", dtype=precision) for precision in precisions}
    failures = _check_fidelity(encoder, candidates, check_texts_count)
    if eval_data is not None:
        failures += _compare_retrieval(encoder, Encoder.load(exported.model_dir, backend="openvino"), eval_data)
    if failures:
        raise fail("export fidelity check failed: " + "; ".join(failures))
    typer.echo(f"ok: load with Encoder.load({str(exported.model_dir)!r}, backend='openvino') (runs at {exported.choice.precision})")


def _check_fidelity(reference, candidates: dict, count: int) -> list[str]:
    """Print each candidate Encoder's cosine to ``reference`` (torch fp32) on ``count`` real texts, and
    alone vs in a batch; returns the failures against ``MIN_MEAN_COSINE`` and ``MIN_BATCH_COSINE``."""
    from e5kit.export.check import check_texts
    from e5kit.export.onnx import mean_cosine

    texts = check_texts(count)
    role = "passage" if "passage" in reference.prompts else None
    expected = reference.encode(texts, role=role)
    failures = []
    for precision, candidate in candidates.items():
        name = f"{candidate.backend.file} ({candidate.dtype})"
        batched = candidate.encode(texts, role=role)
        mean, worst = mean_cosine(expected, batched)
        typer.echo(f"{name}: cosine to torch fp32 over {len(texts)} texts: mean {mean:.5f}, min {worst:.5f}")
        if mean < MIN_MEAN_COSINE[precision]:
            failures.append(f"{precision}: mean cosine {mean:.4f} < {MIN_MEAN_COSINE[precision]}")
        # encode() batches length-sorted texts, so each of these shared its batch with texts of other lengths.
        alone = np.concatenate([candidate.encode([text], role=role) for text in texts[:BATCH_CHECK_TEXTS]])
        _, batch_worst = mean_cosine(alone, batched[:BATCH_CHECK_TEXTS])
        typer.echo(f"{name}: cosine alone vs in a batch over {len(alone)} texts: min {batch_worst:.6f}")
        if batch_worst < MIN_BATCH_COSINE:
            failures.append(f"{precision}: a text's vector depends on its batch (cosine {batch_worst:.6f} < {MIN_BATCH_COSINE})")
    return failures


def _compare_retrieval(reference, exported, data_dir: Path) -> list[str]:
    from e5kit.evaluation.retrieval import evaluate_beir

    fp32 = evaluate_beir(reference, data_dir, split="test")["ndcg_at_10"] * 100
    score = evaluate_beir(exported, data_dir, split="test")["ndcg_at_10"] * 100
    typer.echo(f"{data_dir}: nDCG@10 torch fp32 {fp32:.2f}, exported ({exported.backend.file.name}, {exported.dtype}) {score:.2f}, drop {fp32 - score:+.2f} points")
    return [f"nDCG@10 dropped {fp32 - score:.2f} points (> {MAX_NDCG_DROP})"] if fp32 - score > MAX_NDCG_DROP else []
