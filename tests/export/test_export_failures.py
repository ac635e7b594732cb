"""What an export and its loading do with bad input: a failed check writes nothing, malformed manifests
and records are named, options a backend would not use are refused, and every check that can fail
runs before the model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.encoder import Encoder
from e5kit.encoder.model_format import BACKEND_RECORD, ModelDirectoryError
from e5kit.encoder.onnx_backend import FP32_FILE, MANIFEST, ONNX_FOLDER
from e5kit.export.check import CalibrationError, ExportCheckError, read_calibration
from e5kit.export.onnx import export_onnx


@pytest.fixture
def onnx_copy(onnx_dir, tmp_path):
    """A copy of the tiny model's ONNX export that a test may damage."""
    import shutil

    return shutil.copytree(onnx_dir.model_dir, tmp_path / "copy")


def test_a_failed_check_leaves_the_previous_export_in_place(tiny_encoder, tmp_path):
    # Given a good fp32 export in OUT
    out = export_onnx(tiny_encoder, tmp_path / "out", quantize="none").model_dir
    before = {path.name: path.stat().st_mtime_ns for path in (out / ONNX_FOLDER).iterdir()}
    # When another export into OUT fails its check
    with pytest.raises(ExportCheckError, match="forced failure"):
        export_onnx(tiny_encoder, out, quantize="int8", verify=lambda staged: ["forced failure"])
    # Then OUT still holds the first export, untouched, and no staging folder is left beside it
    assert {path.name: path.stat().st_mtime_ns for path in (out / ONNX_FOLDER).iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_the_cli_check_runs_before_the_export_replaces_its_output(tiny_bert_dir, tmp_path, monkeypatch):
    from e5kit.export import check

    runner = CliRunner()
    out = tmp_path / "m"
    assert runner.invoke(app, ["export", "onnx", "-m", str(tiny_bert_dir), "-o", str(out), "--quantize", "none", "--check-texts", "8"]).exit_code == 0
    # Given bounds no export can meet
    monkeypatch.setitem(check.MIN_MEAN_COSINE, "int8", 1.01)
    # When an int8 export into the same folder is checked
    result = runner.invoke(app, ["export", "onnx", "-m", str(tiny_bert_dir), "-o", str(out), "--check-texts", "8"])
    # Then it fails naming the bound, and the fp32-only export is still what the folder holds
    assert result.exit_code == 2 and "int8: mean cosine" in result.output and "is as it was" in result.output
    assert json.loads((out / ONNX_FOLDER / MANIFEST).read_text())["files"] == {FP32_FILE: "fp32"}


def test_the_batch_check_runs_every_text_in_one_forward_pass(tiny_encoder, texts):
    from e5kit.export.check import one_batch

    # Given texts of very different lengths, which encode would cut into several batches
    calls = []
    forward = tiny_encoder.backend.forward

    def counted(input_ids, attention_mask, *, normalize):
        calls.append(input_ids.shape)
        return forward(input_ids, attention_mask, normalize=normalize)

    tiny_encoder.backend.forward = counted
    try:
        # When they are embedded by one_batch
        vectors = one_batch(tiny_encoder, [texts[0], texts[-1], "cats"], "passage")
    finally:
        del tiny_encoder.backend.forward
    # Then one pass embedded all three, the short ones padded to the longest
    assert len(calls) == 1 and calls[0][0] == 3 and vectors.shape == (3, tiny_encoder.dimension)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda manifest: manifest.pop("default"), "field 'default': Field required"),
        (lambda manifest: manifest.pop("files"), "field 'files': Field required"),
        (lambda manifest: manifest["files"].update({FP32_FILE: "float16"}), f"field 'files.{FP32_FILE}'"),
    ],
)
def test_a_malformed_onnx_manifest_is_named(onnx_copy, change, message):
    # Given an export whose manifest lost a field or holds a wrong value
    path = onnx_copy / ONNX_FOLDER / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    # When it is loaded, Then the error names the file and the field, on one line
    with pytest.raises(ModelDirectoryError, match=message) as error:
        Encoder.load(onnx_copy, backend="onnx")
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_manifest_that_is_not_an_object_and_an_unreadable_graph_are_named(onnx_copy):
    # Given a manifest that is a JSON list
    path = onnx_copy / ONNX_FOLDER / MANIFEST
    good = path.read_text()
    path.write_text("[1, 2]")
    # Then loading says the file is not an object
    with pytest.raises(ModelDirectoryError, match="expected a JSON object"):
        Encoder.load(onnx_copy, backend="onnx")
    # Given a graph file cut short
    path.write_text(good)
    graph = onnx_copy / ONNX_FOLDER / FP32_FILE
    graph.write_bytes(graph.read_bytes()[:1000])
    # Then loading names the file
    with pytest.raises(ModelDirectoryError, match=f"{graph}: ONNX Runtime cannot load it"):
        Encoder.load(onnx_copy, backend="onnx", file_name=FP32_FILE)


