"""Fixtures for the evaluation tests: small generated BEIR folders (the tiny encoder comes from tests/conftest.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

TOPICS = {
    "cells": "cell cells protein gene genes",
    "cancer": "cancer disease patients treatment study",
    "python": "python file files read write parse",
    "search": "search index embed vector text",
    "animals": "cat dog sat mat",
    "sky": "sun moon sky blue",
}


def write_beir(folder: Path, docs_per_topic: int = 5, seed: int = 0) -> Path:
    """A BEIR folder: one query per topic (plus one without qrels), documents drawn from topic words."""
    rng = random.Random(seed)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, qrels = [], []
    for topic, words in TOPICS.items():
        vocabulary = words.split()
        for index in range(docs_per_topic):
            doc_id = f"{topic}-{index}"
            text = " ".join(rng.choice(vocabulary) for _ in range(8))
            corpus.append({"_id": doc_id, "title": f"{topic} {index}" if index % 2 else "", "text": text})
            qrels.append((f"q-{topic}", doc_id, 1 if index < 2 else 0))
    queries = [{"_id": f"q-{topic}", "text": f"what about {words.split()[0]} {words.split()[1]}"} for topic, words in TOPICS.items()]
    queries.append({"_id": "q-unjudged", "text": "a query without judgements"})
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    rows = "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows, encoding="utf-8")
    return folder


@pytest.fixture
def beir_dir(tmp_path) -> Path:
    return write_beir(tmp_path / "beir")
