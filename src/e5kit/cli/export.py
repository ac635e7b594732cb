"""``e5kit export onnx``: ONNX export with dynamic int8 quantisation, checked against fp32."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from e5kit.cli.app import app, fail, load_encoder

export_app = typer.Typer(help="Export a model for other runtimes.", no_args_is_help=True)
app.add_typer(export_app, name="export")

#: Minimum mean cosine between fp32 torch and exported embeddings on the check texts.
MIN_MEAN_COSINE = 0.99
#: Largest SciFact nDCG@10 drop (in points, 0-100) the export may cause.
MAX_NDCG_DROP = 0.5


class Quantize(str, Enum):
    none = "none"
    int8 = "int8"


@export_app.command()
def onnx(
    model: str = typer.Option(..., "--model", "-m", help="Model directory, bundled name, or Hub id."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: a sentence-transformers directory with the ONNX files in onnx/."),
    quantize: Quantize = typer.Option(Quantize.int8, help="int8: also write a dynamically quantised graph, loaded by default."),
    opset: int = typer.Option(18, min=14, help="ONNX opset."),
    check_texts: int = typer.Option(256, min=8, help="Real texts (standard-library docs) embedded by both to compare."),
    eval_data: Path = typer.Option(None, help="A BEIR folder (e.g. ../shared/data/beir/scifact): also compare nDCG@10 of fp32 and the export."),
) -> None:
    """Export to ONNX (token embeddings and pooled embeddings as outputs), quantise, and check fidelity against fp32 torch.

    The files follow sentence-transformers' layout (onnx/model.onnx, onnx/model_qint8_quantized.onnx),
    so SentenceTransformer(OUT, backend="onnx") loads them too.

    Prints the mean and minimum cosine between torch fp32 and each exported graph on real texts, and
    fails (exit 2) when the mean is below 0.99 or, with --eval-data, when nDCG@10 drops by more than
    0.5 points.
    """
    from e5kit.encoder import Encoder
    from e5kit.serving.onnx import OnnxEncoder, export_onnx, mean_cosine

    from e5kit.hub import resolve_model_dir
    from e5kit.textio import OutputPathError

    encoder = load_encoder(model, device="cpu")
    source_card = resolve_model_dir(model) / "README.md"  # the export keeps its source's card (licence, base model, scores)
    typer.echo(f"exporting {model} to {out} (quantize: {quantize.value}) ...")
    try:
        exported = export_onnx(
            encoder, out, quantize=quantize.value, opset=opset, model_card=source_card.read_text(encoding="utf-8") if source_card.is_file() else None
        )
    except OutputPathError as error:
        raise fail(str(error)) from error
    texts = _check_texts(check_texts)
    role = "passage" if "passage" in encoder.prompts else None
    reference = encoder.encode(texts, role=role)
    failures = []
    for precision, path in exported.files.items():
        candidate = OnnxEncoder.load(exported.model_dir, file_name=path.name)
        mean, worst = mean_cosine(reference, candidate.encode(texts, role=role))
        typer.echo(f"{path}: cosine to torch fp32 over {len(texts)} texts: mean {mean:.5f}, min {worst:.5f}")
        if mean < MIN_MEAN_COSINE:
            failures.append(f"{precision}: mean cosine {mean:.4f} < {MIN_MEAN_COSINE}")
    if eval_data is not None:
        failures += _compare_retrieval(encoder, Encoder.load(exported.model_dir, backend="onnx"), eval_data)
    if failures:
        raise fail("export fidelity check failed: " + "; ".join(failures))
    typer.echo(f"ok: load with Encoder.load({str(exported.model_dir)!r}, backend='onnx') (uses {exported.default.name})")
    typer.echo(f"    or SentenceTransformer({str(exported.model_dir)!r}, backend='onnx') (uses onnx/{exported.files['fp32'].name})")


def _check_texts(count: int) -> list[str]:
    """``count`` real prose passages of ~100 words from the standard library's documentation."""
    from e5kit.data.readers.pydoc import iter_module_docs

    texts = []
    for record in iter_module_docs():
        words = record.text.split()
        texts += [" ".join(words[i : i + 100]) for i in range(0, len(words) - 20, 100)]
        if len(texts) >= count:
            return texts[:count]
    return texts


def _compare_retrieval(reference, exported, data_dir: Path) -> list[str]:
    from e5kit.evaluation.retrieval import evaluate_beir

    fp32 = evaluate_beir(reference, data_dir, split="test")["ndcg_at_10"] * 100
    onnx = evaluate_beir(exported, data_dir, split="test")["ndcg_at_10"] * 100
    typer.echo(f"{data_dir}: nDCG@10 torch fp32 {fp32:.2f}, exported ({exported.file.name}) {onnx:.2f}, drop {fp32 - onnx:+.2f} points")
    return [f"nDCG@10 dropped {fp32 - onnx:.2f} points (> {MAX_NDCG_DROP})"] if fp32 - onnx > MAX_NDCG_DROP else []
