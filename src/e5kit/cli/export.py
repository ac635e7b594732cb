"""``e5kit export onnx`` (ONNX, calibrated static int8), ``e5kit export openvino`` (OpenVINO IR, NNCF
static int8, bf16 where the CPU runs it faster) and ``e5kit export auto`` (both, measured, the fastest
faithful one recorded), each checked against fp32 torch."""

from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer

from e5kit.cli.app import app, fail, load_encoder, output_folder
from e5kit.export.check import BATCH_CHECK_TEXTS

export_app = typer.Typer(help="Export a model for other runtimes.", no_args_is_help=True)
app.add_typer(export_app, name="export")

#: Largest SciFact nDCG@10 drop (in points, 0-100) the export may cause (issue 17: within 0.3).
MAX_NDCG_DROP = 0.3
#: Help of the options every export command shares.
CALIBRATION_HELP = (
    "Texts of the model's domain to calibrate int8 on: one per line, or JSONL with a 'text' (and optional 'title') field; "
    "a sample spread over the file. Default: a built-in sample of English prose (Python's language reference)."
)
CHECK_TEXTS_HELP = "Real texts (standard-library docs) embedded by torch fp32 and the export to compare."
REDUCE_RANGE_HELP = (
    "int8 weights in 7 bits: CPUs without VNNI (AVX2 only) sum pairs of int8 products in 16 bits, which saturate with "
    "8-bit weights (mean cosine 0.98-0.99 to fp32 measured there). Default: 7 bits where this CPU has none of "
    "avx512_vnni, avx_vnni, amx_int8, else 8; export on the CPU that will serve, or pass --reduce-range to serve anywhere."
)
EVAL_DATA_HELP = "A BEIR folder (e.g. ../shared/data/beir/scifact): also compare nDCG@10 of fp32 and the export."


class Quantize(str, Enum):
    none = "none"
    int8 = "int8"


