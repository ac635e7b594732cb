"""sentence-transformers' ONNX backend on e5kit's export: its file layout, its output, its vectors.

``SentenceTransformer(path, backend="onnx")`` runs the graph through Optimum's
``ORTModelForFeatureExtraction``, which reads the ``last_hidden_state`` output and leaves pooling
and normalisation to the folder's modules. Optimum's ONNX Runtime package cannot be installed beside
transformers 5 (optimum-onnx 0.1.0 needs transformers < 4.58), so one test replaces only Optimum's
class with a stand-in doing what its ``forward`` does, and keeps everything else of
sentence-transformers, file lookup included; the test with the real Optimum skips when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from e5kit.encoder import Encoder
from e5kit.encoder.onnx_backend import FP32_FILE, INT8_FILE

SENTENCES = ["the cat sat on the mat", "how do cells divide", "python can read and write files " * 8]


class OptimumStandIn(torch.nn.Module):
    """What Optimum's ORTModelForFeatureExtraction.forward does: run the ONNX session on the inputs the
    graph declares (the tokenizer's token_type_ids are dropped when it declares none) and return
    ``last_hidden_state``."""

    def __init__(self, path: Path, config) -> None:
        super().__init__()
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.config = config

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, return_dict=True, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput

        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feeds = {name: given[name].numpy() for name in self.input_names}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))


@pytest.fixture()
def without_optimum(monkeypatch):
    """sentence-transformers' ONNX loading with its own file lookup, and the stand-in for Optimum's class."""
    from sentence_transformers.backend.utils import backend_should_export
    from sentence_transformers.base.modules import transformer

    def load_onnx_model(model_name_or_path, config, task_name, **model_kwargs):
        assert task_name == "feature-extraction"
        # The lookup sentence-transformers does before calling Optimum ("model.onnx" is Optimum's default name)
        export, model_kwargs = backend_should_export(Path(model_name_or_path), True, model_kwargs, "model.onnx", "*.onnx", "ONNX")
        assert not export, "sentence-transformers found no ONNX file and would export one itself"
        return OptimumStandIn(Path(model_name_or_path, model_kwargs.get("subfolder", ""), model_kwargs["file_name"]), config)

    monkeypatch.setattr(transformer, "load_onnx_model", load_onnx_model)


def check_st_onnx_matches_e5kit(model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    # When sentence-transformers loads the export with backend="onnx", by default and naming the int8 file
    for file_name in (FP32_FILE, INT8_FILE):
        model_kwargs = {} if file_name == FP32_FILE else {"file_name": INT8_FILE}
        st_model = SentenceTransformer(str(model_dir), backend="onnx", device="cpu", model_kwargs=model_kwargs)
        e5 = Encoder.load(model_dir, backend="onnx", file_name=file_name)
        # Then its role methods give e5kit's ONNX vectors for the same file: prefixes, pooling, normalisation
        np.testing.assert_allclose(st_model.encode_query(SENTENCES), e5.encode_queries(SENTENCES), atol=1e-5)
        np.testing.assert_allclose(st_model.encode_document(SENTENCES), e5.encode_passages(SENTENCES), atol=1e-5)


def test_sentence_transformers_onnx_backend_reads_the_export(onnx_dir, without_optimum):
    # Given an e5kit export with fp32 and int8 graphs in sentence-transformers' layout
    assert sorted(path.name for path in (onnx_dir.model_dir / "onnx").glob("*.onnx")) == sorted([FP32_FILE, INT8_FILE])
    check_st_onnx_matches_e5kit(onnx_dir.model_dir)


def test_sentence_transformers_onnx_backend_with_the_real_optimum(onnx_dir):
    pytest.importorskip("optimum.onnxruntime", reason="Optimum's ONNX Runtime package (sentence-transformers[onnx]) is not installed")
    check_st_onnx_matches_e5kit(onnx_dir.model_dir)


def test_a_dot_model_export_keeps_raw_vectors_in_both(tiny_unnormalized_dir, tmp_path, without_optimum):
    from sentence_transformers import SentenceTransformer

    from e5kit.encoder.onnx_backend import read_manifest
    from e5kit.export.onnx import export_onnx

    # Given a model scored by dot product (no Normalize module, no prompts), exported fp32-only
    encoder = Encoder.load(tiny_unnormalized_dir, device="cpu", similarity_fn_name="dot")
    exported = export_onnx(encoder, tmp_path / "m", quantize="none")
    # Then the manifest says the graph does not normalise, and for which similarity
    manifest = read_manifest(exported.model_dir)
    assert manifest["normalized"] is False and manifest["similarity_fn_name"] == "dot"
    assert set(manifest["outputs"]) == {"last_hidden_state", "sentence_embedding"}
    # And sentence-transformers' ONNX backend and e5kit's give the same raw (not unit) vectors
    st_vectors = SentenceTransformer(str(exported.model_dir), backend="onnx", device="cpu").encode(SENTENCES)
    e5_vectors = Encoder.load(exported.model_dir, backend="onnx").encode(SENTENCES)
    np.testing.assert_allclose(st_vectors, e5_vectors, atol=1e-5)
    np.testing.assert_allclose(e5_vectors, encoder.encode(SENTENCES), atol=2e-5)
    assert not np.allclose(np.linalg.norm(e5_vectors, axis=1), 1.0, atol=1e-3)
