"""Resume: a run SIGKILLed after a checkpoint continues with exactly the loss sequence of an uninterrupted run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e5kit.training.metrics import read_metrics
from e5kit.training.trainer import pretrain

#: Runs ``e5kit pretrain`` and SIGKILLs itself right after logging step KILL_AT_STEP (past a checkpoint).
KILLING_RUNNER = """
import os, signal, sys
from e5kit.training import metrics
kill_at = int(os.environ["KILL_AT_STEP"])
log = metrics.MetricsLog.log
def log_then_die(self, record):
    log(self, record)
    if record["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
metrics.MetricsLog.log = log_then_die
from e5kit.cli import main
sys.argv = ["e5kit", "pretrain", *sys.argv[1:]]
main()
"""


def run_config(tiny_bert_dir: Path, data: Path, output_dir: Path) -> dict:
    return {
        "init_model": str(tiny_bert_dir),
        "data": {"paths": [str(data)]},
        "output_dir": str(output_dir),
        "max_steps": 8,
        "batch_size": 6,
        "chunk_size": 4,
        "lr": 1e-3,
        "warmup_steps": 2,
        "checkpoint_every": 3,
        "keep_checkpoints": 3,
        "symmetric": True,
        "seed": 5,
    }


def test_sigkilled_run_resumes_with_identical_losses(tmp_path, tiny_bert_dir, make_pairs, write_parquet, write_jsonl, caplog):
    # Given two sources small enough to wrap around, and a model with dropout (so the RNG state matters)
    data = tmp_path / "data"
    write_parquet(data / "a.parquet", make_pairs(11, source="alpha"), row_group_size=4)
    write_jsonl(data / "b.jsonl", make_pairs(7, seed=1))
    expected = [r["loss"] for r in read_metrics(pretrain(run_config(tiny_bert_dir, data, tmp_path / "full"), show_progress=False).parent / "metrics.jsonl")]

    # When a CLI run is SIGKILLed after logging step 5 (its last checkpoint is step 3)
    output_dir = tmp_path / "killed"
    config_path = tmp_path / "pretrain.json"
    config_path.write_text(json.dumps(run_config(tiny_bert_dir, data, output_dir)))  # JSON is YAML
    runner = tmp_path / "runner.py"
    runner.write_text(KILLING_RUNNER)
    env = {**os.environ, "KILL_AT_STEP": "5", "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, str(runner), "--config", str(config_path)], env=env, capture_output=True, text=True, timeout=240)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [r["step"] for r in read_metrics(output_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    # ... and a newer checkpoint is corrupt and a staging folder is left over from a killed write
    corrupt = output_dir / "checkpoints" / "step-00000005"
    corrupt.mkdir()
    (corrupt / "state.pt").write_bytes(b"garbage")
    (corrupt / "manifest.json").write_text(json.dumps({"step": 5, "files": {"state.pt": "0" * 64}}))
    (output_dir / "checkpoints" / ".step-00000006.tmp").mkdir()
    with caplog.at_level(logging.WARNING):
        final = pretrain(run_config(tiny_bert_dir, data, output_dir), resume=True, show_progress=False)

    # Then the corrupt checkpoint was reported, step 3 was used, and the loss sequence equals the uninterrupted run's
    assert "checksum mismatch" in caplog.text
    records = read_metrics(final.parent / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [r["loss"] for r in records] == expected


def test_resume_with_more_steps_follows_the_longer_schedule_at_once(tmp_path, tiny_bert_dir, make_pairs, write_jsonl):
    # Given a finished 6-step run (warmup 2, checkpoint at step 6, learning rate decayed to 0)
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", make_pairs(12))
    config = run_config(tiny_bert_dir, data, tmp_path / "run") | {"max_steps": 6}
    pretrain(config, show_progress=False)
    # When it is resumed with max_steps raised to 12
    final = pretrain(config | {"max_steps": 12}, resume=True, show_progress=False)
    # Then steps 7-12 run with the 12-step schedule from the first resumed step (not the saved 0 first)
    records = read_metrics(final.parent / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 13))
    expected = [1e-3 * (12 - (step - 1)) / (12 - 2) for step in range(7, 13)]
    assert [r["lr"] for r in records[6:]] == pytest.approx(expected)
