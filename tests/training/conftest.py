"""Fixtures for the training tests: a tiny encoder in train mode and small pair shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

WORDS = "cell protein gene cancer disease patients study effect treatment python file data model text search index vector cat dog sun moon sky".split()


@pytest.fixture(autouse=True)
def _one_torch_thread(single_torch_thread):
    """Tiny-model steps here run on one intra-op thread (see tests/conftest.py)."""
    yield


def make_pairs(count: int, seed: int = 0, source: str | None = None) -> list[dict]:
    """Short synthetic (query, passage) pairs built from the tiny tokenizer's vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for index in range(count):
        picks = torch.randint(len(WORDS), (7,), generator=generator).tolist()
        query = " ".join(WORDS[i] for i in picks[:2 + index % 3])
        passage = f"{query} " + " ".join(WORDS[i] for i in picks[2:]) + f" {index}"
        record = {"query": query, "passage": passage}
        if source is not None:
            record["source"] = source
        pairs.append(record)
    return pairs


def write_parquet(path: Path, records: list[dict], row_group_size: int = 16) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "query": [r["query"] for r in records],
            "passage": [r["passage"] for r in records],
            "source": [r.get("source", "unknown") for r in records],
            "meta": [json.dumps({"row": i}) for i in range(len(records))],
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def tiny_encoder(model_dir: Path, dropout: bool = False):
    """The tiny BERT as a training encoder (train mode); dropout off makes gradients deterministic."""
    from e5kit.encoder import Encoder

    encoder = Encoder.load(model_dir, device="cpu")
    encoder.model.train()
    if not dropout:
        for module in encoder.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return encoder


@pytest.fixture(name="make_pairs")
def make_pairs_fixture():
    return make_pairs


@pytest.fixture(name="write_parquet")
def write_parquet_fixture():
    return write_parquet


@pytest.fixture(name="tiny_encoder")
def tiny_encoder_fixture(tiny_bert_dir):
    """Factory: ``tiny_encoder(dropout=False)`` gives a fresh tiny training encoder."""
    return lambda dropout=False: tiny_encoder(tiny_bert_dir, dropout)