@export_app.command()
def onnx(
    model: str = typer.Option(..., "--model", "-m", help="Model directory, bundled name, or Hub id."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: a sentence-transformers directory with the ONNX files in onnx/."),
    quantize: Quantize = typer.Option(Quantize.int8, help="int8: also write a statically quantised graph (calibrated, batch independent), loaded by default."),
    calibration: Path = typer.Option(None, help=CALIBRATION_HELP),
    reduce_range: bool = typer.Option(None, "--reduce-range/--no-reduce-range", help=REDUCE_RANGE_HELP, show_default=False),
    opset: int = typer.Option(18, min=14, help="ONNX opset."),
    check_texts_count: int = typer.Option(256, "--check-texts", min=8, help=CHECK_TEXTS_HELP),
    eval_data: Path = typer.Option(None, help=EVAL_DATA_HELP),
) -> None:
    """Export to ONNX (token embeddings and pooled embeddings as outputs), quantise, and check fidelity against fp32 torch.

    The files follow sentence-transformers' layout (onnx/model.onnx, onnx/model_qint8_quantized.onnx),
    so SentenceTransformer(OUT, backend="onnx") loads them too.

    Prints, for each exported graph, the mean and minimum cosine to torch fp32 on real texts and the
    minimum cosine between a text embedded alone and in a batch of texts of other lengths; fails
    (exit 2) when the mean is below 0.9999 (fp32) or 0.997 (int8), the batch cosine below 0.9999,
    or, with --eval-data, when nDCG@10 drops by more than 0.3 points.
    """
    from e5kit.encoder import Encoder
    from e5kit.encoder.precision import cpu_description
    from e5kit.export.onnx import export_onnx

    encoder, card, calibration_texts = _prepare(model, out, quantize, calibration, reduce_range, eval_data)
    typer.echo(f"exporting {model} to {out} (quantize: {quantize.value}{_weight_range(quantize, reduce_range)}) on {cpu_description()} ...")

    def verify(staged) -> list[str]:
        candidates = [Encoder.load(staged.model_dir, backend="onnx", file_name=path.name) for path in staged.files.values()]
        failures = _check_fidelity(encoder, candidates, check_texts_count)
        if eval_data is not None:
            failures += _compare_retrieval(encoder, [Encoder.load(staged.model_dir, backend="onnx")], eval_data)
        return failures

    with _export_errors(out):
        exported = export_onnx(
            encoder, out, quantize=quantize.value, opset=opset, reduce_range=reduce_range,
            calibration=calibration_texts, calibration_source=calibration and calibration.name, model_card=card, verify=verify,
        )
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
    quantize: Quantize = typer.Option(Quantize.int8, help="int8: also write an NNCF statically quantised IR (calibrated, batch independent), loaded by default."),
    full_int8: bool = typer.Option(
        False, "--full-int8", help="Also write openvino/openvino_model_qint8_full.xml: every MatMul int8 (NNCF's defaults), faster where "
        "float matrix work is slow (CPUs without AMX), less faithful (held to the same bounds); load it with file_name. Needs --quantize int8.",
    ),
    calibration: Path = typer.Option(None, help=CALIBRATION_HELP),
    reduce_range: bool = typer.Option(None, "--reduce-range/--no-reduce-range", help=REDUCE_RANGE_HELP, show_default=False),
    opset: int = typer.Option(18, min=14, help="ONNX opset of the intermediate graph."),
    check_texts_count: int = typer.Option(256, "--check-texts", min=8, help=CHECK_TEXTS_HELP),
    eval_data: Path = typer.Option(None, help=EVAL_DATA_HELP),
) -> None:
    """Export to OpenVINO IR (openvino/openvino_model.xml, fp32 weights; with --quantize int8 also
    openvino/openvino_model_qint8_quantized.xml) and check fidelity against fp32 torch.

    Needs OpenVINO's runtime and NNCF: pip install 'e5kit[openvino]'. The IR is converted from the
    traced fp32 graph of `e5kit export onnx`. Precision is OpenVINO's runtime setting: the export
    records the one to run at, with the timings it was chosen on (openvino/e5kit_openvino.json).

    Prints, for each IR at float32 and (where the CPU has bf16 instructions) bfloat16, the mean and
    minimum cosine to torch fp32 on real texts and the minimum cosine between a text embedded alone
    and in a batch; fails (exit 2) when the mean is below 0.9999 (float32), 0.999 (bfloat16) or
    0.997 (int8), the batch cosine below 0.9999, or, with --eval-data, when nDCG@10 drops by more
    than 0.3 points.
    """
    import importlib.util

    from e5kit.encoder import Encoder
    from e5kit.encoder.precision import cpu_description, has_bf16
    from e5kit.export.openvino import export_openvino

    if importlib.util.find_spec("openvino") is None:  # before the model loads
        raise fail("the openvino export needs OpenVINO's runtime: pip install 'e5kit[openvino]'")
    if full_int8 and quantize is not Quantize.int8:
        raise fail("--full-int8 needs --quantize int8")
    encoder, card, calibration_texts = _prepare(model, out, quantize, calibration, reduce_range, eval_data)
    typer.echo(
        f"exporting {model} to {out} (OpenVINO IR, quantize: {quantize.value}{_weight_range(quantize, reduce_range)}, precision: {dtype.value}) "
        f"on {cpu_description()} ..."
    )

    def verify(staged) -> list[str]:
        typer.echo(f"{staged.default.name}: runs at {staged.choice.precision} ({staged.choice.reason})")
        precisions = ["float32", "bfloat16"] if has_bf16() else ["float32"]
        candidates = [
            Encoder.load(staged.model_dir, backend="openvino", file_name=path.name, dtype=precision)
            for path in staged.files.values() for precision in precisions
        ]
        failures = _check_fidelity(encoder, candidates, check_texts_count)
        if eval_data is not None:
            # Every int8 IR, each at the recorded precision: --full-int8's is held to the same drop.
            int8 = [Encoder.load(staged.model_dir, backend="openvino", file_name=path.name) for key, path in staged.files.items() if key != "fp32"]
            failures += _compare_retrieval(encoder, int8 or [Encoder.load(staged.model_dir, backend="openvino")], eval_data)
        return failures

    with _export_errors(out):
        exported = export_openvino(
            encoder, out, dtype=dtype.value, quantize=quantize.value, full_int8=full_int8, opset=opset, reduce_range=reduce_range,
            calibration=calibration_texts, calibration_source=calibration and calibration.name, model_card=card, verify=verify,
        )
    typer.echo(f"ok: load with Encoder.load({str(exported.model_dir)!r}, backend='openvino') (uses {exported.default.name} at {exported.choice.precision})")


