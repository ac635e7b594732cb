"""``model_meta.json`` of ``e5kit eval ... --mteb-results``: the encoder's dimension and similarity, read by mteb's ModelMeta."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.encoder import Encoder

runner = CliRunner()


def test_model_meta_names_each_models_dimension_and_similarity(tiny_bert_dir, beir_dir, tmp_path):
    pytest.importorskip("mteb")
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    # Given a model that declares no similarity (so cosine), one saved with "dot", and BM25
    dot_model = Encoder.load(tiny_bert_dir, similarity_fn_name="dot", device="cpu").save(tmp_path / "dot-model")
    # When they are evaluated with --mteb-results
    folder = tmp_path / "mteb"
    outcome = runner.invoke(app, ["eval", "retrieval", "--model", str(tiny_bert_dir), "--model", str(dot_model), "--model", "bm25",
                                  "--data", str(beir_dir), "--results-dir", str(tmp_path / "results"), "--no-cache", "--mteb-results", str(folder)])
    assert outcome.exit_code == 0, outcome.output
    # Then mteb's ModelMeta reads each model_meta.json with the encoder's width and scoring function
    metas = {}
    for path in (folder / "results").glob("*/*/model_meta.json"):
        meta = ModelMeta.model_validate(json.loads(path.read_text()))
        metas[meta.name] = (meta.embed_dim, meta.similarity_fn_name)
    assert metas == {
        f"e5kit/{tiny_bert_dir.name}": (32, ScoringFunction.COSINE),
        "e5kit/dot-model": (32, ScoringFunction.DOT_PRODUCT),
        "e5kit/bm25": (None, None),
    }
