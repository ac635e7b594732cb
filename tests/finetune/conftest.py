"""Fixtures for the fine-tuning tests: a tiny BEIR folder, a tiny cross-encoder, one torch thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

TOPICS = {
    "cell": "cell cells protein gene",
    "cancer": "cancer disease patients treatment",
    "python": "python file read write parse",
    "search": "search index embed vector text",
    "animals": "cat dog sat mat",
    "sky": "sun moon sky blue",
}


@pytest.fixture(autouse=True)
def _one_torch_thread(single_torch_thread):
    """Tiny-model steps here run on one intra-op thread (see tests/conftest.py)."""
    yield


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def build_beir(folder: Path, docs_per_topic: int = 6) -> Path:
    """A small BEIR folder: docs about 6 topics; each query is judged relevant to 2 docs of its topic."""
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for topic, words in TOPICS.items():
        for index in range(docs_per_topic):
            corpus.append({"_id": f"{topic}-{index}", "title": topic, "text": f"{words} {'the ' * index}data {index}"})
        for index in range(2):
            query_id = f"q-{topic}-{index}"
            queries.append({"_id": query_id, "text": f"what is {words.split()[index]} {topic}"})
            qrels += [f"{query_id}\t{topic}-{index}\t1", f"{query_id}\t{topic}-{index + 2}\t2"]
    write_jsonl(folder / "corpus.jsonl", corpus)
    write_jsonl(folder / "queries.jsonl", queries)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(name="beir_dir")
def beir_dir_fixture(tmp_path) -> Path:
    return build_beir(tmp_path / "beir")


@pytest.fixture(name="write_jsonl")
def write_jsonl_fixture():
    return write_jsonl


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    """A random 1-label BertForSequenceClassification sharing the tiny BERT's tokenizer and config."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    config = BertConfig.from_pretrained(tiny_bert_dir, num_labels=1)
    torch.manual_seed(1)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    return folder
