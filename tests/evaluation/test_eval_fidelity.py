"""Fidelity against published figures on ../shared data (skipped when it is absent).

BM25 SciFact and STS-B all-MiniLM-L6-v2 run in CI; the dense SciFact runs and the Banking77 /
20 Newsgroups runs take many CPU minutes and are marked slow (E5KIT_SLOW_TESTS=1).
"""

from __future__ import annotations

import pytest

from e5kit.evaluation.retrieval import evaluate_beir

pytestmark = pytest.mark.shared


def test_bm25_scifact_matches_bm25s_published_ndcg(shared_dir):
    # Given SciFact test, When BM25 (Lucene, k1=1.5, b=0.75, stemmed, stopwords) is evaluated
    metrics = evaluate_beir("bm25", shared_dir / "data" / "beir" / "scifact")
    # Then nDCG@10 is bm25s' published 68.7 +/- 0.5
    assert 100 * metrics["ndcg_at_10"] == pytest.approx(68.7, abs=0.5)


def test_minilm_stsb_matches_mteb(shared_dir):
    from e5kit.encoder import Encoder
    from e5kit.evaluation.sts import evaluate_sts

    outcome = evaluate_sts(Encoder.load("all-MiniLM-L6-v2", device="cpu"), shared_dir / "data" / "sts" / "stsb", batch_size=64)
    assert 100 * outcome.metrics["cosine_spearman"] == pytest.approx(82.0, abs=0.5)


@pytest.mark.slow
def test_minilm_scifact_matches_mteb(shared_dir):
    from e5kit.encoder import Encoder

    metrics = evaluate_beir(Encoder.load("all-MiniLM-L6-v2", device="cpu"), shared_dir / "data" / "beir" / "scifact")
    assert 100 * metrics["ndcg_at_10"] == pytest.approx(64.5, abs=0.5)


@pytest.mark.slow
def test_e5_small_q4dq_scifact_matches_sentence_transformers(shared_dir):
    from e5kit.encoder import Encoder

    model = Encoder.load(shared_dir / "models" / "multilingual-e5-small-enpt-q4dq", max_length=512, device="cpu")
    metrics = evaluate_beir(model, shared_dir / "data" / "beir" / "scifact")
    assert 100 * metrics["ndcg_at_10"] == pytest.approx(65.9, abs=0.5)


@pytest.mark.slow
def test_minilm_banking77_and_20newsgroups_run_end_to_end(shared_dir, capsys):
    from e5kit.encoder import Encoder
    from e5kit.evaluation.classification import evaluate_classification
    from e5kit.evaluation.clustering import evaluate_clustering

    model = Encoder.load("all-MiniLM-L6-v2", device="cpu")
    banking = evaluate_classification(model, shared_dir / "data" / "classification" / "banking77")
    newsgroups = evaluate_clustering(
        model, shared_dir / "data" / "clustering" / "twentynewsgroups", columns={"text": "subject"}
    )
    with capsys.disabled():
        print(f"\nBanking77 accuracy {100 * banking.metrics['accuracy']:.1f} (published 80.0); "
              f"20 Newsgroups V-measure {100 * newsgroups.metrics['v_measure']:.1f} (published 46.5)")
    # The local copies differ from MTEB's processed ones (README), so the recorded e5kit figures are pinned:
    # the classifier and k-means are seeded, so only floating-point noise between CPUs/BLAS builds moves
    # them (0.25 accuracy points; 0.5 V-measure points, as k-means can flip a few borderline subjects).
    assert 100 * banking.metrics["accuracy"] == pytest.approx(82.96, abs=0.25)
    assert 100 * newsgroups.metrics["v_measure"] == pytest.approx(44.1, abs=0.5)
