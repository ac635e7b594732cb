"""``--report-to`` with a reporter e5kit does not have (Hugging Face Trainer's wandb, ...): one line, before any work."""

from __future__ import annotations

import sys
import types

import pytest
from typer.testing import CliRunner

from e5kit.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize("wandb", [None, types.ModuleType("wandb")], ids=["wandb-missing", "wandb-installed"])
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_report_to_wandb_is_a_one_line_error_that_says_what_to_use(stage, wandb, tmp_path, monkeypatch):
    # Given a machine with or without the wandb package (None in sys.modules makes its import fail)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    data = "data.paths=[x.parquet]" if stage == "pretrain" else "data.datasets=[{name: m, format: flag, path: x.jsonl}]"
    # When a run asks to report to wandb
    result = runner.invoke(app, [stage, "--set", "init_model=no-such-model", "--set", data, "--set", f"output_dir={tmp_path / 'run'}",
                                 "--set", "max_steps=1", "--report-to", "wandb"])
    # Then it exits 2 with one line naming the field, saying that no install or login adds the reporter and
    # what to use instead, before the model loads or the run folder is made
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert "report_to: " in result.output and "e5kit has no 'wandb' reporter" in result.output
    assert "installing or logging in to wandb will not add one" in result.output
    assert "--report-to tensorboard" in result.output and "metrics.jsonl" in result.output
    assert "no-such-model" not in result.output and not (tmp_path / "run").exists()
