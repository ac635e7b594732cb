"""MTEB-style tasks on small generated files, against naive re-computations."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from scipy.stats import spearmanr

from e5kit.evaluation.classification import evaluate_classification, undersample
from e5kit.evaluation.clustering import evaluate_clustering
from e5kit.evaluation.pair_classification import best_threshold_scores, evaluate_pair_classification
from e5kit.evaluation.reranking import evaluate_reranking
from e5kit.evaluation.sts import evaluate_sts
from e5kit.io.files import InputFormatError


class TopicModel:
    """A fake encoder: a text's vector is its topic's direction plus seeded noise; records each call."""

    def __init__(self, noise: float = 0.1, dim: int = 8):
        self.noise, self.dim, self.calls = noise, dim, []

    def encode(self, texts, role=None, batch_size=32, normalize=None, show_progress=None):
        self.calls.append({"role": role, "normalize": normalize, "count": len(texts)})
        vectors = []
        for text in texts:
            topic = int(text.split()[0].removeprefix("topic"))
            rng = np.random.default_rng(zlib.crc32(text.encode()))
            base = np.eye(self.dim)[topic % self.dim]
            vectors.append(base + self.noise * rng.normal(size=self.dim))
        return np.array(vectors, dtype=np.float32).reshape(len(texts), self.dim)


def write_tsv(path, header, rows):
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_sts_equals_spearman_of_naive_cosines(tmp_path, tiny_encoder):
    # Given an STS file with graded pairs
    rows = [("x", f"the cell {i}", f"a gene {i % 3}", i / 2) for i in range(12)]
    write_tsv(tmp_path / "test.tsv", ("genre", "sentence1", "sentence2", "score"), rows)
    # When evaluated with the tiny E5-prompted encoder
    outcome = evaluate_sts(tiny_encoder, tmp_path)
    # Then it equals Spearman of cosines embedded with "query: " on both sides
    a = tiny_encoder.encode([r[1] for r in rows], role="query")
    b = tiny_encoder.encode([r[2] for r in rows], role="query")
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert outcome.metrics["cosine_spearman"] == pytest.approx(spearmanr([r[3] for r in rows], cosines).statistic)
    assert outcome.details == {"pairs": 12}


def test_sts_bad_score_names_line(tmp_path, tiny_encoder):
    write_tsv(tmp_path / "test.tsv", ("sentence1", "sentence2", "score"), [("a", "b", "1"), ("c", "d", "high")])
    with pytest.raises(InputFormatError, match=r"test.tsv:3: score 'high' is not a number"):
        evaluate_sts(tiny_encoder, tmp_path)


@pytest.mark.parametrize("score", ["inf", "NaN", "1e400"])
def test_sts_score_out_of_range_names_line(tmp_path, tiny_encoder, score):
    # Given a gold score that is not a finite number; when evaluated, then the error names file, line and value
    write_tsv(tmp_path / "test.tsv", ("sentence1", "sentence2", "score"), [("a", "b", "1"), ("c", "d", score)])
    with pytest.raises(InputFormatError, match=rf"test.tsv:3: score '{score}' is not a finite number"):
        evaluate_sts(tiny_encoder, tmp_path)


def test_sts_text_without_visible_text_names_file_and_line(tmp_path, tiny_encoder):
    # Given an STS file whose second pair's first sentence is a zero-width space only
    write_tsv(tmp_path / "test.tsv", ("sentence1", "sentence2", "score"), [("a", "b", "1"), ("\u200b", "d", "2")])
    # Then reading it fails before any embedding, naming the file, line and field
    with pytest.raises(InputFormatError, match=r"test.tsv:3: field 'sentence1' has no visible text"):
        evaluate_sts(tiny_encoder, tmp_path)


def test_best_threshold_scores_equal_brute_force():
    # Given scores with ties and labels
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 6, 40).astype(float), rng.integers(0, 2, 40)
    # When the best accuracy / F1 is searched, Then it equals trying every threshold
    accuracy = max(((scores >= t) == labels).mean() for t in [*np.unique(scores), np.inf])
    f1 = max(
        2 * ((scores >= t) & (labels == 1)).sum() / ((scores >= t).sum() + labels.sum()) for t in np.unique(scores)
    )
    assert best_threshold_scores(scores, labels) == pytest.approx({"accuracy": accuracy, "f1": f1})


def test_pair_classification_separable_pairs_score_one(tmp_path):
    # Given paraphrases on the same topic (label 1) and pairs across topics (label 0)
    rows = [(1, f"topic{i} a", f"topic{i} b") for i in range(4)] + [(0, f"topic{i} a", f"topic{i + 4} c") for i in range(4)]
    write_tsv(tmp_path / "test.tsv", ("label", "sentence1", "sentence2"), rows)
    # When evaluated, Then AP, accuracy and F1 are perfect, with the E5 symmetric role on both sides
    model = TopicModel()
    outcome = evaluate_pair_classification(model, tmp_path)
    assert outcome.metrics == pytest.approx({"ap": 1.0, "accuracy": 1.0, "f1": 1.0})
    assert [call["role"] for call in model.calls] == ["query", "query"]


def test_pair_classification_rejects_bad_labels(tmp_path):
    write_tsv(tmp_path / "test.tsv", ("label", "sentence1", "sentence2"), [(1, "topic1 a", "topic1 b"), ("yes", "topic1", "topic2")])
    with pytest.raises(InputFormatError, match=r"test.tsv:3: label 'yes' is not 0 or 1"):
        evaluate_pair_classification(TopicModel(), tmp_path)


def write_labelled(folder, split, per_label, labels=4):
    rows = [(f"topic{label} example {i}", f"L{label}") for label in range(labels) for i in range(per_label)]
    return write_tsv(folder / f"{split}.tsv", ("text", "label"), rows)


def test_classification_trains_on_unnormalised_undersampled_features(tmp_path):
    # Given separable train/test splits with 4 labels
    write_labelled(tmp_path, "train", 20)
    write_labelled(tmp_path, "test", 5)
    model = TopicModel(noise=0.2)
    # When classified MTEB-style (3 runs of 8 examples per label)
    outcome = evaluate_classification(model, tmp_path, samples_per_label=8, experiments=3)
    # Then accuracy is perfect and features were requested unnormalised, in the query role
    assert outcome.metrics["accuracy"] == 1.0 and outcome.details["experiments"] == 3
    assert all(call["normalize"] is False and call["role"] == "query" for call in model.calls)
    # And the training side only embeds the examples some run uses
    assert model.calls[0]["count"] <= 80


def test_undersample_takes_n_per_label_and_reshuffles_each_run():
    # Given labels with 10 examples each
    labels = [f"L{i % 3}" for i in range(30)]
    order = list(range(30))
    # When undersampled twice from the same carried-over order
    first, second = undersample(labels, 4, order, 42), undersample(labels, 4, order, 42)
    # Then each run holds 4 per label, and the runs differ (the order keeps shuffling)
    for run in (first, second):
        assert sorted(labels[i] for i in run) == sorted(["L0", "L1", "L2"] * 4)
    assert first != second


def test_clustering_separable_topics_give_v_measure_one_and_count_empty_texts(tmp_path):
    # Given a JSONL file with 3 topics and one record with an empty subject
    records = [{"subject": f"topic{t} post {i}", "label": f"g{t}"} for t in range(3) for i in range(10)]
    records.append({"subject": "", "label": "g0"})
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    # When clustered on the subject field with 3 seeds
    outcome = evaluate_clustering(TopicModel(), tmp_path, columns={"text": "subject"}, seeds=3)
    # Then the V-measure is perfect and the empty record is skipped, counted
    assert outcome.metrics["v_measure"] == pytest.approx(1.0)
    assert outcome.details["skipped"] == {"empty subject": 1} and outcome.details["texts"] == 30


def test_reranking_map_equals_naive_average_precision(tmp_path):
    # Given queries with positives and negatives (one candidate off-topic positive), and one without positives
    records = [
        {"query": "topic1 q", "positive": ["topic1 a", "topic3 odd"], "negative": ["topic2 x", "topic1 near"]},
        {"query": "topic2 q", "positive": ["topic2 a"], "negative": ["topic4 y", "topic2 z"]},
        {"query": "topic3 q", "positive": [], "negative": ["topic1 x"]},
    ]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    model = TopicModel(noise=0.3)
    # When reranked
    outcome = evaluate_reranking(model, tmp_path)

    # Then MAP and MRR@10 equal ranking each query's candidates by cosine by hand
    def cosine(a, b):
        va, vb = model.encode([a])[0], model.encode([b])[0]
        return float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb))

    average_precisions, reciprocal_ranks = [], []
    for record in records[:2]:
        candidates = [(c, 1) for c in record["positive"]] + [(c, 0) for c in record["negative"]]
        ranked = [rel for _, rel in sorted(candidates, key=lambda c: -cosine(record["query"], c[0]))]
        hits = [i for i, rel in enumerate(ranked) if rel]
        average_precisions.append(np.mean([(k + 1) / (i + 1) for k, i in enumerate(hits)]))
        reciprocal_ranks.append(1 / (hits[0] + 1))
    assert outcome.metrics["map"] == pytest.approx(np.mean(average_precisions))
    assert outcome.metrics["mrr_at_10"] == pytest.approx(np.mean(reciprocal_ranks))
    assert outcome.details["skipped"] == {"no positive": 1, "no negative": 0}
    assert outcome.details["queries"] == 2