def test_an_onnx_file_the_manifest_does_not_list_is_refused(onnx_copy):
    # Given a file in onnx/ that the export did not write (so its precision is unknown)
    (onnx_copy / ONNX_FOLDER / "other.onnx").write_bytes((onnx_copy / ONNX_FOLDER / FP32_FILE).read_bytes())
    # Then it is refused by name, as OpenVINO's unlisted IRs are
    with pytest.raises(ModelDirectoryError, match="lists no ONNX file 'other.onnx'"):
        Encoder.load(onnx_copy, backend="onnx", file_name="other.onnx")


def test_an_unknown_backend_in_the_auto_record_is_named(onnx_copy):
    # Given an export auto record naming a backend e5kit does not have
    (onnx_copy / BACKEND_RECORD).write_text(json.dumps({"backend": "tensorrt", "cpu": "x"}))
    # Then backend auto refuses it by file and field instead of running torch
    with pytest.raises(ModelDirectoryError, match=f"{BACKEND_RECORD}: field 'backend'"):
        Encoder.load(onnx_copy, backend="auto")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "onnx", "dtype": "bfloat16"}, "does not apply to backend='onnx'"),
        ({"backend": "onnx", "device": "cuda"}, "runs on the CPU"),
        ({"backend": "torch", "file_name": FP32_FILE}, "file_name applies to"),
        ({"backend": "auto", "dtype": "float32"}, "takes the file and precision"),
    ],
)
def test_an_option_the_backend_would_not_use_is_refused(onnx_dir, options, message):
    # When an option is given to a backend that would drop it, Then loading says so
    with pytest.raises(ValueError, match=message):
        Encoder.load(onnx_dir.model_dir, **options)


def test_cli_encode_refuses_dtype_for_onnx_and_writes_the_output_it_names(onnx_dir, tmp_path):
    runner = CliRunner()
    texts = tmp_path / "t.txt"
    texts.write_text("a cat\na dog\n")
    # When encode is asked for a precision the ONNX graph cannot take
    refused = runner.invoke(app, ["encode", "-m", str(onnx_dir.model_dir), "--backend", "onnx", "--dtype", "bfloat16", "-r", "passage", "-i", str(texts), "-o", str(tmp_path / "x.npy")])
    # Then it fails in one line, and nothing is written
    assert refused.exit_code == 2 and "does not apply to backend='onnx'" in refused.output and not (tmp_path / "x.npy").exists()
    # When the output name has no .npy suffix
    written = runner.invoke(app, ["encode", "-m", str(onnx_dir.model_dir), "--backend", "onnx", "-r", "passage", "-i", str(texts), "-o", str(tmp_path / "vectors.bin")])
    # Then the array is at exactly that path (np.save alone would have added .npy)
    assert written.exit_code == 0, written.output
    assert np.load(tmp_path / "vectors.bin").shape[0] == 2 and not (tmp_path / "vectors.bin.npy").exists()


def test_a_role_that_is_not_a_string_is_refused(tiny_encoder):
    # When encode's second positional argument is given a batch size, Then it is refused rather than taken as a role
    with pytest.raises(TypeError, match="keyword-only"):
        tiny_encoder.encode(["a cat"], 8)


