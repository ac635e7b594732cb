"""Evaluation and the index score with the model's declared similarity, cosine by default (issue 12, item 2).

A model without a Normalize module used to be scored by raw dot product in `e5kit eval` (67.05 vs
mteb's 65.80 nDCG@10 seen); sentence-transformers and mteb score it by cosine.
"""

from __future__ import annotations

import pytest

from e5kit.encoder import Encoder
from e5kit.evaluation.retrieval import evaluate_beir
from e5kit.io.beir import document_text, load_beir


def sentence_transformers_ndcg_at_10(model_dir, data_dir, batch_size: int = 32) -> float:
    """nDCG@10 of sentence-transformers' InformationRetrievalEvaluator on a BEIR folder (no prefixes)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    data = load_beir(data_dir)
    relevant = {qid: {doc for doc, score in docs.items() if score > 0} for qid, docs in data.qrels.items()}
    evaluator = InformationRetrievalEvaluator(
        queries={qid: data.queries[qid] for qid in relevant},
        corpus={doc_id: document_text(doc) for doc_id, doc in data.corpus.items()},
        relevant_docs=relevant,
        ndcg_at_k=[10],
        batch_size=batch_size,
        show_progress_bar=False,
        write_csv=False,
    )
    model = SentenceTransformer(str(model_dir), device="cpu")
    results = evaluator(model)
    (key,) = [name for name in results if name.endswith("ndcg@10")]
    return 100 * results[key]


def test_model_without_normalize_scores_like_sentence_transformers(tiny_unnormalized_dir, beir_dir):
    # Given a model without a Normalize module (no declared similarity: cosine) and a BEIR folder
    encoder = Encoder.load(tiny_unnormalized_dir, device="cpu")
    # When e5kit and sentence-transformers' InformationRetrievalEvaluator evaluate it
    ours = 100 * evaluate_beir(encoder, beir_dir)["ndcg_at_10"]
    reference = sentence_transformers_ndcg_at_10(tiny_unnormalized_dir, beir_dir)
    # Then nDCG@10 agrees, and differs from ranking by raw dot products
    assert ours == pytest.approx(reference, abs=1e-6)
    raw = Encoder.load(tiny_unnormalized_dir, device="cpu", similarity_fn_name="dot")
    assert abs(100 * evaluate_beir(raw, beir_dir)["ndcg_at_10"] - ours) > 0.01


def test_index_search_scores_are_cosines_for_a_model_without_normalize(tiny_unnormalized_dir, tmp_path):
    import numpy as np

    from e5kit.serving.index import Document, IndexSettings, VectorIndex

    # Given an index built with a model without a Normalize module
    encoder = Encoder.load(tiny_unnormalized_dir, device="cpu")
    texts = ["the cat sat on the mat", "python file read write", "cancer study patients"]
    index = VectorIndex.create(tmp_path / "idx", encoder, IndexSettings(), model=str(tiny_unnormalized_dir))
    index.add([Document(str(i), text) for i, text in enumerate(texts)])
    # When it is searched
    (hits,) = index.search(["cat on a mat"], k=3)
    assert len(hits) == 3
    # Then every score is the cosine of the raw embeddings (what sentence-transformers' similarity gives)
    raw_query = encoder.encode(["cat on a mat"], normalize=False)[0]
    raw_docs = encoder.encode(texts, normalize=False)
    cosines = raw_docs @ raw_query / (np.linalg.norm(raw_docs, axis=1) * np.linalg.norm(raw_query))
    for hit in hits:
        assert hit.score == pytest.approx(float(cosines[int(hit.doc_id)]), abs=1e-5)


@pytest.mark.shared
@pytest.mark.slow
def test_paraphrase_minilm_scifact_equals_sentence_transformers(shared_dir):
    # Given paraphrase-MiniLM-L3-v2 (no Normalize module) and SciFact
    model_dir = shared_dir / "models" / "paraphrase-MiniLM-L3-v2"
    scifact = shared_dir / "data" / "beir" / "scifact"
    # When e5kit and sentence-transformers' InformationRetrievalEvaluator evaluate it
    ours = 100 * evaluate_beir(Encoder.load(model_dir, device="cpu"), scifact, batch_size=64)["ndcg_at_10"]
    reference = sentence_transformers_ndcg_at_10(model_dir, scifact, batch_size=64)
    print(f"\nSciFact nDCG@10, paraphrase-MiniLM-L3-v2: e5kit {ours:.2f}, sentence-transformers {reference:.2f}")
    # Then they agree within 0.1 nDCG@10
    assert ours == pytest.approx(reference, abs=0.1)


def test_an_index_reopens_with_the_similarity_it_was_built_for(tiny_unnormalized_dir, tmp_path):
    import json

    from e5kit.serving.index import Document, IndexSettings, IndexStoreError, VectorIndex

    # Given an index built from a model without Normalize asked to score by raw dot products
    dot = Encoder.load(tiny_unnormalized_dir, device="cpu", similarity_fn_name="dot")
    index = VectorIndex.create(tmp_path / "idx", dot, IndexSettings(), model=str(tiny_unnormalized_dir))
    index.add([Document("a", "the cat sat on the mat")])
    index.close()
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["similarity_fn_name"] == "dot"
    # When it is reopened by path, Then its model is loaded with that similarity (the folder itself declares cosine)
    reopened = VectorIndex.open(tmp_path / "idx")
    assert reopened.encoder.similarity_fn_name == "dot"
    reopened.close()
    # And an encoder scoring otherwise is refused by name
    with pytest.raises(IndexStoreError, match="vectors for dot similarity but the encoder scores by cosine"):
        VectorIndex.open(tmp_path / "idx", encoder=Encoder.load(tiny_unnormalized_dir, device="cpu"))
