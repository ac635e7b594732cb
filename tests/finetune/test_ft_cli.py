"""``e5kit mine-negatives``, ``score-teacher`` and ``finetune`` from the command line, file to file."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from e5kit.cli import app

runner = CliRunner()


def test_mine_score_finetune_chain(beir_dir, tmp_path, tiny_cross_encoder_dir, tiny_bert_dir):
    # Given a BEIR folder: mine BM25 negatives
    mined, scored = tmp_path / "mined.jsonl", tmp_path / "scored.jsonl"
    result = runner.invoke(
        app,
        ["mine-negatives", "--queries", str(beir_dir / "queries.jsonl"), "--corpus", str(beir_dir / "corpus.jsonl"),
         "--positives", str(beir_dir / "qrels" / "train.tsv"), "--out", str(mined), "--negatives", "3", "--skip-top", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "12 queries" in result.output and len(mined.read_text().splitlines()) == 12
    # When scoring them with the tiny cross-encoder and fine-tuning on the scored file
    result = runner.invoke(app, ["score-teacher", "--teacher", str(tiny_cross_encoder_dir), "--in", str(mined), "--out", str(scored), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in scored.read_text().splitlines()]
    assert all(len(r["neg_scores"]) == 3 and len(r["pos_scores"]) == 2 for r in records)
    result = runner.invoke(
        app,
        ["finetune", "--set", f"init_model={tiny_bert_dir}", "--set", f"output_dir={tmp_path / 'run'}",
         "--set", f"data.datasets=[{{name: tiny, format: flag, path: {scored}}}]", "--set", "max_steps=2",
         "--set", "batch_size=4", "--set", "hard_negatives=3", "--set", "query_max_length=32", "--set", "passage_max_length=32"],
    )
    # Then the model is written
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "final" / "README.md").is_file()


def test_bad_input_fails_cleanly_naming_the_problem(beir_dir, tmp_path):
    common = ["--queries", str(beir_dir / "queries.jsonl"), "--corpus", str(beir_dir / "corpus.jsonl"), "--out", str(tmp_path / "m.jsonl")]
    result = runner.invoke(app, ["mine-negatives", *common, "--positives", str(beir_dir / "qrels" / "train.tsv"), "--engine", "ray"])
    assert result.exit_code == 2 and "engine: BM25" in result.output
    result = runner.invoke(app, ["mine-negatives", *common, "--positives", str(tmp_path / "nope.tsv")])
    assert result.exit_code == 2 and "nope.tsv" in result.output
    result = runner.invoke(app, ["finetune", "--set", "init_model=m", "--set", f"output_dir={tmp_path}", "--set", "alpha=-1", "--set", "data.datasets=[{name: a, format: nli, path: x}]"])
    assert result.exit_code == 2 and "alpha" in result.output
    result = runner.invoke(app, ["finetune", "--set", "init_model=m", "--set", f"output_dir={tmp_path}", "--set", "data.datasets=[{name: a, format: nli, path: /nope.tsv}]"])
    assert result.exit_code == 2 and "data.datasets[a].path" in result.output
