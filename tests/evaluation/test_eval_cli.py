"""``e5kit eval``: BM25 and a dense model in one command, result files, report, config errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from e5kit.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["eval", *map(str, args)])


def test_retrieval_runs_bm25_and_a_dense_model_into_one_table(tmp_path, beir_dir, tiny_bert_dir):
    # Given a BEIR folder, BM25 and the tiny model
    results = tmp_path / "results"
    # When both are evaluated in one command
    outcome = invoke("retrieval", "--model", "bm25", "--model", tiny_bert_dir, "--data", beir_dir,
                     "--results-dir", results, "--cache-dir", tmp_path / "cache")
    # Then it succeeds, prints both, and writes one result file each with the metadata
    assert outcome.exit_code == 0, outcome.output
    assert "| bm25 |" in outcome.output and f"| {tiny_bert_dir.name} |" in outcome.output
    files = sorted(results.glob("*.json"))
    assert len(files) == 2
    dense = json.loads(next(f for f in files if not f.name.startswith("bm25")).read_text())
    assert dense["prefix_policy"] == {"query_role": "query", "passage_role": "passage", "query_prefix": "query: ", "passage_prefix": "passage: "}
    assert dense["max_length"] == 64 and dense["dtype"] == "float32" and len(dense["weights_hash"]) == 64
    assert dense["split"] == "test" and dense["dataset"] == "beir" and dense["wall_time_s"] > 0
    assert dense["details"]["skipped"] == {"queries without qrels": 1}
    assert set(dense["metrics"]) == {"ndcg_at_10", "map_at_100", "mrr_at_10", "recall_at_100"}
    bm25 = json.loads(next(f for f in files if f.name.startswith("bm25")).read_text())
    assert bm25["weights_hash"] is None and bm25["details"]["bm25"]["k1"] == 1.5

    # When the report is rendered
    report = invoke("report", results)
    # Then a markdown table with both models and a PNG exist
    assert report.exit_code == 0, report.output
    assert (results / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (results / "report.md").read_text()
    assert "beir (retrieval, ndcg_at_10)" in table and "| bm25 |" in table


def test_config_file_and_set_overrides(tmp_path, beir_dir):
    # Given a YAML config and a --set override
    config = tmp_path / "eval.yaml"
    config.write_text(f"models: [bm25]\ndata: {beir_dir}\ntop_k: 5\nignore_identical_ids: always\nresults_dir: {tmp_path / 'r'}\n")
    outcome = invoke("retrieval", "--config", config, "--set", "top_k=3")
    # Then the run used the override and the file's per-dataset rules
    assert outcome.exit_code == 0, outcome.output
    result = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    assert result["details"]["settings"] == {"top_k": 3, "ignore_identical_ids": "always", "exclude_queries_without_relevant": False}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "batch_size=0"], "batch_size: Input should be greater than or equal to 1"),
        (["--set", "colour=blue"], "colour: Extra inputs are not permitted"),
        (["--set", "oops"], "expected key=value"),
    ],
)
def test_invalid_config_fails_before_work_naming_the_field(beir_dir, args, message):
    outcome = invoke("retrieval", "--model", "bm25", "--data", beir_dir, *args)
    assert outcome.exit_code == 2 and message in outcome.output


def test_bm25_is_refused_for_embedding_tasks(tmp_path):
    outcome = invoke("sts", "--model", "bm25", "--data", tmp_path)
    assert outcome.exit_code == 2 and "'bm25' is a retrieval baseline" in outcome.output


def test_malformed_data_is_a_clean_error_naming_file_and_line(tmp_path, beir_dir):
    (beir_dir / "corpus.jsonl").write_text('{"_id": "a", "text": "ok"}\nnot json\n')
    outcome = invoke("retrieval", "--model", "bm25", "--data", beir_dir, "--results-dir", tmp_path / "r")
    assert outcome.exit_code == 2 and "corpus.jsonl:2: invalid JSON" in outcome.output


def test_report_on_an_empty_folder_is_a_clean_error(tmp_path):
    outcome = invoke("report", tmp_path)
    assert outcome.exit_code == 2 and "no result files" in outcome.output


def test_every_eval_command_has_help():
    for command in ("retrieval", "sts", "classification", "clustering", "pair-classification", "reranking", "report"):
        outcome = invoke(command, "--help")
        assert outcome.exit_code == 0 and "Usage" in outcome.output


@pytest.mark.parametrize("name", ["retrieval", "sts", "classification", "clustering", "pair_classification"])
def test_example_configs_validate(name):
    from pathlib import Path

    from e5kit.config import load_config
    from e5kit.evaluation.runner import task_spec

    # Given the example config of each task, Then it validates against that task's config class
    path = Path(__file__).resolve().parents[2] / "configs" / f"eval_{name}.yaml"
    config = load_config(task_spec(name).config_class, path)
    assert config.models and config.data.name


def test_task_options_reach_the_task(tmp_path, tiny_bert_dir):
    # Given a JSONL clustering file whose text is in "subject"
    records = [{"subject": f"{word} {i}", "label": word} for word in ("cat", "sun", "gene") for i in range(4)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    # When clustered from the CLI with --columns and --seeds
    outcome = invoke("clustering", "-m", tiny_bert_dir, "-d", tmp_path, "--columns", "text=subject", "--seeds", "2",
                     "--results-dir", tmp_path / "r", "--no-cache")
    # Then the options were used and recorded, and no cache was written
    assert outcome.exit_code == 0, outcome.output
    result = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    assert result["details"]["settings"]["columns"] == {"text": "subject"} and result["details"]["seeds"] == 2
    assert "cache" not in result["details"] and result["prefix_policy"]["query_prefix"] == "query: "
