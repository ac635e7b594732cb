"""``e5kit finetune``, ``mine-negatives`` and ``score-teacher`` as stages (``e5kit.stage``): a rerun with the
same settings and inputs is skipped, a changed setting or input, or --force, redoes it; a runtime-only
setting does not."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.stage import REPORT_FILE

runner = CliRunner()
SKIPPED = "done before, skipped"


def _invoke(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def _report(output: str) -> dict:
    """score-teacher's report from its summary line."""
    return json.loads(re.search(r"wrote \S+: (\{.*\})", output).group(1))


def _mine_args(beir_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["mine-negatives", "--queries", str(beir_dir / "queries.jsonl"), "--corpus", str(beir_dir / "corpus.jsonl"),
            "--positives", str(beir_dir / "qrels" / "train.tsv"), "--out", str(out), "--negatives", "3", *extra]


def test_finetune_is_skipped_when_done_and_redone_when_its_settings_or_data_change(beir_dir, tmp_path, tiny_bert_dir):
    # Given mined negatives and a finished fine-tuning run on them (a checkpoint every step)
    mined = tmp_path / "mined.jsonl"
    _invoke(_mine_args(beir_dir, mined))
    run = tmp_path / "run"
    args = ["finetune", "--set", f"init_model={tiny_bert_dir}", "--set", f"output_dir={run}", "--set",
            f"data.datasets=[{{name: tiny, format: flag, path: {mined}}}]", "--set", "max_steps=2", "--set", "batch_size=4",
            "--set", "hard_negatives=3", "--set", "query_max_length=32", "--set", "passage_max_length=32", "--set", "checkpoint_every=1"]
    _invoke(args)
    marker = json.loads((run / REPORT_FILE).read_text())
    assert marker["stage"] == "finetune" and marker["steps"] == 2 and marker["outputs"]["model"] == str(run / "final")
    written = (run / "final" / "README.md").stat().st_mtime_ns
    # When it runs again unchanged, or with only a runtime setting changed, Then nothing is trained
    assert SKIPPED in _invoke(args)
    assert SKIPPED in _invoke([*args, "--set", "keep_checkpoints=3"])
    assert (run / "final" / "README.md").stat().st_mtime_ns == written
    # When a setting that changes the model changes, Then the checkpoints of the finished run are not taken
    # over silently: the run refuses, naming --resume and --force
    changed = runner.invoke(app, [*args, "--set", "lr=1e-3"])
    assert changed.exit_code != 0 and "--force" in changed.output
    # And --force trains again from step 0
    assert SKIPPED not in _invoke([*args, "--set", "lr=1e-3", "--force"])
    assert json.loads((run / REPORT_FILE).read_text())["fingerprint"] != marker["fingerprint"]
    # When the data file is rewritten, Then the finished run is redone (here: continued with --resume)
    refit = json.loads((run / REPORT_FILE).read_text())["fingerprint"]
    os.utime(mined, ns=(1, 1))
    output = _invoke([*args, "--set", "lr=1e-3", "--resume"])
    assert "settings or inputs changed" in output and json.loads((run / REPORT_FILE).read_text())["fingerprint"] != refit


def test_mining_is_skipped_when_its_stats_say_done_and_redone_when_settings_or_inputs_change(beir_dir, tmp_path):
    # Given a finished mining run: its stats are the stage's marker
    out = tmp_path / "mined.jsonl"
    args = _mine_args(beir_dir, out)
    _invoke(args)
    stats = json.loads(Path(f"{out}.stats.json").read_text())
    assert stats["stage"] == "mine-negatives" and stats["queries"] == 12 and stats["outputs"] == {"negatives": str(out)}
    written = out.stat().st_mtime_ns
    # When it runs again unchanged, or with only a runtime setting changed, Then nothing is mined
    assert SKIPPED in _invoke(args) and SKIPPED in _invoke([*args, "--batch-size", "7"])
    assert out.stat().st_mtime_ns == written
    # When a setting changes, Then it is mined again
    assert SKIPPED not in _invoke([*args, "--skip-top", "1"])
    assert json.loads(Path(f"{out}.stats.json").read_text())["config"]["skip_top"] == 1
    # When an input file is rewritten, Then it is mined again; --force mines again regardless
    os.utime(beir_dir / "corpus.jsonl", ns=(1, 1))
    assert "settings or inputs changed" in _invoke([*args, "--skip-top", "1"])
    again = out.stat().st_mtime_ns
    assert SKIPPED not in _invoke([*args, "--skip-top", "1", "--force"]) and out.stat().st_mtime_ns != again


def test_teacher_scoring_is_skipped_when_done_and_redone_when_settings_or_inputs_change(beir_dir, tmp_path, tiny_cross_encoder_dir):
    # Given mined negatives and a finished scoring run
    mined, scored = tmp_path / "mined.jsonl", tmp_path / "scored.jsonl"
    _invoke(_mine_args(beir_dir, mined))
    args = ["score-teacher", "--teacher", str(tiny_cross_encoder_dir), "--in", str(mined), "--out", str(scored)]
    _invoke(args)
    stats = json.loads(Path(f"{scored}.stats.json").read_text())
    assert stats["stage"] == "score-teacher" and stats["scored"] == 12 and stats["outputs"] == {"scores": str(scored)}
    written = scored.stat().st_mtime_ns
    # When it runs again unchanged, or on another device (a runtime setting), Then nothing is scored
    assert SKIPPED in _invoke(args) and SKIPPED in _invoke([*args, "--device", "cpu"])
    assert scored.stat().st_mtime_ns == written
    # When a setting changes, Then every record is scored again (the finished output is not resumed from)
    report = _report(_invoke([*args, "--batch-size", "5"]))
    assert report["scored"] == 12 and report["already_done"] == 0
    # When the input is rewritten, or with --force, Then it is scored again
    os.utime(mined, ns=(1, 1))
    assert "settings or inputs changed" in _invoke([*args, "--batch-size", "5"])
    assert SKIPPED not in _invoke([*args, "--batch-size", "5", "--force"])


def test_a_partial_teacher_file_of_other_settings_is_not_resumed(beir_dir, tmp_path, tiny_cross_encoder_dir):
    # Given a partial file a killed run left under other settings (its started-with fingerprint differs)
    from e5kit.data.teacher import partial_path

    mined, scored = tmp_path / "mined.jsonl", tmp_path / "scored.jsonl"
    _invoke(_mine_args(beir_dir, mined))
    partial_path(scored).write_text('{"query": "from another run"}\n')
    Path(f"{scored}.stats.json.started").write_text("another-fingerprint")
    # When scoring, Then the partial file is removed and every record scored
    output = _invoke(["score-teacher", "--teacher", str(tiny_cross_encoder_dir), "--in", str(mined), "--out", str(scored)])
    assert _report(output)["already_done"] == 0 and len(scored.read_text().splitlines()) == 12
