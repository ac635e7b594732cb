"""Evaluation on an ONNX export: the same scores as torch, its own cache key, and `--backend onnx` in the CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.encoder import Encoder
from e5kit.evaluation.cache import weights_hash
from e5kit.evaluation.config import RetrievalConfig
from e5kit.evaluation.runner import run_task

#: fp32 ONNX Runtime against torch fp32 on the tiny model: embeddings agree to ~1e-6, so scores to well within this.
SCORE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def fp32_export(tiny_bert_dir, tmp_path_factory):
    """The tiny model exported with its fp32 graph only (the default file of the export)."""
    from e5kit.export.onnx import export_onnx

    return export_onnx(Encoder.load(tiny_bert_dir, device="cpu"), tmp_path_factory.mktemp("tiny-onnx-fp32"), quantize="none")


def old_weights_hash(encoder) -> str:
    """``evaluation.cache.weights_hash`` as it was before backends: what existing caches and results key on."""
    digest = hashlib.sha256(f"pooling={encoder.pooling}".encode())
    for name, tensor in encoder.model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_torch_fingerprint_is_the_old_weights_hash(tiny_encoder):
    assert tiny_encoder.fingerprint() == weights_hash(tiny_encoder) == old_weights_hash(tiny_encoder)


def test_run_task_on_onnx_gives_torch_scores_and_uses_the_cache(tmp_path, beir_dir, tiny_bert_dir, fp32_export):
    # Given one cache folder shared by a torch and an ONNX evaluation of the same weights
    def config(model):
        return RetrievalConfig(models=[str(model)], data=beir_dir, results_dir=tmp_path / "results", cache_dir=tmp_path / "cache")

    def onnx_loader(name):
        return Encoder.load(name, backend="onnx")

    # When retrieval is evaluated on torch, then on the ONNX export (twice)
    [(torch_result, _)] = run_task("retrieval", config(tiny_bert_dir), lambda name: Encoder.load(name, device="cpu"))
    [(onnx_result, onnx_file)] = run_task("retrieval", config(fp32_export.model_dir), onnx_loader)
    [(again, _)] = run_task("retrieval", config(fp32_export.model_dir), onnx_loader)
    # Then the ONNX scores are torch's within fp32 tolerance
    assert set(onnx_result.metrics) == set(torch_result.metrics)
    for name, value in torch_result.metrics.items():
        assert onnx_result.metrics[name] == pytest.approx(value, abs=SCORE_TOLERANCE), name
    # And the ONNX run is keyed on its graph file's hash, not on the torch weights (no vectors shared)
    assert onnx_result.weights_hash != torch_result.weights_hash and len(onnx_result.weights_hash) == 64
    graph = (fp32_export.model_dir / "onnx" / "model.onnx").read_bytes()
    assert onnx_result.weights_hash == hashlib.sha256(b"onnx:" + graph).hexdigest()
    assert onnx_result.details["cache"]["embedded"] == torch_result.details["cache"]["embedded"] > 0
    assert onnx_result.details["backend"] == {"name": "onnx", "file": "model.onnx"} and "backend" not in torch_result.details
    # And a second ONNX run reads everything from the cache, with identical scores
    assert again.details["cache"]["embedded"] == 0 and again.metrics == onnx_result.metrics
    assert json.loads(onnx_file.read_text())["weights_hash"] == onnx_result.weights_hash


def test_mteb_adapter_takes_an_onnx_encoder(fp32_export):
    from e5kit.evaluation.mteb_adapter import MTEBEncoder

    onnx = Encoder.load(fp32_export.model_dir, backend="onnx")
    model = MTEBEncoder(onnx)
    assert model.revision == onnx.fingerprint()[:12]
    assert model.mteb_model_meta.framework == ["ONNX"]


def test_cli_eval_and_encode_take_backend_onnx(tmp_path, beir_dir, tiny_bert_dir, fp32_export):
    runner = CliRunner()
    # When `e5kit eval retrieval --backend onnx` runs on the export
    outcome = runner.invoke(app, ["eval", "retrieval", "--model", str(fp32_export.model_dir), "--backend", "onnx", "--data", str(beir_dir),
                                  "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")])
    # Then it scores and records the backend
    assert outcome.exit_code == 0, outcome.output
    [result] = [json.loads(path.read_text()) for path in (tmp_path / "results").glob("*.json")]
    assert result["details"]["backend"]["name"] == "onnx" and result["metrics"]["ndcg_at_10"] > 0
    # When `e5kit encode --backend onnx` embeds a file
    texts = tmp_path / "texts.txt"
    texts.write_text("how do cells divide\nthe cat sat on the mat\n", encoding="utf-8")
    out = tmp_path / "vectors.npy"
    outcome = runner.invoke(app, ["encode", "-m", str(fp32_export.model_dir), "--backend", "onnx", "-r", "passage", "-i", str(texts), "-o", str(out)])
    # Then its vectors are torch's
    assert outcome.exit_code == 0, outcome.output
    expected = Encoder.load(tiny_bert_dir, device="cpu").encode(["how do cells divide", "the cat sat on the mat"], role="passage")
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)
