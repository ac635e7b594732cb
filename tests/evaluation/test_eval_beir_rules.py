"""BEIR/MTEB evaluation semantics (issue 12, item 5): self-matches, empty passages, queries without relevant documents.

The three cases are copies of shared/cases in tests/evaluation/fixtures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from e5kit.cli.app import app
from e5kit.evaluation.retrieval import build_run, drops_identical_id, queries_without_relevant, retrieval_metrics, run_beir
from e5kit.retrieval.bm25 import bm25_search

CASES = Path(__file__).resolve().parent / "fixtures"


def eval_cli(*args):
    return CliRunner().invoke(app, ["eval", "retrieval", *map(str, args)])


def copy_case(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(CASES / name, tmp_path / name))


# ---------------------------------------------------------------- a) identical ids
def test_beir_selfid_bm25_keeps_the_judged_self_match_and_scores_100(tmp_path):
    # Given beir_selfid: query "1" is judged relevant to document "1"; query "2" does not judge document "2"
    # When BM25 is evaluated from the command line with the default rule
    result = eval_cli("--model", "bm25", "--data", CASES / "beir_selfid", "--results-dir", tmp_path, "--no-cache")
    # Then nDCG@10 is 100.0 and the one unjudged self-match (query 2 -> document 2) is removed and reported
    assert result.exit_code == 0, result.output
    assert "ndcg_at_10 100.00" in result.output
    details = json.loads(next(tmp_path.glob("*.json")).read_text())["details"]
    assert details["identical_ids_removed"] == 1 and details["ignore_identical_ids"] == "unjudged"
    assert details["settings"]["ignore_identical_ids"] == "unjudged"
    assert "| bm25 | beir_selfid | 2 | 0 (averaged as 0) | 1 (unjudged) |" in result.output


@pytest.mark.parametrize(("rule", "ndcg", "removed"), [("unjudged", 1.0, 1), ("always", 0.5, 2), ("never", 1.0, 0)])
def test_identical_id_rule_is_a_per_dataset_setting(rule, ndcg, removed):
    # Given beir_selfid, When evaluated under each rule
    outcome = run_beir("bm25", CASES / "beir_selfid", ignore_identical_ids=rule)
    # Then "always" (BEIR) loses the judged hit, the others keep it, and each counts what it removed
    assert outcome.metrics["ndcg_at_10"] == pytest.approx(ndcg)
    assert outcome.details["identical_ids_removed"] == removed


def test_the_rule_reads_the_qrels_of_that_query_only():
    qrels = {"a": {"a": 1, "x": 0}, "b": {"b": 0}, "c": {"x": 1}}
    # A self-match judged relevant, or judged non-relevant (score 0), is kept; an unjudged one is removed
    assert not drops_identical_id("a", "a", qrels) and not drops_identical_id("b", "b", qrels)
    assert drops_identical_id("c", "c", qrels) and drops_identical_id("d", "d", None)
    # BEIR's "always" removes every self-match, "never" none; other documents are never touched
    assert drops_identical_id("a", "a", qrels, "always") and not drops_identical_id("c", "c", qrels, "never")
    assert not drops_identical_id("a", "x", qrels, "always")
    with pytest.raises(ValueError, match="ignore_identical_ids must be one of"):
        drops_identical_id("a", "a", qrels, "sometimes")


def test_build_run_keeps_a_judged_self_match_and_still_fills_top_k():
    # Given hits for queries "a" (judging itself) and "b" (not judging itself), one extra hit each
    indices, scores = np.array([[0, 1, 2], [1, 0, 2]]), np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]])
    # When built with top_k=2 against the qrels
    run, removed = build_run(["a", "b"], ["a", "b", "c"], indices, scores, top_k=2, qrels={"a": {"a": 1}, "b": {"c": 1}})
    # Then "a" keeps itself, "b" loses itself and keeps two others
    assert list(run["a"]) == ["a", "b"] and list(run["b"]) == ["a", "c"] and removed == 1


def test_invalid_rule_fails_before_any_work_naming_the_field(tmp_path):
    result = eval_cli("--model", "bm25", "--data", CASES / "beir_selfid", "--ignore-identical-ids", "sometimes", "--results-dir", tmp_path)
    assert result.exit_code == 2 and "ignore_identical_ids" in result.output and not list(tmp_path.glob("*.json"))


# ---------------------------------------------------------------- b) empty passages
def test_beir_empty_bm25_evaluation_keeps_and_counts_the_empty_document(tmp_path):
    # Given beir_empty: document 7915 has empty title and text
    # When BM25 is evaluated from the command line
    result = eval_cli("--model", "bm25", "--data", CASES / "beir_empty", "--results-dir", tmp_path, "--no-cache")
    # Then it succeeds, and the result says 1 of 4 documents was an empty passage
    assert result.exit_code == 0, result.output
    details = json.loads(next(tmp_path.glob("*.json")).read_text())["details"]
    assert details["documents"] == 4 and details["empty_documents"] == 1
    assert "1 of 4 (kept, score 0)" in result.output


def test_beir_empty_dense_evaluation_gives_the_empty_document_a_zero_score(tmp_path, tiny_encoder, tiny_bert_dir):
    # Given beir_empty and the tiny encoder (which refuses texts without visible text)
    # When it is evaluated densely with every document retrieved
    outcome = run_beir(tiny_encoder, CASES / "beir_empty", top_k=4)
    # Then it succeeds and counts the empty document
    assert outcome.details["empty_documents"] == 1 and outcome.details["documents"] == 4
    # And the metrics equal exact search where document 7915's embedding is the zero vector
    texts = ["Mitosis Mitosis is the process by which a cell divides into two identical daughter cells.",
             "Photosynthesis Plants convert light energy into chemical energy through photosynthesis.",
             "Volcanoes A volcano is a rupture in the crust of a planet that lets hot lava escape."]
    d = tiny_encoder.encode(texts, role="passage")
    d = np.vstack([d[:2], np.zeros((1, d.shape[1]), dtype=np.float32), d[2:]])
    q = tiny_encoder.encode(["how do cells divide", "how do plants make energy from light"], role="query")
    doc_ids = ["d1", "d2", "7915", "d3"]
    run = {qid: {doc_ids[j]: float(row[j]) for j in range(4)} for qid, row in zip(["q1", "q2"], q @ d.T)}
    assert run["q1"]["7915"] == 0.0
    assert outcome.metrics == pytest.approx(retrieval_metrics({"q1": {"d1": 1}, "q2": {"d2": 1}}, run), abs=1e-6)
    # And the command line succeeds too (it used to stop with exit 2)
    result = eval_cli("--model", tiny_bert_dir, "--data", CASES / "beir_empty", "--results-dir", tmp_path, "--no-cache")
    assert result.exit_code == 0, result.output
    assert json.loads(next(tmp_path.glob("*.json")).read_text())["details"]["empty_documents"] == 1


def test_bm25_leaves_empty_passages_out_of_the_index_and_scores_them_zero():
    # Given documents with empty passages among them
    documents = ["the moon and the sky", "", "cats sit on mats", "\u200b \u00a0", "a blue sky at night"]
    # When searched with k = every document
    indices, scores = bm25_search(documents, ["sky", "cats"], top_k=5)
    # Then the empty passages come last with score 0
    assert set(indices[:, 3:].ravel()) == {1, 3} and not scores[:, 3:].any()
    # And the other documents score exactly as in a corpus without the empty passages (Lucene's statistics)
    plain_indices, plain_scores = bm25_search([documents[i] for i in (0, 2, 4)], ["sky", "cats"], top_k=3)
    assert np.array_equal(np.array([0, 2, 4])[plain_indices], indices[:, :3])
    assert np.allclose(plain_scores, scores[:, :3])
    # And a corpus of empty passages only is searched without a crash
    assert bm25_search(["", " "], ["sky"], top_k=5)[1].tolist() == [[0.0, 0.0]]


# ---------------------------------------------------------------- c) queries judged only non-relevant
def judge_query_2_only_non_relevant(folder: Path) -> Path:
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t1\t1\n2\t3\t0\n2\t2\t-1\n")
    return folder


def test_queries_judged_only_non_relevant_are_averaged_as_zero_and_counted(tmp_path):
    # Given beir_selfid where query 2 judges documents only with scores <= 0
    folder = judge_query_2_only_non_relevant(copy_case("beir_selfid", tmp_path))
    # When evaluated with the default (BEIR's averaging: pytrec_eval returns the query with every measure 0)
    outcome = run_beir("bm25", folder)
    # Then query 2 counts as 0 in the mean and is reported
    assert outcome.metrics["ndcg_at_10"] == pytest.approx(0.5)
    assert outcome.details["queries_evaluated"] == 2 and outcome.details["queries_without_relevant"] == 1
    assert outcome.details["queries_without_relevant_rule"] == "averaged as 0"
    # And query 2's own (judged, score -1) document is kept: it is judged for that query
    assert outcome.details["identical_ids_removed"] == 0


def test_exclude_option_leaves_them_out_of_the_mean_and_the_table_says_so(tmp_path):
    # Given the same folder
    folder = judge_query_2_only_non_relevant(copy_case("beir_selfid", tmp_path))
    # When evaluated with the exclude option from the command line
    result = eval_cli("--model", "bm25", "--data", folder, "--exclude-queries-without-relevant", "--results-dir", tmp_path / "r", "--no-cache")
    # Then only query 1 is averaged, and the JSON and the printed table count the excluded query
    assert result.exit_code == 0, result.output
    saved = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    assert saved["metrics"]["ndcg_at_10"] == pytest.approx(1.0)
    assert saved["details"]["queries_evaluated"] == 1 and saved["details"]["queries_without_relevant"] == 1
    assert saved["details"]["skipped"]["queries judged only non-relevant (score <= 0)"] == 1
    assert "| bm25 | beir_selfid | 1 | 1 (excluded) |" in result.output


def test_excluding_every_query_is_a_clean_error(tmp_path):
    folder = copy_case("beir_selfid", tmp_path)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t1\t0\n")
    assert queries_without_relevant({"1": {"1": 0}, "2": {"3": 1}}) == ["1"]
    with pytest.raises(ValueError, match="only scores <= 0"):
        run_beir("bm25", folder, exclude_queries_without_relevant=True)


def test_the_mteb_adapter_embeds_the_corpus_side_by_the_same_rule(tiny_encoder):
    # Given the mteb adapter (mteb itself is not needed for its encode with a list of strings)
    from e5kit.evaluation.mteb_adapter import MTEBEncoder

    adapter = MTEBEncoder(tiny_encoder)
    # When mteb hands it a corpus batch with an empty document (as FiQA's), Then it gets a zero row
    embeddings = adapter.encode(["a cell divides", "", "the moon"], task_name=None, prompt_type="document")
    assert embeddings.shape[0] == 3 and not embeddings[1].any() and embeddings[0].any()
    # And the query side is unchanged
    assert np.allclose(adapter.encode(["a cell divides"], prompt_type="query"), tiny_encoder.encode(["a cell divides"], role="query"))
