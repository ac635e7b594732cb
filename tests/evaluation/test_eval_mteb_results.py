"""mteb-format results: ``e5kit eval ... --mteb-results DIR`` writes mteb's TaskResult files and model_meta.json
in mteb's ResultCache layout; the schema is checked here without mteb, and by mteb itself where installed."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.evaluation.mteb_results import (
    MTEB_TASK_NAMES,
    mteb_scores,
    mteb_task_result,
)
from e5kit.evaluation.results import MAIN_METRIC, EvalResult

runner = CliRunner()
needs_mteb = pytest.mark.skipif(importlib.util.find_spec("mteb") is None, reason="mteb is not installed (pip install e5kit[mteb])")
TOP_LEVEL = {"dataset_revision", "task_name", "mteb_version", "scores", "evaluation_time", "kg_co2_emissions"}


def result(task="retrieval", dataset="beir", metrics=None, weights_hash="ab" * 32) -> EvalResult:
    metrics = metrics or {"ndcg_at_10": 0.5, "map_at_100": 0.4, "mrr_at_10": 0.6, "recall_at_100": 0.9}
    return EvalResult(
        model="tiny", model_path="../tiny", weights_hash=weights_hash, task=task, dataset=dataset, data_path="../data",
        split="test", metrics=metrics, main_metric=MAIN_METRIC[task], prefix_policy={}, max_length=64, dtype="float32",
        e5kit_version="0.1.0", wall_time_s=1.5, created_at="2025-01-02T03:04:05+00:00",
    )


@pytest.fixture
def mteb_run(tmp_path, beir_dir, tiny_bert_dir):
    """``e5kit eval retrieval`` of BM25 and the tiny model with --mteb-results: (outcome, mteb folder, e5kit folder)."""
    folder, results = tmp_path / "mteb", tmp_path / "results"
    outcome = runner.invoke(app, ["eval", "retrieval", "--model", "bm25", "--model", str(tiny_bert_dir), "--data", str(beir_dir),
                                  "--results-dir", str(results), "--cache-dir", str(tmp_path / "cache"), "--mteb-results", str(folder)])
    return outcome, folder, results


def test_eval_writes_mteb_layout_with_mteb_names_and_scale(mteb_run, tiny_bert_dir, beir_dir):
    # Given an eval run of BM25 and a dense model with --mteb-results
    outcome, folder, results = mteb_run
    assert outcome.exit_code == 0, outcome.output
    # Then each model has <folder>/results/e5kit__<model>/<revision>/<Task>.json and a model_meta.json
    files = sorted((folder / "results").glob("*/*/*.json"))
    tasks = [f for f in files if f.name != "model_meta.json"]
    assert {f.relative_to(folder).parts[1:3] for f in tasks} == {
        ("e5kit__bm25", "no_revision_available"), (f"e5kit__{tiny_bert_dir.name}", tasks[-1].parent.name)}
    for task_file in tasks:
        written = json.loads(task_file.read_text())
        meta = json.loads((task_file.parent / "model_meta.json").read_text())
        own = json.loads(next(results.glob(f"{meta['name'].split('/')[1]}*.json")).read_text())
        # with mteb's top-level keys, one "default" subset per split and the metric names and 0-1 scale of mteb
        assert TOP_LEVEL <= set(written) and written["task_name"] == "beir" == task_file.stem
        assert written["dataset_revision"].startswith("local-") and written["evaluation_time"] == own["wall_time_s"]
        (scores,) = written["scores"]["test"]
        assert scores["hf_subset"] == "default" and scores["languages"] == ["und-Zzzz"]
        assert scores["main_score"] == scores["ndcg_at_10"] == pytest.approx(own["metrics"]["ndcg_at_10"], abs=1e-6)
        assert all(0 <= scores[name] <= 1 for name in own["metrics"])
        assert meta["revision"] == task_file.parent.name == ((own["weights_hash"] or "")[:12] or "no_revision_available")
    # and the same data gives the same dataset revision for both models
    assert len({json.loads(f.read_text())["dataset_revision"] for f in tasks}) == 1
    # and the local paths it names lead, from the mteb file's own folder, to the model and the data evaluated
    dense = next(f for f in tasks if f.parent.parent.name != "e5kit__bm25")
    provenance = json.loads(dense.read_text())["e5kit"]
    assert (dense.parent / provenance["model_path"]).resolve() == tiny_bert_dir.resolve()
    assert (dense.parent / provenance["data_path"]).resolve() == beir_dir.resolve()


def test_metric_names_follow_mteb_per_task_and_spreads_are_dropped():
    # Given e5kit results of pair classification, reranking, classification and STS
    pairs = result("pair_classification", metrics={"ap": 0.8, "accuracy": 0.7, "f1": 0.75})
    rerank = result("reranking", metrics={"map": 0.55, "mrr_at_10": 0.6})
    classify = result("classification", metrics={"accuracy": 0.9, "f1": 0.85, "accuracy_std": 0.01})
    sts = result("sts", metrics={"cosine_spearman": -0.2, "cosine_pearson": 0.1})
    # Then they carry mteb's names, main_score is the headline metric, and negative correlations are kept
    assert mteb_scores(pairs) == {"cosine_ap": 0.8, "cosine_accuracy": 0.7, "cosine_f1": 0.75, "main_score": 0.8}
    assert mteb_scores(rerank) == {"map_at_1000": 0.55, "mrr_at_10": 0.6, "main_score": 0.55}
    assert mteb_scores(classify) == {"accuracy": 0.9, "f1": 0.85, "main_score": 0.9}
    assert mteb_scores(sts)["main_score"] == -0.2


@pytest.mark.parametrize("value", [42.0, float("nan"), -0.1])
def test_a_score_outside_mteb_scale_is_refused_naming_it(value):
    with pytest.raises(ValueError, match=r"metric ndcg_at_10 = .* outside mteb's \[0, 1\] scale"):
        mteb_scores(result(metrics={"ndcg_at_10": value}))


def test_known_data_sets_take_their_mteb_task_name_and_language():
    # Given a result on BEIR's scifact folder
    written = mteb_task_result(result(dataset="scifact"))
    # Then it is filed as mteb's SciFact, in English, with the e5kit provenance block
    assert written["task_name"] == "SciFact" and written["scores"]["test"][0]["languages"] == ["eng-Latn"]
    assert written["e5kit"]["version"] == "0.1.0" and written["e5kit"]["task"] == "retrieval"
    # and --mteb-task overrides the name
    assert mteb_task_result(result(dataset="scifact"), task_name="MyTask")["task_name"] == "MyTask"


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--mteb-task", "a/b"], "mteb_task: Value error, 'a/b': expected a plain name"),
     (["--set", "mteb_languages=[english]"], "mteb_languages.0: String should match pattern")],
)
def test_bad_mteb_settings_fail_before_any_work(beir_dir, tmp_path, args, message):
    outcome = runner.invoke(app, ["eval", "retrieval", "--model", "bm25", "--data", str(beir_dir),
                                  "--mteb-results", str(tmp_path / "m"), *args])
    assert outcome.exit_code == 2 and message in outcome.output, outcome.output
    assert not (tmp_path / "m" / "results").exists()


def test_languages_given_in_the_config_are_written(beir_dir, tmp_path):
    outcome = runner.invoke(app, ["eval", "retrieval", "--model", "bm25", "--data", str(beir_dir), "--results-dir", str(tmp_path / "r"),
                                  "--mteb-results", str(tmp_path / "m"), "--mteb-task", "MyDocs", "--set", "mteb_languages=[deu-Latn]"])
    assert outcome.exit_code == 0, outcome.output
    written = json.loads((tmp_path / "m/results/e5kit__bm25/no_revision_available/MyDocs.json").read_text())
    assert written["task_name"] == "MyDocs" and written["scores"]["test"][0]["languages"] == ["deu-Latn"]


@needs_mteb
def test_mteb_loads_the_files_with_its_own_result_tools(mteb_run, tiny_bert_dir):
    import mteb
    from mteb.models.model_meta import ModelMeta

    # Given the mteb folder of an eval run
    outcome, folder, _ = mteb_run
    assert outcome.exit_code == 0, outcome.output
    # When mteb's TaskResult reads each file and its ResultCache loads the folder
    for task_file in (folder / "results").glob("*/*/beir.json"):
        loaded = mteb.TaskResult.from_disk(task_file)
        written = json.loads(task_file.read_text())
        # Then the scores round-trip and model_meta.json is a valid ModelMeta
        assert loaded.get_score() == pytest.approx(written["scores"]["test"][0]["main_score"])
        assert loaded.task_name == "beir" and loaded.eval_splits == ["test"]
        meta = ModelMeta.model_validate(json.loads((task_file.parent / "model_meta.json").read_text()))
        assert meta.model_name_as_path() == task_file.parent.parent.name
    cached = mteb.ResultCache(folder).load_results(include_remote=False)
    assert {model.model_name for model in cached.model_results} == {"e5kit/bm25", f"e5kit/{tiny_bert_dir.name}"}
    assert all(model.task_results[0].task_name == "beir" for model in cached.model_results)


@needs_mteb
def test_known_data_sets_map_to_real_mteb_tasks_with_the_same_main_score():
    import mteb

    for (task, _), name in MTEB_TASK_NAMES.items():
        metadata = mteb.get_task(name).metadata
        written = mteb_task_result(result(task, metrics={MAIN_METRIC[task]: 0.5}), task_name=name)
        assert metadata.main_score in written["scores"]["test"][0], name
        assert mteb.TaskResult.model_validate(written).get_score() == 0.5
