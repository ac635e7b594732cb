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
