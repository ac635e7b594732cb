"""Fixtures for the serving tests: the tiny model as an Encoder, its ONNX export, a small corpus."""

from __future__ import annotations

import pytest

from e5kit.encoder import Encoder

SENTENCES = [
    "the cat sat on the mat",
    "cells divide and genes change in cancer",
    "python can read and write files",
    "the sun and the moon in a blue sky",
    "a new study of protein and disease in patients",
    "search the index to find the vector of a text",
    "a big dog and a small cat",
    "how does the treatment effect the results of the study",
]


def long_text(words: int, offset: int = 0) -> str:
    """A document of ``words`` words drawn from the sentences, long enough to need several chunks."""
    pool = " ".join(SENTENCES).split()
    return " ".join(pool[(offset + i) % len(pool)] for i in range(words))


@pytest.fixture(scope="session")
def texts() -> list[str]:
    """The sentences plus one text longer than the tiny model's 64-token limit."""
    return SENTENCES + [long_text(200)]


@pytest.fixture(scope="session")
def tiny_encoder(tiny_bert_dir) -> Encoder:
    return Encoder.load(tiny_bert_dir, device="cpu")


@pytest.fixture(scope="session")
def onnx_dir(tiny_encoder, tmp_path_factory):
    """The tiny model exported with fp32 and int8 ONNX graphs."""
    from e5kit.serving.onnx import export_onnx

    return export_onnx(tiny_encoder, tmp_path_factory.mktemp("tiny-onnx"), quantize="int8")


@pytest.fixture()
def corpus() -> list:
    from e5kit.serving.index import Document

    documents = [Document(f"s{i}", text) for i, text in enumerate(SENTENCES)]
    documents += [Document(f"long{i}", long_text(150, offset=i * 7), title=f"long document {i}") for i in range(3)]
    return documents
