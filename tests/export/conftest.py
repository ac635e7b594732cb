"""Fixtures for the export tests: the tiny model's ONNX export (the tiny model as an Encoder and ``texts``
come from tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def onnx_dir(tiny_encoder, tmp_path_factory):
    """The tiny model exported with fp32 and int8 ONNX graphs."""
    from e5kit.export.onnx import export_onnx

    return export_onnx(tiny_encoder, tmp_path_factory.mktemp("tiny-onnx"), quantize="int8")
