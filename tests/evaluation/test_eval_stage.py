"""``e5kit eval <task>`` as a stage (``e5kit.stage``): RESULTS_DIR/stages/<task>__<dataset>__<split>.json marks a
finished run; a rerun with the same models, data and settings is skipped (its scores printed from the result
files), a changed setting, data file or model, or --force evaluates again, a runtime-only setting does not."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from e5kit.cli import app

SKIPPED = "done before, skipped"


def _eval(*args) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["eval", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def test_eval_is_skipped_when_done_and_run_again_when_its_settings_or_data_change(tmp_path, beir_dir, tiny_bert_dir):
    # Given a finished retrieval evaluation of BM25 and the tiny model
    results = tmp_path / "results"
    argv = ["retrieval", "--model", "bm25", "--model", tiny_bert_dir, "--data", beir_dir, "--results-dir", results, "--cache-dir", tmp_path / "cache"]
    scores, _ = _eval(*argv)
    marker = json.loads((results / "stages" / "retrieval__beir__test.json").read_text())
    assert marker["stage"] == "eval retrieval" and len(marker["results"]) == 2 and marker["outputs"] == {"results": str(results)}
    written = {path: os.stat(path).st_mtime_ns for path in marker["results"]}
    # When it runs again unchanged, or without the cache (a runtime-only setting), Then nothing is evaluated,
    # and the same scores are printed from the result files
    again, progress = _eval(*argv)
    assert SKIPPED in progress and again == scores
    assert SKIPPED in _eval(*argv, "--no-cache")[1]
    assert {path: os.stat(path).st_mtime_ns for path in marker["results"]} == written
    # When a setting that changes the scores changes, Then it is evaluated again
    assert SKIPPED not in _eval(*argv, "--top-k", "5")[1]
    assert json.loads((results / "stages" / "retrieval__beir__test.json").read_text())["fingerprint"] != marker["fingerprint"]
    # When the data changes, or with --force, Then it is evaluated again
    os.utime(beir_dir / "qrels" / "test.tsv", ns=(1, 1))
    assert "settings or inputs changed" in _eval(*argv, "--top-k", "5")[1]
    assert SKIPPED not in _eval(*argv, "--top-k", "5", "--force")[1]
    # And the markers are not taken for results by the report
    assert CliRunner().invoke(app, ["eval", "report", str(results)]).exit_code == 0