@export_app.command()
def auto(
    model: str = typer.Option(..., "--model", "-m", help="Model directory, bundled name, or Hub id."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: a sentence-transformers directory with onnx/, openvino/ and e5kit_backend.json."),
    calibration: Path = typer.Option(None, help=CALIBRATION_HELP),
    reduce_range: bool = typer.Option(None, "--reduce-range/--no-reduce-range", help=REDUCE_RANGE_HELP, show_default=False),
    threads: int = typer.Option(None, min=1, help="Inference threads every candidate is timed with, as the server will run them (`serve --threads`; default: each runtime's own, one per physical core)."),
    rounds: int = typer.Option(3, min=1, help="Timed rounds per candidate, interleaved (the best counts)."),
    opset: int = typer.Option(18, min=14, help="ONNX opset."),
    check_texts_count: int = typer.Option(256, "--check-texts", min=16, help=CHECK_TEXTS_HELP),
    eval_data: Path = typer.Option(None, help=EVAL_DATA_HELP),
) -> None:
    """Export to every backend (ONNX fp32 + int8, OpenVINO fp32 + int8), measure each backend and precision
    on this machine, and record the fastest faithful one for --backend auto.

    Candidates: torch, ONNX Runtime and OpenVINO, at fp32, int8 and (where the CPU has AVX512_BF16
    or AMX) bf16. Each embeds the same real texts at its default batch size in interleaved rounds; a
    candidate counts only within the fidelity bounds (mean cosine to torch fp32 >= 0.9999 fp32,
    0.999 bf16, 0.997 int8; a text's vector independent of its batch, cosine >= 0.9999). The
    fastest is recorded in OUT/e5kit_backend.json with every candidate's figures and this CPU:
    Encoder.load(OUT, backend="auto") and --backend auto in encode, index, eval and serve load it.
    OpenVINO candidates need pip install 'e5kit[openvino]' (without it they are listed as not run).
    The export is meant for this machine: int8 weights keep to 7 bits where its CPU has no VNNI or AMX
    (see --reduce-range of export onnx); 8-bit int8 weights loaded on a CPU without either warn.
    """
    from e5kit.encoder import Encoder
    from e5kit.encoder.model_format import BACKEND_RECORD
    from e5kit.encoder.precision import cpu_description
    from e5kit.export.auto import export_auto

    encoder, card, calibration_texts = _prepare(model, out, Quantize.int8, calibration, reduce_range, eval_data)
    typer.echo(
        f"exporting {model} to {out} (ONNX and OpenVINO, int8 calibrated{_weight_range(Quantize.int8, reduce_range)}) "
        f"and measuring every backend on {cpu_description()} ..."
    )

    def verify(staged) -> list[str]:
        return [] if eval_data is None else _compare_retrieval(encoder, [Encoder.load(staged.model_dir, backend="auto")], eval_data)

    with _export_errors(out):
        exported = export_auto(
            encoder, out, calibration=calibration_texts, calibration_source=calibration and calibration.name, opset=opset,
            model_card=card, check_texts_count=check_texts_count, threads=threads, rounds=rounds, reduce_range=reduce_range, verify=verify,
        )
    timing = exported.record["timing"]
    typer.echo(f"texts/s: best of {timing['rounds']} interleaved rounds of {timing['texts']} texts, threads {timing['threads']} "
               f"(torch {timing['torch_threads']}); cosines over {check_texts_count} texts")
    typer.echo(f"{'candidate':<28}{'texts/s':>9}{'mean cos':>10}{'min cos':>9}{'batch cos':>11}  verdict")
    for candidate in exported.candidates:
        fidelity = candidate.fidelity
        if fidelity is None:
            typer.echo(f"{candidate.label:<28}{'':>9}{'':>10}{'':>9}{'':>11}  not run: {candidate.error}")
            continue
        verdict = "; ".join(fidelity.failures()) or ("chosen" if candidate is exported.chosen else "ok")
        typer.echo(f"{candidate.label:<28}{candidate.texts_per_second:>9.1f}{fidelity.mean:>10.5f}{fidelity.min:>9.5f}{fidelity.batch_min:>11.6f}  {verdict}")
    typer.echo(f"ok: {exported.model_dir / BACKEND_RECORD} records {exported.chosen.label}; "
               f"load with Encoder.load({str(exported.model_dir)!r}, backend='auto') or --backend auto")


def _check_fidelity(reference, candidates: list, count: int) -> list[str]:
    """Print each candidate Encoder's fidelity to ``reference`` (torch fp32) on ``count`` real texts
    (``e5kit.export.check.measure_fidelity``); returns the failures against its bounds."""
    from e5kit.export.check import Reference, measure_fidelity

    expected = Reference.of(reference, count)
    failures = []
    for candidate in candidates:
        fidelity = measure_fidelity(expected, candidate)
        name = f"{candidate.backend.file.name} ({getattr(candidate.backend, 'precision', candidate.dtype)})"
        typer.echo(f"{name}: cosine to torch fp32 over {fidelity.texts} texts: mean {fidelity.mean:.5f}, min {fidelity.min:.5f}")
        typer.echo(f"{name}: cosine alone vs in one batch over {min(fidelity.texts, BATCH_CHECK_TEXTS)} texts of spread lengths: min {fidelity.batch_min:.6f}")
        failures += [f"{name}: {failure}" for failure in fidelity.failures()]
    return failures


def _weight_range(quantize: Quantize, reduce_range: bool | None) -> str:
    """", int8 weights: 7-bit range (why)" for the export line; empty without int8."""
    from e5kit.encoder.precision import INT8_DOT_FLAGS, int8_reduce_range

    if quantize is not Quantize.int8:
        return ""
    if reduce_range is not None:
        return f", int8 weights: {7 if reduce_range else 8}-bit range as asked"
    if int8_reduce_range():
        return f", int8 weights: 7-bit range, as this CPU has none of {', '.join(INT8_DOT_FLAGS)}"
    return ", int8 weights: 8-bit range, as this CPU has VNNI or AMX (pass --reduce-range for CPUs without)"


def _prepare(model: str, out: Path, quantize: Quantize, calibration: Path | None, reduce_range: bool | None, eval_data: Path | None):
    """Check an export's options and output, then load its source: the torch fp32 Encoder of ``model``, its
    README.md (an export keeps its source's card: licence, base model, scores) and the calibration texts.

    Every check that can fail runs before the model loads, each a one-line error (exit 2).
    """
    from e5kit.hub import resolve_model_dir

    if quantize is not Quantize.int8 and (calibration is not None or reduce_range is not None):
        raise fail("--calibration and --reduce-range apply to int8 weights; drop them or export with --quantize int8")
    if eval_data is not None and not eval_data.is_dir():
        raise fail(f"{eval_data}: no such BEIR folder (--eval-data)")
    output_folder(out, replaces="config.json")
    calibration_texts = _calibration_texts(calibration)
    encoder = load_encoder(model, device="cpu")
    card = resolve_model_dir(model) / "README.md"
    return encoder, card.read_text(encoding="utf-8") if card.is_file() else None, calibration_texts


@contextmanager
def _export_errors(out: Path):
    """An export's output or fidelity failure as a one-line error (exit 2); a failed check leaves ``out`` as it was."""
    from e5kit.export.check import ExportCheckError
    from e5kit.io.files import OutputPathError

    try:
        yield
    except OutputPathError as error:
        raise fail(str(error)) from error
    except ExportCheckError as error:
        raise fail(f"{error} (nothing written: {out} is as it was)") from error


def _calibration_texts(path: Path | None) -> list[str] | None:
    """The calibration sample of ``path`` (None: the built-in one); a one-line error naming the file when it is unusable."""
    from e5kit.export.check import CalibrationError, read_calibration
    from e5kit.export.onnx import CALIBRATION_TEXTS

    if path is None:
        return None
    try:
        return read_calibration(path, CALIBRATION_TEXTS)
    except CalibrationError as error:
        raise fail(str(error)) from error


def _compare_retrieval(reference, exported: list, data_dir: Path) -> list[str]:
    """nDCG@10 on ``data_dir`` of ``reference`` (torch fp32) and of each ``exported`` Encoder; the drops past ``MAX_NDCG_DROP``."""
    from e5kit.evaluation.retrieval import evaluate_beir

    fp32 = evaluate_beir(reference, data_dir, split="test")["ndcg_at_10"] * 100
    failures = []
    for candidate in exported:
        score = evaluate_beir(candidate, data_dir, split="test")["ndcg_at_10"] * 100
        name = f"{candidate.backend.name} {getattr(candidate.backend, 'file', None) and candidate.backend.file.name}, {candidate.dtype}"
        typer.echo(f"{data_dir}: nDCG@10 torch fp32 {fp32:.2f}, exported ({name}) {score:.2f}, drop {fp32 - score:+.2f} points")
        if fp32 - score > MAX_NDCG_DROP:
            failures.append(f"{name}: nDCG@10 dropped {fp32 - score:.2f} points (> {MAX_NDCG_DROP})")
    return failures
