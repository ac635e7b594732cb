"""The mteb adapter under the real mteb package, on mteb's own in-memory mock tasks (no download)."""

from __future__ import annotations

import numpy as np
import pytest

from e5kit.evaluation.mteb_adapter import MTEBEncoder

mteb = pytest.importorskip("mteb")


class RecordingEncoder:
    """The tiny encoder, recording the role of every encode call."""

    def __init__(self, encoder):
        self.encoder, self.roles = encoder, []

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode(self, texts, role=None, **kwargs):
        self.roles.append(role)
        return self.encoder.encode(texts, role=role, **kwargs)


def test_mteb_runs_an_e5kit_model_with_e5_roles(tiny_encoder):
    from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
    from mteb.mocks.mock_tasks.sts import MockSTSTask

    # Given an e5kit model wrapped for mteb
    recording = RecordingEncoder(tiny_encoder)
    model = MTEBEncoder(recording, name="e5kit/tiny")
    # When mteb evaluates a retrieval and an STS task with it, unchanged
    results = mteb.evaluate(model, [MockRetrievalTask(), MockSTSTask()], cache=None, show_progress_bar=False)
    # Then both produce a score, queries/documents took query/passage roles and STS took query only
    scores = {r.task_name: r.get_score() for r in results.task_results}
    assert set(scores) == {"MockRetrievalTask", "MockSTSTask"} and all(np.isfinite(list(scores.values())))
    assert {"query", "passage"} <= set(recording.roles)
    assert recording.roles[-2:] == ["query", "query"]


def test_mteb_1_style_list_input_and_similarity(tiny_encoder):
    # Given mteb 1.x-style calls: a list of strings and a prompt type
    model = MTEBEncoder(tiny_encoder)
    queries = model.encode(["a cat sat"], task_name=None, prompt_type="query")
    documents = model.encode(["a cat sat"], prompt_type="document")
    # Then, with no task type to go by, E5's symmetric policy applies (query role on both sides),
    # and similarity is cosine
    np.testing.assert_allclose(queries, tiny_encoder.encode(["a cat sat"], role="query"), atol=1e-6)
    np.testing.assert_allclose(documents, tiny_encoder.encode(["a cat sat"], role="query"), atol=1e-6)
    assert float(model.similarity(queries, queries)[0, 0]) == pytest.approx(1.0, abs=1e-5)
    assert model.similarity_pairwise(queries, documents).shape == (1,)


def test_mteb_scores_a_local_beir_folder_as_e5kit_does_into_the_same_layout(tmp_path, beir_dir, tiny_bert_dir, tiny_encoder):
    from typer.testing import CliRunner

    from e5kit.cli import app
    from e5kit.evaluation.mteb_adapter import local_retrieval_task

    # Given mteb's SciFact task reading a local BEIR folder, and the model named as e5kit names it
    task = local_retrieval_task(beir_dir, "SciFact")
    model = MTEBEncoder(tiny_encoder, name=f"e5kit/{tiny_bert_dir.name}")
    # When mteb evaluates it into a result cache, and e5kit evaluates the same folder with --mteb-results
    mteb.evaluate(model, [task], cache=mteb.ResultCache(tmp_path / "by-mteb"), show_progress_bar=False)
    outcome = CliRunner().invoke(app, ["eval", "retrieval", "--model", str(tiny_bert_dir), "--data", str(beir_dir), "--no-cache",
                                       "--ignore-identical-ids", "never", "--results-dir", str(tmp_path / "r"),
                                       "--mteb-results", str(tmp_path / "by-e5kit"), "--mteb-task", "SciFact"])
    assert outcome.exit_code == 0, outcome.output
    # Then both wrote results/<model>/<revision>/SciFact.json, with the same nDCG@10 (mteb's main score)
    (by_mteb,) = (tmp_path / "by-mteb").glob("results/*/*/SciFact.json")
    (by_e5kit,) = (tmp_path / "by-e5kit").glob("results/*/*/SciFact.json")
    assert by_mteb.relative_to(tmp_path / "by-mteb") == by_e5kit.relative_to(tmp_path / "by-e5kit")
    scores = [mteb.TaskResult.from_disk(path).scores["test"][0] for path in (by_mteb, by_e5kit)]
    assert scores[0]["main_score"] == pytest.approx(scores[1]["main_score"], abs=1e-5)
    assert scores[0]["ndcg_at_10"] == pytest.approx(scores[1]["ndcg_at_10"], abs=1e-5)
    assert scores[0]["recall_at_100"] == pytest.approx(scores[1]["recall_at_100"], abs=1e-5)


def test_local_retrieval_task_refuses_a_task_of_another_type(beir_dir):
    from e5kit.evaluation.mteb_adapter import local_retrieval_task

    with pytest.raises(ValueError, match="STSBenchmark: an mteb STS task; local_retrieval_task takes a Retrieval task"):
        local_retrieval_task(beir_dir, "STSBenchmark")
