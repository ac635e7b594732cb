"""Headline check: fine-tuning paraphrase-MiniLM-L3-v2 on SciFact train qrels with mined hard negatives raises test nDCG@10."""

from __future__ import annotations

import json

import pytest

SETTINGS = {
    "batch_size": 32,
    "chunk_size": 32,
    "hard_negatives": 3,
    "epochs": 2,
    "lr": 5e-5,
    "warmup_steps": 5,
    "query_max_length": 64,
    "passage_max_length": 128,
    "checkpoint_every": 0,
}


@pytest.mark.slow
@pytest.mark.shared
def test_finetuning_on_scifact_train_raises_test_ndcg(shared_dir, tmp_path):
    from e5kit.data.mining import MiningConfig, mine_hard_negatives
    from e5kit.encoder import Encoder
    from e5kit.evaluation.retrieval import evaluate_beir
    from e5kit.training.finetune import finetune

    scifact = shared_dir / "data" / "beir" / "scifact"
    model = shared_dir / "models" / "paraphrase-MiniLM-L3-v2"
    # Given the model's SciFact test nDCG@10 (cosine, as sentence-transformers scores a model without Normalize)
    before = evaluate_beir(Encoder.load(model), scifact)["ndcg_at_10"]
    # When BM25 hard negatives are mined for the 809 train queries and the model is fine-tuned on them
    mined = tmp_path / "mined.jsonl"
    report = mine_hard_negatives(
        MiningConfig(negatives=7, depth=100, margin=0.0),
        scifact / "queries.jsonl.gz", scifact / "corpus.jsonl.gz", scifact / "qrels" / "train.tsv", mined,
    )
    final = finetune(
        {"init_model": str(model), "output_dir": str(tmp_path / "run"), "data": {"datasets": [{"name": "scifact", "format": "flag", "path": str(mined)}]}, **SETTINGS},
        show_progress=False,
    )
    after = evaluate_beir(Encoder.load(final), scifact)["ndcg_at_10"]
    print(json.dumps({"before": before, "after": after, "mined_queries": report["queries"], "settings": SETTINGS}))
    # Then test nDCG@10 rises by at least 3 points over the model as it was
    assert report["queries"] == 809
    assert after >= before + 0.03