def test_calibration_skips_invisible_lines_and_names_bad_records(tmp_path):
    # Given a text file with a zero-width-only line between two texts
    lines = tmp_path / "cal.txt"
    lines.write_text("first text\n\u200b\nsecond text\n", encoding="utf-8")
    # Then the invisible line is passed over like a blank one
    assert read_calibration(lines, 10) == ["first text", "second text"]
    # Given a JSONL record whose text is a number
    records = tmp_path / "cal.jsonl"
    records.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"text": 5}) + "\n")
    # Then the error names the file, the line and the field
    with pytest.raises(CalibrationError, match=r"cal.jsonl:2: 'text' is int, expected a string"):
        read_calibration(records, 10)
    # Given a file of blank lines only, Then the error says so rather than calling it empty
    blanks = tmp_path / "blank.txt"
    blanks.write_text("\n \n\n")
    with pytest.raises(CalibrationError, match="none of its 3 lines has visible text"):
        read_calibration(blanks, 10)


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("./no-such-model", [], "no such model directory"),
        (None, ["--quantize", "none", "--calibration", "cal.txt"], "--calibration and --reduce-range apply to int8 weights"),
        (None, ["--eval-data", "no-such-beir"], "no such BEIR folder"),
    ],
)
def test_cli_export_errors_are_one_line_with_exit_2(tiny_bert_dir, tmp_path, model, options, message):
    # When export onnx gets a bad model, an option that needs int8, or a missing evaluation folder
    result = CliRunner().invoke(app, ["export", "onnx", "-m", model or str(tiny_bert_dir), "-o", str(tmp_path / "out"), *options])
    # Then it fails with exit 2 and one line naming the problem, and writes nothing
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_cli_export_refuses_a_folder_of_other_files_before_loading_the_model(tiny_bert_dir, tmp_path, monkeypatch):
    from e5kit.cli import export as export_cli

    # Given an output folder that holds files but no model
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    monkeypatch.setattr(export_cli, "load_encoder", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    # When it is named as an export's output, Then the export stops before the model loads, and the file stays
    result = CliRunner().invoke(app, ["export", "onnx", "-m", str(tiny_bert_dir), "-o", str(tmp_path / "notes")])
    assert result.exit_code == 2 and "holds no config.json" in result.output
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_a_bfloat16_encoder_is_refused_rather_than_converted(tiny_bert_dir, tmp_path):
    # Given a torch Encoder running bfloat16
    encoder = Encoder.load(tiny_bert_dir, device="cpu", dtype="bfloat16")
    # When it is exported, Then the export refuses it, and the Encoder keeps its precision
    with pytest.raises(ValueError, match="needs a torch float32 Encoder"):
        export_onnx(encoder, tmp_path / "out")
    assert encoder.dtype == "bfloat16" and next(encoder.model.parameters()).dtype == torch.bfloat16


def test_exporting_one_backend_keeps_the_others_export_of_the_same_weights(tiny_encoder, tiny_bert_dir, tmp_path, caplog):
    from e5kit.export.openvino import export_openvino

    # Given a folder holding an OpenVINO export and export auto's record
    out = export_openvino(tiny_encoder, tmp_path / "m", dtype="float32", quantize="none").model_dir
    (out / BACKEND_RECORD).write_text(json.dumps({"backend": "openvino", "cpu": "x"}))
    # When the same model is exported to ONNX into that folder
    with caplog.at_level("WARNING"):
        export_onnx(tiny_encoder, out, quantize="none")
    # Then the OpenVINO export is still there and loads; the record, which measured other files, is dropped and said to be
    assert Encoder.load(out, backend="openvino").backend.name == "openvino" and Encoder.load(out, backend="onnx").backend.name == "onnx"
    assert not (out / BACKEND_RECORD).exists() and "is not kept" in caplog.text
    # When a model of other weights is exported into it
    from tests.conftest import build_tiny_bert

    other = Encoder.load(build_tiny_bert(tmp_path / "other", seed=1), device="cpu")
    caplog.clear()
    with caplog.at_level("WARNING"):
        export_onnx(other, out, quantize="none")
    # Then the folder is replaced whole, and the warning names what went
    assert not (out / "openvino").exists() and "holds a model of other weights or pooling, which this export replaces with its openvino/" in caplog.text


def test_the_weights_fingerprint_sees_through_storage_and_not_through_pooling(tiny_bert_dir, tmp_path):
    import shutil

    from transformers import AutoModel

    from e5kit.encoder.backend import weights_fingerprint
    from e5kit.encoder.model_format import WEIGHT_FILES

    # Given the tiny model, a copy stored in float16 that holds float16-exact values, and a copy pooling by CLS
    exact = tmp_path / "exact"
    model = AutoModel.from_pretrained(tiny_bert_dir)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    model.save_pretrained(exact)
    for path in tiny_bert_dir.iterdir():
        if path.name not in WEIGHT_FILES and not (exact / path.name).exists():
            shutil.copy(path, exact / path.name)
    half = shutil.copytree(exact, tmp_path / "half")
    AutoModel.from_pretrained(exact).half().save_pretrained(half)
    cls = export_onnx(Encoder.load(exact, device="cpu"), tmp_path / "cls", quantize="none").model_dir
    (cls / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True}))
    # Then the float16 copy embeds as the float32 one, and the CLS copy does not
    assert weights_fingerprint(half) == weights_fingerprint(exact)
    assert weights_fingerprint(cls) != weights_fingerprint(exact)
