"""EncoderSpec.of: another process (a Ray actor) loads exactly the backend, file and precision this one runs,
not the export's defaults (an index built on a non-default file used to give its actors the default one)."""

from __future__ import annotations

import numpy as np
import pytest

from e5kit.encoder import Encoder
from e5kit.encoder.onnx_backend import FP32_FILE
from e5kit.retrieval.engines import EncoderSpec

TEXTS = ["how do cells divide", "the cat sat on the mat"]


def test_an_onnx_encoder_on_its_fp32_graph_is_loaded_on_that_graph(onnx_dir):
    model_dir = onnx_dir.model_dir
    # Given an ONNX export whose default is int8, loaded on its fp32 graph
    encoder = Encoder.load(model_dir, backend="onnx", file_name=FP32_FILE)
    # When a spec is made of it and loaded as a worker would
    spec = EncoderSpec.of(encoder, str(model_dir), max_length=64)
    worker = spec.load()
    # Then the worker runs the same file (not the int8 default) and embeds the same vectors
    assert (spec.backend, spec.file_name, spec.max_length) == ("onnx", FP32_FILE, 64)
    assert worker.backend.file == encoder.backend.file and worker.backend.dtype == "float32"
    np.testing.assert_array_equal(worker.encode(TEXTS, role="passage"), Encoder.load(model_dir, backend="onnx", file_name=FP32_FILE, max_length=64).encode(TEXTS, role="passage"))


def test_a_torch_encoder_keeps_its_precision(tiny_bert_dir):
    # Given a torch encoder at bfloat16
    encoder = Encoder.load(tiny_bert_dir, dtype="bfloat16", device="cpu")
    # When a spec is made of it, Then the worker loads bfloat16 too
    spec = EncoderSpec.of(encoder, str(tiny_bert_dir))
    assert (spec.backend, spec.dtype, spec.file_name) == ("torch", "bfloat16", None)
    assert spec.load().backend.dtype == "bfloat16"


def test_openvino_on_an_onnx_folder_names_no_ir(onnx_dir):
    model_dir = onnx_dir.model_dir
    pytest.importorskip("openvino")
    # Given OpenVINO reading an ONNX export's fp32 graph (the folder has no IR) at float32
    encoder = Encoder.load(model_dir, backend="openvino", dtype="float32")
    # When a spec is made of it, Then it names no IR file (there is none to name) and the precision run
    spec = EncoderSpec.of(encoder, str(model_dir))
    assert (spec.backend, spec.file_name, spec.dtype) == ("openvino", None, "float32")
    np.testing.assert_allclose(spec.load().encode(TEXTS, role="passage"), encoder.encode(TEXTS, role="passage"), atol=1e-6)
