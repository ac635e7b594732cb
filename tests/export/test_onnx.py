"""ONNX export: fp32 graph equals torch, static int8 stays close, every backend is batch independent, the Encoder hook and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.encoder import Encoder
from e5kit.encoder.model_format import ModelDirectoryError
from e5kit.encoder.onnx_backend import FP32_FILE, INT8_FILE, session_for
from e5kit.encoder.precision import mean_cosine
from e5kit.export.check import one_batch


def test_fp32_graph_matches_torch(tiny_encoder, onnx_dir, texts):
    # Given the tiny model and its fp32 ONNX export
    onnx = Encoder.load(onnx_dir.model_dir, backend="onnx", file_name=FP32_FILE)
    # When both embed the same texts in both roles (variable lengths, padding, truncation)
    for role in ("query", "passage"):
        expected = tiny_encoder.encode(texts, role=role, batch_size=3)
        actual = onnx.encode(texts, role=role, batch_size=3)
        # Then the embeddings agree to float precision and in input order
        np.testing.assert_allclose(actual, expected, atol=2e-5)
    assert onnx.last_stats.truncated == tiny_encoder.last_stats.truncated == 1
    unnormalised = onnx.encode(texts[:2], role="query", normalize=False)
    np.testing.assert_allclose(unnormalised, tiny_encoder.encode(texts[:2], role="query", normalize=False), atol=2e-5)


def test_export_fuses_attention_and_quantises_it_but_keeps_residual_layer_norms_apart(onnx_dir, tmp_path):
    # Given the exported graphs, Then ONNX Runtime's fused kernels replaced the per-op attention
    import onnx

    def op_types(path):
        return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}

    assert {"Attention", "EmbedLayerNormalization", "LayerNormalization"} <= op_types(onnx_dir.files["fp32"])
    # And the int8 graph quantises the fused attention too, with constant (calibrated) activation scales
    assert "QAttention" in op_types(onnx_dir.files["int8"])
    assert "QuantizeLinear" in op_types(onnx_dir.files["int8"]) and "DynamicQuantizeLinear" not in op_types(onnx_dir.files["int8"])
    # And neither the file nor the graph ONNX Runtime runs uses the slow SkipLayerNormalization kernel
    runtime_graph = tmp_path / "runtime.onnx"
    session_for(onnx_dir.files["int8"], runtime_graph=runtime_graph)
    assert "SkipLayerNormalization" not in op_types(onnx_dir.files["fp32"]) | op_types(runtime_graph)
    assert "LayerNormalization" in op_types(runtime_graph)


def test_int8_graph_is_default_and_close(tiny_encoder, onnx_dir, texts):
    # Given an export with --quantize int8, When loaded through the Encoder hook
    onnx = Encoder.load(onnx_dir.model_dir, backend="onnx")
    # Then it is the quantised graph, with the model's prompts and limits
    assert onnx.backend.file.name == INT8_FILE and onnx.dtype == "int8"
    assert onnx.prompts == tiny_encoder.prompts and onnx.max_length == tiny_encoder.max_length
    assert onnx.dimension == tiny_encoder.dimension
    manifest = json.loads((onnx_dir.model_dir / "onnx" / "e5kit_onnx.json").read_text())
    assert manifest["default"] == INT8_FILE and manifest["pooling"] == "mean"
    assert manifest["files"] == {FP32_FILE: "fp32", INT8_FILE: "int8"}
    # And the manifest states that the graph does not normalise (the cosine model's consumers do)
    assert manifest["normalized"] is False and manifest["similarity_fn_name"] == "cosine"
    # And it records how int8 was calibrated
    assert manifest["int8"]["batch_independent"] is True and manifest["int8"]["calibration"]["texts"] > 0
    # And its embeddings stay close to fp32 (a random 2-layer model quantises worse than a trained one)
    mean, _ = mean_cosine(tiny_encoder.encode(texts, role="passage"), onnx.encode(texts, role="passage"))
    assert mean > 0.95
    # And the quantised file is smaller than fp32
    assert onnx_dir.files["int8"].stat().st_size < onnx_dir.files["fp32"].stat().st_size


def test_onnx_backend_refuses_training_and_save(onnx_dir, tmp_path):
    onnx = Encoder.load(onnx_dir.model_dir, backend="onnx")
    with pytest.raises(TypeError, match="inference-only"):
        onnx.embed(onnx.tokenize(["cats"], role="query"))
    with pytest.raises(TypeError, match="export"):
        onnx.save(tmp_path / "copy")


def test_missing_export_and_bad_backend_are_named(tiny_bert_dir):
    with pytest.raises(ModelDirectoryError, match="e5kit export onnx"):
        Encoder.load(tiny_bert_dir, backend="onnx")
    with pytest.raises(ValueError, match="backend must be one of"):
        Encoder.load(tiny_bert_dir, backend="tensorrt")


def test_cli_export_prints_fidelity(tiny_bert_dir, tmp_path):
    # Given the tiny model, When exported fp32-only through the CLI
    result = CliRunner().invoke(app, ["export", "onnx", "--model", str(tiny_bert_dir), "--out", str(tmp_path / "m"), "--quantize", "none", "--check-texts", "16"])
    # Then it prints the cosine check and the loading hint
    assert result.exit_code == 0, result.output
    assert "cosine to torch fp32 over 16 texts: mean 1.00000" in result.output
    assert (tmp_path / "m" / "onnx" / FP32_FILE).is_file() and not (tmp_path / "m" / "onnx" / INT8_FILE).exists()


@pytest.mark.parametrize("backend", ["torch fp32", "onnx fp32", "onnx int8"])
def test_a_texts_vector_does_not_depend_on_its_batch(tiny_encoder, onnx_dir, texts, backend):
    # Given each backend and precision e5kit ships
    encoder = {
        "torch fp32": tiny_encoder,
        "onnx fp32": Encoder.load(onnx_dir.model_dir, backend="onnx", file_name=FP32_FILE),
        "onnx int8": Encoder.load(onnx_dir.model_dir, backend="onnx", file_name=INT8_FILE),
    }[backend]
    # And texts of very different lengths, so that the short ones are padded next to the long ones
    mixed = [texts[0], texts[-1], texts[3], " ".join(texts[4:7]), "cats"]
    # When each is embedded alone, and all in one forward pass (encode would cut batches to save padding)
    alone = np.concatenate([encoder.encode([text], role="passage") for text in mixed])
    batched = one_batch(encoder, mixed, "passage")
    # Then every text gets the same vector both ways (padding and neighbours do not leak in)
    _, worst = mean_cosine(alone, batched)
    assert worst >= 0.9999, f"{backend}: min cosine alone vs batched {worst:.6f}"
    # And a batch whose other members differ gives the first text the same vector again
    other = encoder.encode([mixed[0], " ".join(texts[1:5])], role="passage")
    assert mean_cosine(alone[:1], other[:1])[1] >= 0.9999


def test_int8_calibration_texts_set_the_scales(tiny_encoder, texts, tmp_path):
    from e5kit.encoder.onnx_backend import read_manifest
    from e5kit.export.onnx import export_onnx

    # Given two int8 exports calibrated on different texts
    narrow = export_onnx(tiny_encoder, tmp_path / "narrow", calibration=["cats"] * 2, calibration_source="cats.txt")
    wide = export_onnx(tiny_encoder, tmp_path / "wide", calibration=texts)
    # Then the manifest names each sample, and their int8 graphs differ (the scales come from the sample)
    assert read_manifest(narrow.model_dir)["int8"]["calibration"] == {"source": "cats.txt", "texts": 2}
    assert read_manifest(wide.model_dir)["int8"]["calibration"]["texts"] == len(texts)
    vectors = [Encoder.load(export.model_dir, backend="onnx").encode(texts, role="passage") for export in (narrow, wide)]
    assert not np.allclose(*vectors)
    # And no calibration texts is refused before anything is written
    with pytest.raises(ValueError, match="calibration text"):
        export_onnx(tiny_encoder, tmp_path / "none", calibration=[])
    assert not (tmp_path / "none").exists()


def test_cli_export_calibrates_on_a_file_and_prints_batch_independence(tiny_bert_dir, texts, tmp_path):
    # Given a JSONL calibration file
    calibration = tmp_path / "calibration.jsonl"
    calibration.write_text("\n".join(json.dumps({"title": "t", "text": text}) for text in texts) + "\n")
    # When the model is exported to int8 with it
    result = CliRunner().invoke(app, ["export", "onnx", "--model", str(tiny_bert_dir), "--out", str(tmp_path / "m"), "--calibration", str(calibration), "--check-texts", "16"])
    # Then the check prints both graphs' cosine to fp32 and alone-vs-batched cosine, and passes
    assert result.exit_code == 0, result.output
    assert result.output.count("cosine alone vs in one batch over 16 texts of spread lengths: min ") == 2
    assert json.loads((tmp_path / "m" / "onnx" / "e5kit_onnx.json").read_text())["int8"]["calibration"] == {"source": "calibration.jsonl", "texts": len(texts)}


def test_cli_export_names_an_unreadable_calibration_file(tiny_bert_dir, tmp_path):
    # Given a JSONL calibration file whose records have no text
    calibration = tmp_path / "bad.jsonl"
    calibration.write_text('{"body": "cats"}\n')
    # When exported with it, Then it fails with one line naming the file, before writing anything
    result = CliRunner().invoke(app, ["export", "onnx", "--model", str(tiny_bert_dir), "--out", str(tmp_path / "m"), "--calibration", str(calibration)])
    assert result.exit_code == 2
    assert str(calibration) in result.output and "'text'" in result.output
    assert not (tmp_path / "m").exists()


def _largest_int8_weight(path) -> int:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return max(int(np.abs(numpy_helper.to_array(tensor).astype(np.int32)).max()) for tensor in graph.initializer if tensor.data_type == onnx.TensorProto.INT8)


def test_int8_weights_keep_to_7_bits_on_a_cpu_without_vnni_and_loading_8_bits_there_warns(tiny_encoder, texts, tmp_path, monkeypatch, caplog):
    from e5kit.encoder import precision
    from e5kit.encoder.onnx_backend import read_manifest
    from e5kit.export.onnx import export_onnx

    # Given an AVX2-only CPU (the flag reader monkeypatched), When exported with the default range
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    seven = export_onnx(tiny_encoder, tmp_path / "seven", calibration=texts)
    # Then every int8 weight is within 7 bits, and the manifest says so
    assert _largest_int8_weight(seven.files["int8"]) <= 64
    assert read_manifest(seven.model_dir)["int8"]["reduce_range"] is True
    # When one is exported with 8-bit weights (as on a CPU with VNNI), Then they use the full range
    eight = export_onnx(tiny_encoder, tmp_path / "eight", calibration=texts, reduce_range=False)
    assert _largest_int8_weight(eight.files["int8"]) == 127 and read_manifest(eight.model_dir)["int8"]["reduce_range"] is False
    # And loading it on this CPU warns once, naming the file and the fix; the 7-bit one and fp32 load quietly
    with caplog.at_level("WARNING", logger="e5kit"):
        Encoder.load(seven.model_dir, backend="onnx")
        Encoder.load(eight.model_dir, backend="onnx", file_name=FP32_FILE)
        assert not caplog.records
        Encoder.load(eight.model_dir, backend="onnx")
    assert len(caplog.records) == 1 and str(eight.files["int8"]) in caplog.text and "--reduce-range" in caplog.text
    # And on a CPU with VNNI the default is 8 bits
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert read_manifest(export_onnx(tiny_encoder, tmp_path / "vnni", calibration=texts).model_dir)["int8"]["reduce_range"] is False
